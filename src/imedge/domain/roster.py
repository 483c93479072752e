"""Roster items and the presence-subscription state machine (RFC 6121 §3 and Appendix A)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from imedge.domain.jid import Jid


class Subscription(StrEnum):
    """The `subscription` attribute of a roster item (RFC 6121 §2.1.2.5)."""

    NONE = "none"
    TO = "to"
    FROM = "from"
    BOTH = "both"


@dataclass(frozen=True, slots=True)
class RosterItem:
    """One contact of a user, with the full subscription state of RFC 6121 Appendix A.

    `pending_out`: the user asked to subscribe to the contact (shown as `ask='subscribe'`).
    `pending_in`: the contact asked to subscribe to the user and the user has not answered.
    `approved`: the user pre-approved the contact's future request (RFC 6121 §3.4).
    `listed`: the item belongs in the roster the user sees; an item that only carries a
    pending inbound request is kept but not listed (RFC 6121 §3.1.3: no roster item is
    created for an inbound request).
    """

    jid: Jid
    name: str | None = None
    groups: tuple[str, ...] = field(default=())
    subscription: Subscription = Subscription.NONE
    pending_out: bool = False
    pending_in: bool = False
    approved: bool = False
    listed: bool = True


class SubscriptionKind(StrEnum):
    """The four presence types that manage subscriptions (RFC 6121 §3)."""

    SUBSCRIBE = "subscribe"
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBE = "unsubscribe"
    UNSUBSCRIBED = "unsubscribed"


class SubscriptionState(StrEnum):
    """The nine states of RFC 6121 Appendix A.1, named as the RFC names them."""

    NONE = "None"
    NONE_PENDING_OUT = "None + Pending Out"
    NONE_PENDING_IN = "None + Pending In"
    NONE_PENDING_OUT_IN = "None + Pending Out/In"
    TO = "To"
    TO_PENDING_IN = "To + Pending In"
    FROM = "From"
    FROM_PENDING_OUT = "From + Pending Out"
    BOTH = "Both"


_S = SubscriptionState
_K = SubscriptionKind

# (subscription, pending_out, pending_in) for each state of Appendix A.1.
_PARTS: dict[SubscriptionState, tuple[Subscription, bool, bool]] = {
    _S.NONE: (Subscription.NONE, False, False),
    _S.NONE_PENDING_OUT: (Subscription.NONE, True, False),
    _S.NONE_PENDING_IN: (Subscription.NONE, False, True),
    _S.NONE_PENDING_OUT_IN: (Subscription.NONE, True, True),
    _S.TO: (Subscription.TO, False, False),
    _S.TO_PENDING_IN: (Subscription.TO, False, True),
    _S.FROM: (Subscription.FROM, False, False),
    _S.FROM_PENDING_OUT: (Subscription.FROM, True, False),
    _S.BOTH: (Subscription.BOTH, False, False),
}
_STATE_OF_PARTS = {parts: state for state, parts in _PARTS.items()}

# One row per existing state: (route or deliver?, new state or None for "no state change").
_Table = dict[SubscriptionState, tuple[bool, SubscriptionState | None]]

# RFC 6121 Appendix A.2: the user's server handles an outbound subscription stanza.
_OUTBOUND: dict[SubscriptionKind, _Table] = {
    # A.2.1: a subscribe is always routed, so that a contact server which lost state can
    # answer again (RFC 6121 §3.1.2).
    _K.SUBSCRIBE: {
        _S.NONE: (True, _S.NONE_PENDING_OUT),
        _S.NONE_PENDING_OUT: (True, None),
        _S.NONE_PENDING_IN: (True, _S.NONE_PENDING_OUT_IN),
        _S.NONE_PENDING_OUT_IN: (True, None),
        _S.TO: (True, None),
        _S.TO_PENDING_IN: (True, None),
        _S.FROM: (True, _S.FROM_PENDING_OUT),
        _S.FROM_PENDING_OUT: (True, None),
        _S.BOTH: (True, None),
    },
    # A.2.2
    _K.UNSUBSCRIBE: {
        _S.NONE: (True, None),
        _S.NONE_PENDING_OUT: (True, _S.NONE),
        _S.NONE_PENDING_IN: (True, None),
        _S.NONE_PENDING_OUT_IN: (True, _S.NONE_PENDING_IN),
        _S.TO: (True, _S.NONE),
        _S.TO_PENDING_IN: (True, _S.NONE_PENDING_IN),
        _S.FROM: (True, None),
        _S.FROM_PENDING_OUT: (True, _S.FROM),
        _S.BOTH: (True, _S.FROM),
    },
    # A.2.3: only an answer to a pending request is routed; otherwise it is a
    # pre-approval (RFC 6121 §3.4), handled in apply_outbound.
    _K.SUBSCRIBED: {
        _S.NONE: (False, None),
        _S.NONE_PENDING_OUT: (False, None),
        _S.NONE_PENDING_IN: (True, _S.FROM),
        _S.NONE_PENDING_OUT_IN: (True, _S.FROM_PENDING_OUT),
        _S.TO: (False, None),
        _S.TO_PENDING_IN: (True, _S.BOTH),
        _S.FROM: (False, None),
        _S.FROM_PENDING_OUT: (False, None),
        _S.BOTH: (False, None),
    },
    # A.2.4
    _K.UNSUBSCRIBED: {
        _S.NONE: (False, None),
        _S.NONE_PENDING_OUT: (False, None),
        _S.NONE_PENDING_IN: (True, _S.NONE),
        _S.NONE_PENDING_OUT_IN: (True, _S.NONE_PENDING_OUT),
        _S.TO: (False, None),
        _S.TO_PENDING_IN: (True, _S.TO),
        _S.FROM: (True, _S.NONE),
        _S.FROM_PENDING_OUT: (True, _S.NONE_PENDING_OUT),
        _S.BOTH: (True, _S.TO),
    },
}

# RFC 6121 Appendix A.3: the user's server handles an inbound subscription stanza.
_INBOUND: dict[SubscriptionKind, _Table] = {
    # A.3.1: when the contact is already subscribed the server answers on the user's
    # behalf instead of delivering (RFC 6121 §3.1.3), handled in apply_inbound.
    _K.SUBSCRIBE: {
        _S.NONE: (True, _S.NONE_PENDING_IN),
        _S.NONE_PENDING_OUT: (True, _S.NONE_PENDING_OUT_IN),
        _S.NONE_PENDING_IN: (False, None),
        _S.NONE_PENDING_OUT_IN: (False, None),
        _S.TO: (True, _S.TO_PENDING_IN),
        _S.TO_PENDING_IN: (False, None),
        _S.FROM: (False, None),
        _S.FROM_PENDING_OUT: (False, None),
        _S.BOTH: (False, None),
    },
    # A.3.2
    _K.UNSUBSCRIBE: {
        _S.NONE: (False, None),
        _S.NONE_PENDING_OUT: (False, None),
        _S.NONE_PENDING_IN: (True, _S.NONE),
        _S.NONE_PENDING_OUT_IN: (True, _S.NONE_PENDING_OUT),
        _S.TO: (False, None),
        _S.TO_PENDING_IN: (True, _S.TO),
        _S.FROM: (True, _S.NONE),
        _S.FROM_PENDING_OUT: (True, _S.NONE_PENDING_OUT),
        _S.BOTH: (True, _S.TO),
    },
    # A.3.3: a subscribed the user never asked for is dropped (RFC 6121 §3.1.6).
    _K.SUBSCRIBED: {
        _S.NONE: (False, None),
        _S.NONE_PENDING_OUT: (True, _S.TO),
        _S.NONE_PENDING_IN: (False, None),
        _S.NONE_PENDING_OUT_IN: (True, _S.TO_PENDING_IN),
        _S.TO: (False, None),
        _S.TO_PENDING_IN: (False, None),
        _S.FROM: (False, None),
        _S.FROM_PENDING_OUT: (True, _S.BOTH),
        _S.BOTH: (False, None),
    },
    # A.3.4
    _K.UNSUBSCRIBED: {
        _S.NONE: (False, None),
        _S.NONE_PENDING_OUT: (True, _S.NONE),
        _S.NONE_PENDING_IN: (False, None),
        _S.NONE_PENDING_OUT_IN: (True, _S.NONE_PENDING_IN),
        _S.TO: (True, _S.NONE),
        _S.TO_PENDING_IN: (True, _S.NONE_PENDING_IN),
        _S.FROM: (False, None),
        _S.FROM_PENDING_OUT: (True, _S.FROM),
        _S.BOTH: (True, _S.FROM),
    },
}


def is_subscribed_to(item: RosterItem | None) -> bool:
    """The user receives the contact's presence (RFC 6121 §2.1.2.5: `to` or `both`)."""
    return item is not None and item.subscription in (Subscription.TO, Subscription.BOTH)


def is_subscribed_from(item: RosterItem | None) -> bool:
    """The contact receives the user's presence (RFC 6121 §2.1.2.5: `from` or `both`)."""
    return item is not None and item.subscription in (Subscription.FROM, Subscription.BOTH)


def roster_visible(item: RosterItem | None) -> bool:
    """The item is part of the roster the user gets and is pushed (RFC 6121 §2.1.6)."""
    return item is not None and item.listed


def state_of(item: RosterItem | None) -> SubscriptionState:
    """The Appendix A.1 state of an item; a pending flag that cannot coexist with the
    subscription (a pending request for a subscription that already exists) is ignored."""
    if item is None:
        return SubscriptionState.NONE
    pending_out = item.pending_out and not is_subscribed_to(item)
    pending_in = item.pending_in and not is_subscribed_from(item)
    return _STATE_OF_PARTS[(item.subscription, pending_out, pending_in)]


def _with_state(item: RosterItem, state: SubscriptionState) -> RosterItem:
    subscription, pending_out, pending_in = _PARTS[state]
    return replace(item, subscription=subscription, pending_out=pending_out, pending_in=pending_in)


def _has_pending_in(item: RosterItem) -> bool:
    return _PARTS[state_of(item)][2]


def _keep(item: RosterItem) -> RosterItem | None:
    """An unlisted item exists only to carry state; once it carries none, it goes."""
    if item.listed or state_of(item) is not SubscriptionState.NONE or item.approved:
        return item
    return None


def _view(item: RosterItem | None) -> tuple[object, ...] | None:
    """What a roster push shows (RFC 6121 §2.1.2): pending-in is not part of it."""
    if item is None or not item.listed:
        return None
    pending_out = item.pending_out and not is_subscribed_to(item)
    return (item.jid, item.name, item.groups, item.subscription, pending_out, item.approved)


def _start(item: RosterItem | None, contact: Jid) -> RosterItem:
    bare = contact.bare
    if item is None:
        return RosterItem(jid=bare, listed=False)
    if item.jid != bare:
        raise ValueError(f"roster item {item.jid} is not for contact {bare}")
    return item


@dataclass(frozen=True, slots=True)
class OutboundResult:
    """What the user's server does with a subscription stanza the user sent.

    `item`: the item afterwards, None when no item should exist (delete any stored one).
    `changed`: the stored item differs from the one before (persist it).
    `push`: the roster the user sees changed: send a roster push (RFC 6121 §2.1.6).
    `route`: route the stanza to the contact (stamped with the user's bare JID).
    `send_presence`: send the user's current presence from every available resource to
    the contact (RFC 6121 §3.1.5, after approving a request).
    `send_unavailable`: send unavailable presence from every available resource to the
    contact (RFC 6121 §3.2.2, after cancelling the contact's subscription).
    `drop_request`: forget the stored inbound subscription request of the contact.
    """

    item: RosterItem | None
    changed: bool
    push: bool
    route: bool
    send_presence: bool = False
    send_unavailable: bool = False
    drop_request: bool = False


@dataclass(frozen=True, slots=True)
class InboundResult:
    """What the user's server does with a subscription stanza from a contact.

    `item`, `changed`, `push`: as in `OutboundResult`.
    `deliver`: deliver the stanza to the user's available resources; a stanza that
    changes nothing is not delivered (RFC 6121 Appendix A.3).
    `auto_reply`: answer the contact on the user's behalf with this type, from the
    user's bare JID (RFC 6121 §3.1.3 and §3.4).
    `send_presence`: send the user's current presence to the contact.
    `send_unavailable`: send unavailable presence from every available resource of the
    user to the contact, who no longer receives it (RFC 6121 §3.3.3).
    `store_request`: keep the subscribe stanza and deliver it again whenever the user
    sends initial presence, until answered (RFC 6121 §3.1.3).
    `drop_request`: forget the stored subscribe stanza of the contact.
    """

    item: RosterItem | None
    changed: bool
    push: bool
    deliver: bool
    auto_reply: SubscriptionKind | None = None
    send_presence: bool = False
    send_unavailable: bool = False
    store_request: bool = False
    drop_request: bool = False


def apply_outbound(item: RosterItem | None, contact: Jid, kind: SubscriptionKind) -> OutboundResult:
    """RFC 6121 Appendix A.2 with §3.4 pre-approval: the user sent `kind` to `contact`.

    `item` is the user's stored item for the contact (listed or not), None if none.
    """
    base = _start(item, contact)
    state = state_of(base)
    route, new_state = _OUTBOUND[kind][state]
    new = _with_state(base, new_state) if new_state is not None else base
    send_presence = send_unavailable = False
    if kind is SubscriptionKind.SUBSCRIBE:
        # RFC 6121 §3.1.2: the server creates the roster item if there is none.
        new = replace(new, listed=True)
    elif kind is SubscriptionKind.SUBSCRIBED:
        if route:
            # RFC 6121 §3.1.5: approving adds the contact to the roster and sends it
            # the user's presence; a pre-approval is used up.
            new = replace(new, listed=True, approved=False)
            send_presence = True
        elif not is_subscribed_from(base) and not base.approved:
            # RFC 6121 §3.4: no request to answer, so this pre-approves the contact;
            # the stanza is not routed and the item is created if needed.
            new = replace(new, listed=True, approved=True)
    elif kind is SubscriptionKind.UNSUBSCRIBED:
        # RFC 6121 §3.4: unsubscribed also withdraws a pre-approval.
        new = replace(new, approved=False)
        # RFC 6121 §3.2.2: the contact loses the user's presence, so tell it "offline".
        send_unavailable = route and is_subscribed_from(base)
    kept = _keep(new)
    return OutboundResult(
        item=kept,
        changed=kept != item,
        push=_view(kept) != _view(item),
        route=route,
        send_presence=send_presence,
        send_unavailable=send_unavailable,
        drop_request=_has_pending_in(base) and not _has_pending_in(new),
    )


def apply_inbound(item: RosterItem | None, contact: Jid, kind: SubscriptionKind) -> InboundResult:
    """RFC 6121 Appendix A.3 with §3.4 pre-approval: `contact` sent `kind` to the user.

    `item` is the user's stored item for the contact (listed or not), None if none.
    """
    base = _start(item, contact)
    state = state_of(base)
    deliver, new_state = _INBOUND[kind][state]
    new = _with_state(base, new_state) if new_state is not None else base
    auto_reply: SubscriptionKind | None = None
    send_presence = send_unavailable = store_request = False
    if kind is SubscriptionKind.SUBSCRIBE:
        if is_subscribed_from(base):
            # RFC 6121 §3.1.3: already subscribed, answer for the user.
            # COMPAT: like Prosody, also send current presence; the RFC is silent, but a
            # contact asking again has most likely lost it.
            auto_reply = SubscriptionKind.SUBSCRIBED
            send_presence = True
        elif base.approved:
            # RFC 6121 §3.4: pre-approved, so approve now without asking the user, as
            # if the user had sent subscribed (§3.1.5), and use the pre-approval up.
            approved_state = {
                Subscription.NONE: SubscriptionState.FROM,
                Subscription.TO: SubscriptionState.BOTH,
            }[base.subscription]
            if approved_state is SubscriptionState.FROM and base.pending_out:
                approved_state = SubscriptionState.FROM_PENDING_OUT
            new = replace(_with_state(base, approved_state), approved=False)
            deliver = False
            auto_reply = SubscriptionKind.SUBSCRIBED
            send_presence = True
        else:
            store_request = deliver
    elif kind is SubscriptionKind.UNSUBSCRIBE:
        # RFC 6121 §3.3.3: the contact no longer receives the user's presence.
        send_unavailable = is_subscribed_from(base)
    kept = _keep(new)
    return InboundResult(
        item=kept,
        changed=kept != item,
        push=_view(kept) != _view(item),
        deliver=deliver,
        auto_reply=auto_reply,
        send_presence=send_presence,
        send_unavailable=send_unavailable,
        store_request=store_request,
        drop_request=_has_pending_in(base) and not _has_pending_in(new),
    )


def plan_removal(item: RosterItem) -> tuple[SubscriptionKind, ...]:
    """RFC 6121 §2.5.3: the stanzas to send the contact when the user removes the item.

    `unsubscribe` ends (or withdraws the request for) the user's subscription to the
    contact; `unsubscribed` ends (or refuses the request for) the contact's subscription
    to the user. A pre-approval needs nothing: it disappears with the item.
    """
    out: list[SubscriptionKind] = []
    if is_subscribed_to(item) or item.pending_out:
        out.append(SubscriptionKind.UNSUBSCRIBE)
    if is_subscribed_from(item) or item.pending_in:
        out.append(SubscriptionKind.UNSUBSCRIBED)
    return tuple(out)
