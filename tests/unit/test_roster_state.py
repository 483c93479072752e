"""RFC 6121 §3 and Appendix A: the presence-subscription state machine, row by row."""

from __future__ import annotations

import pytest

from imedge.domain.jid import Jid
from imedge.domain.roster import (
    InboundResult,
    OutboundResult,
    RosterItem,
    Subscription,
    SubscriptionKind,
    SubscriptionState,
    apply_inbound,
    apply_outbound,
    is_subscribed_from,
    is_subscribed_to,
    plan_removal,
    roster_visible,
    state_of,
)

S = SubscriptionState
K = SubscriptionKind
CONTACT = Jid.parse("contact@example.net")

PARTS = {
    S.NONE: (Subscription.NONE, False, False),
    S.NONE_PENDING_OUT: (Subscription.NONE, True, False),
    S.NONE_PENDING_IN: (Subscription.NONE, False, True),
    S.NONE_PENDING_OUT_IN: (Subscription.NONE, True, True),
    S.TO: (Subscription.TO, False, False),
    S.TO_PENDING_IN: (Subscription.TO, False, True),
    S.FROM: (Subscription.FROM, False, False),
    S.FROM_PENDING_OUT: (Subscription.FROM, True, False),
    S.BOTH: (Subscription.BOTH, False, False),
}


def item_in(state: SubscriptionState, *, approved: bool = False) -> RosterItem:
    subscription, pending_out, pending_in = PARTS[state]
    return RosterItem(
        jid=CONTACT,
        name="Contact",
        groups=("Friends",),
        subscription=subscription,
        pending_out=pending_out,
        pending_in=pending_in,
        approved=approved,
    )


def new_state(result: OutboundResult | InboundResult) -> SubscriptionState:
    assert result.item is not None
    return state_of(result.item)


def check_row(
    result: OutboundResult | InboundResult,
    before: SubscriptionState,
    after: SubscriptionState | None,
) -> None:
    """`after` None is the RFC's "no state change": nothing stored, nothing pushed."""
    assert result.item is not None
    if after is None:
        assert state_of(result.item) is before
        assert not result.changed
        assert not result.push
    else:
        assert state_of(result.item) is after
        assert result.changed
    # The item keeps what the user gave it.
    assert (result.item.name, result.item.groups, result.item.listed) == (
        "Contact",
        ("Friends",),
        True,
    )


# --- A.2.1 Outbound subscribe: always routed ---------------------------------------
A_2_1 = [
    (S.NONE, S.NONE_PENDING_OUT),
    (S.NONE_PENDING_OUT, None),
    (S.NONE_PENDING_IN, S.NONE_PENDING_OUT_IN),
    (S.NONE_PENDING_OUT_IN, None),
    (S.TO, None),
    (S.TO_PENDING_IN, None),
    (S.FROM, S.FROM_PENDING_OUT),
    (S.FROM_PENDING_OUT, None),
    (S.BOTH, None),
]


@pytest.mark.parametrize(("before", "after"), A_2_1)
def test_a_2_1_outbound_subscribe(
    before: SubscriptionState, after: SubscriptionState | None
) -> None:
    result = apply_outbound(item_in(before), CONTACT, K.SUBSCRIBE)
    check_row(result, before, after)
    assert result.route
    # The new ask='subscribe' is visible, so a state change is pushed.
    assert result.push == (after is not None)
    assert not result.send_presence
    assert not result.send_unavailable
    assert not result.drop_request


# --- A.2.2 Outbound unsubscribe: always routed -------------------------------------
A_2_2 = [
    (S.NONE, None),
    (S.NONE_PENDING_OUT, S.NONE),
    (S.NONE_PENDING_IN, None),
    (S.NONE_PENDING_OUT_IN, S.NONE_PENDING_IN),
    (S.TO, S.NONE),
    (S.TO_PENDING_IN, S.NONE_PENDING_IN),
    (S.FROM, None),
    (S.FROM_PENDING_OUT, S.FROM),
    (S.BOTH, S.FROM),
]


@pytest.mark.parametrize(("before", "after"), A_2_2)
def test_a_2_2_outbound_unsubscribe(
    before: SubscriptionState, after: SubscriptionState | None
) -> None:
    result = apply_outbound(item_in(before), CONTACT, K.UNSUBSCRIBE)
    check_row(result, before, after)
    assert result.route
    assert result.push == (after is not None)
    assert not result.drop_request
    assert not result.send_presence


# --- A.2.3 Outbound subscribed: routed only as the answer to a pending request ------
A_2_3 = [
    (S.NONE_PENDING_IN, True, S.FROM),
    (S.NONE_PENDING_OUT_IN, True, S.FROM_PENDING_OUT),
    (S.TO_PENDING_IN, True, S.BOTH),
    (S.FROM, False, None),
    (S.FROM_PENDING_OUT, False, None),
    (S.BOTH, False, None),
]


@pytest.mark.parametrize(("before", "route", "after"), A_2_3)
def test_a_2_3_outbound_subscribed(
    before: SubscriptionState, route: bool, after: SubscriptionState | None
) -> None:
    result = apply_outbound(item_in(before), CONTACT, K.SUBSCRIBED)
    check_row(result, before, after)
    assert result.route is route
    # §3.1.5: approving sends the user's presence and settles the stored request.
    assert result.send_presence is route
    assert result.drop_request is route
    assert result.push is route


# A.2.3 rows "None", "None + Pending Out" and "To": no request to answer, so the stanza
# is a pre-approval (§3.4): not routed, the item gets approved='true' and is pushed.
@pytest.mark.parametrize("before", [S.NONE, S.NONE_PENDING_OUT, S.TO])
def test_a_2_3_outbound_subscribed_without_request_is_a_pre_approval(
    before: SubscriptionState,
) -> None:
    result = apply_outbound(item_in(before), CONTACT, K.SUBSCRIBED)
    assert not result.route
    assert result.item is not None
    assert state_of(result.item) is before
    assert result.item.approved
    assert result.changed
    assert result.push
    assert not result.send_presence


# --- A.2.4 Outbound unsubscribed -----------------------------------------------------
A_2_4 = [
    (S.NONE, False, None),
    (S.NONE_PENDING_OUT, False, None),
    (S.NONE_PENDING_IN, True, S.NONE),
    (S.NONE_PENDING_OUT_IN, True, S.NONE_PENDING_OUT),
    (S.TO, False, None),
    (S.TO_PENDING_IN, True, S.TO),
    (S.FROM, True, S.NONE),
    (S.FROM_PENDING_OUT, True, S.NONE_PENDING_OUT),
    (S.BOTH, True, S.TO),
]


@pytest.mark.parametrize(("before", "route", "after"), A_2_4)
def test_a_2_4_outbound_unsubscribed(
    before: SubscriptionState, route: bool, after: SubscriptionState | None
) -> None:
    result = apply_outbound(item_in(before), CONTACT, K.UNSUBSCRIBED)
    check_row(result, before, after)
    assert result.route is route
    had_from = before in (S.FROM, S.FROM_PENDING_OUT, S.BOTH)
    # §3.2.2: a cancelled subscriber is sent "unavailable" from every resource.
    assert result.send_unavailable is had_from
    assert result.drop_request is (
        before in (S.NONE_PENDING_IN, S.NONE_PENDING_OUT_IN, S.TO_PENDING_IN)
    )
    # Pending-in is not visible in a roster push; the subscription attribute is.
    assert result.push is (after is not None and PARTS[after][0] != PARTS[before][0])


# --- A.3.1 Inbound subscribe -------------------------------------------------------
A_3_1 = [
    (S.NONE, True, S.NONE_PENDING_IN),
    (S.NONE_PENDING_OUT, True, S.NONE_PENDING_OUT_IN),
    (S.NONE_PENDING_IN, False, None),
    (S.NONE_PENDING_OUT_IN, False, None),
    (S.TO, True, S.TO_PENDING_IN),
    (S.TO_PENDING_IN, False, None),
]


@pytest.mark.parametrize(("before", "deliver", "after"), A_3_1)
def test_a_3_1_inbound_subscribe(
    before: SubscriptionState, deliver: bool, after: SubscriptionState | None
) -> None:
    result = apply_inbound(item_in(before), CONTACT, K.SUBSCRIBE)
    check_row(result, before, after)
    assert result.deliver is deliver
    # A new request is kept for redelivery; a repeated one is neither shown nor stored.
    assert result.store_request is deliver
    assert result.auto_reply is None
    # Pending-in does not show in the roster, so there is nothing to push.
    assert not result.push
    assert not result.send_presence


# A.3.1 rows "From", "From + Pending Out", "Both": the server answers for the user.
@pytest.mark.parametrize("before", [S.FROM, S.FROM_PENDING_OUT, S.BOTH])
def test_a_3_1_inbound_subscribe_when_already_subscribed_is_auto_approved(
    before: SubscriptionState,
) -> None:
    result = apply_inbound(item_in(before), CONTACT, K.SUBSCRIBE)
    check_row(result, before, None)
    assert not result.deliver
    assert result.auto_reply is K.SUBSCRIBED
    assert result.send_presence
    assert not result.store_request


# --- A.3.2 Inbound unsubscribe -----------------------------------------------------
A_3_2 = [
    (S.NONE, False, None),
    (S.NONE_PENDING_OUT, False, None),
    (S.NONE_PENDING_IN, True, S.NONE),
    (S.NONE_PENDING_OUT_IN, True, S.NONE_PENDING_OUT),
    (S.TO, False, None),
    (S.TO_PENDING_IN, True, S.TO),
    (S.FROM, True, S.NONE),
    (S.FROM_PENDING_OUT, True, S.NONE_PENDING_OUT),
    (S.BOTH, True, S.TO),
]


@pytest.mark.parametrize(("before", "deliver", "after"), A_3_2)
def test_a_3_2_inbound_unsubscribe(
    before: SubscriptionState, deliver: bool, after: SubscriptionState | None
) -> None:
    result = apply_inbound(item_in(before), CONTACT, K.UNSUBSCRIBE)
    check_row(result, before, after)
    assert result.deliver is deliver
    assert result.auto_reply is None
    # §3.3.3: the former subscriber is told the user is now unavailable to it.
    assert result.send_unavailable is (before in (S.FROM, S.FROM_PENDING_OUT, S.BOTH))
    # A withdrawn request is forgotten.
    assert result.drop_request is (
        before in (S.NONE_PENDING_IN, S.NONE_PENDING_OUT_IN, S.TO_PENDING_IN)
    )


# --- A.3.3 Inbound subscribed ------------------------------------------------------
A_3_3 = [
    (S.NONE, False, None),
    (S.NONE_PENDING_OUT, True, S.TO),
    (S.NONE_PENDING_IN, False, None),
    (S.NONE_PENDING_OUT_IN, True, S.TO_PENDING_IN),
    (S.TO, False, None),
    (S.TO_PENDING_IN, False, None),
    (S.FROM, False, None),
    (S.FROM_PENDING_OUT, True, S.BOTH),
    (S.BOTH, False, None),
]


@pytest.mark.parametrize(("before", "deliver", "after"), A_3_3)
def test_a_3_3_inbound_subscribed(
    before: SubscriptionState, deliver: bool, after: SubscriptionState | None
) -> None:
    result = apply_inbound(item_in(before), CONTACT, K.SUBSCRIBED)
    check_row(result, before, after)
    assert result.deliver is deliver
    assert result.push is deliver
    assert result.auto_reply is None
    assert not result.drop_request


# --- A.3.4 Inbound unsubscribed ----------------------------------------------------
A_3_4 = [
    (S.NONE, False, None),
    (S.NONE_PENDING_OUT, True, S.NONE),
    (S.NONE_PENDING_IN, False, None),
    (S.NONE_PENDING_OUT_IN, True, S.NONE_PENDING_IN),
    (S.TO, True, S.NONE),
    (S.TO_PENDING_IN, True, S.NONE_PENDING_IN),
    (S.FROM, False, None),
    (S.FROM_PENDING_OUT, True, S.FROM),
    (S.BOTH, True, S.FROM),
]


@pytest.mark.parametrize(("before", "deliver", "after"), A_3_4)
def test_a_3_4_inbound_unsubscribed(
    before: SubscriptionState, deliver: bool, after: SubscriptionState | None
) -> None:
    result = apply_inbound(item_in(before), CONTACT, K.UNSUBSCRIBED)
    check_row(result, before, after)
    assert result.deliver is deliver
    assert result.push is deliver
    assert result.auto_reply is None
    assert not result.send_unavailable


# --- Items that do not exist yet, and unlisted items ---------------------------------


def test_outbound_subscribe_without_item_creates_a_listed_item() -> None:
    result = apply_outbound(None, CONTACT.with_resource("phone"), K.SUBSCRIBE)
    assert result.item == RosterItem(jid=CONTACT, pending_out=True, listed=True)
    assert result.route
    assert result.changed
    assert result.push


def test_inbound_subscribe_without_item_keeps_an_unlisted_request() -> None:
    # §3.1.3: no roster item is created for an inbound request; it is only remembered.
    result = apply_inbound(None, CONTACT, K.SUBSCRIBE)
    assert result.item == RosterItem(jid=CONTACT, pending_in=True, listed=False)
    assert not roster_visible(result.item)
    assert result.deliver
    assert result.store_request
    assert result.changed
    assert not result.push


def test_approving_an_unlisted_request_lists_the_contact() -> None:
    pending = apply_inbound(None, CONTACT, K.SUBSCRIBE).item
    result = apply_outbound(pending, CONTACT, K.SUBSCRIBED)
    assert result.item == RosterItem(jid=CONTACT, subscription=Subscription.FROM)
    assert roster_visible(result.item)
    assert result.route
    assert result.push
    assert result.send_presence
    assert result.drop_request


def test_refusing_an_unlisted_request_leaves_no_item() -> None:
    pending = apply_inbound(None, CONTACT, K.SUBSCRIBE).item
    result = apply_outbound(pending, CONTACT, K.UNSUBSCRIBED)
    assert result.item is None
    assert result.route
    assert result.changed
    assert not result.push
    assert result.drop_request
    assert not result.send_unavailable


def test_withdrawn_unlisted_request_leaves_no_item() -> None:
    pending = apply_inbound(None, CONTACT, K.SUBSCRIBE).item
    result = apply_inbound(pending, CONTACT, K.UNSUBSCRIBE)
    assert result.item is None
    assert result.deliver
    assert result.drop_request
    assert not result.push


def test_outbound_subscribe_lists_an_unlisted_request() -> None:
    pending = apply_inbound(None, CONTACT, K.SUBSCRIBE).item
    result = apply_outbound(pending, CONTACT, K.SUBSCRIBE)
    assert result.item is not None
    assert state_of(result.item) is S.NONE_PENDING_OUT_IN
    assert result.item.listed
    assert result.push


@pytest.mark.parametrize("kind", [K.UNSUBSCRIBE, K.UNSUBSCRIBED])
def test_outbound_cancel_without_item_changes_nothing(kind: SubscriptionKind) -> None:
    result = apply_outbound(None, CONTACT, kind)
    assert result.item is None
    assert not result.changed
    assert not result.push
    # A.2.2 routes unsubscribe in every state; A.2.4 routes unsubscribed only on change.
    assert result.route is (kind is K.UNSUBSCRIBE)


@pytest.mark.parametrize("kind", [K.SUBSCRIBED, K.UNSUBSCRIBE, K.UNSUBSCRIBED])
def test_inbound_stanzas_without_item_are_not_delivered(kind: SubscriptionKind) -> None:
    result = apply_inbound(None, CONTACT, kind)
    assert result == InboundResult(item=None, changed=False, push=False, deliver=False)


def test_item_for_another_contact_is_refused() -> None:
    with pytest.raises(ValueError, match="not for contact"):
        apply_inbound(item_in(S.NONE), Jid.parse("other@example.net"), K.SUBSCRIBE)


# --- Pre-approval (RFC 6121 §3.4) -----------------------------------------------------


def test_pre_approval_without_item_creates_an_approved_item() -> None:
    result = apply_outbound(None, CONTACT, K.SUBSCRIBED)
    assert result.item == RosterItem(jid=CONTACT, approved=True, listed=True)
    assert not result.route
    assert result.push


def test_repeated_pre_approval_changes_nothing() -> None:
    result = apply_outbound(item_in(S.NONE, approved=True), CONTACT, K.SUBSCRIBED)
    assert result.item == item_in(S.NONE, approved=True)
    assert not result.route
    assert not result.changed
    assert not result.push


@pytest.mark.parametrize(
    ("before", "after"),
    [(S.NONE, S.FROM), (S.NONE_PENDING_OUT, S.FROM_PENDING_OUT), (S.TO, S.BOTH)],
)
def test_pre_approved_inbound_subscribe_is_approved_automatically(
    before: SubscriptionState, after: SubscriptionState
) -> None:
    result = apply_inbound(item_in(before, approved=True), CONTACT, K.SUBSCRIBE)
    assert result.item is not None
    assert state_of(result.item) is after
    assert not result.item.approved  # the pre-approval is used up
    assert not result.deliver
    assert result.auto_reply is K.SUBSCRIBED
    assert result.send_presence
    assert not result.store_request
    assert result.changed
    assert result.push


def test_unsubscribed_cancels_a_pre_approval_without_routing() -> None:
    result = apply_outbound(item_in(S.TO, approved=True), CONTACT, K.UNSUBSCRIBED)
    assert result.item == item_in(S.TO)
    assert not result.route
    assert result.push
    assert not result.send_unavailable


def test_unsubscribed_cancels_an_approval_only_item_entirely() -> None:
    approved = apply_outbound(None, CONTACT, K.SUBSCRIBED).item
    result = apply_outbound(approved, CONTACT, K.UNSUBSCRIBED)
    # The item was listed by the pre-approval; it stays in the roster, plain "none".
    assert result.item == RosterItem(jid=CONTACT)
    assert result.push


def test_answering_a_request_uses_up_the_pre_approval() -> None:
    item = RosterItem(jid=CONTACT, pending_in=True, approved=True)
    result = apply_outbound(item, CONTACT, K.SUBSCRIBED)
    assert result.item == RosterItem(jid=CONTACT, subscription=Subscription.FROM)
    assert result.route


# --- A full exchange between two servers ------------------------------------------


def test_mutual_subscription_ends_in_both_on_each_side() -> None:
    user = Jid.parse("user@example.com")
    # Each server's stored item for the other party, as the exchange goes on.
    users_item: RosterItem | None = None
    contacts_item: RosterItem | None = None

    # The user asks; the contact's server keeps the request.
    users_item = apply_outbound(users_item, CONTACT, K.SUBSCRIBE).item
    asked = apply_inbound(contacts_item, user, K.SUBSCRIBE)
    assert asked.deliver
    contacts_item = asked.item
    # The contact approves: routed, and the user's server records "to".
    approve = apply_outbound(contacts_item, user, K.SUBSCRIBED)
    assert approve.route
    assert approve.send_presence
    contacts_item = approve.item
    users_item = apply_inbound(users_item, CONTACT, K.SUBSCRIBED).item
    # The contact asks back and the user approves.
    contacts_item = apply_outbound(contacts_item, user, K.SUBSCRIBE).item
    asked_back = apply_inbound(users_item, CONTACT, K.SUBSCRIBE)
    assert asked_back.deliver
    approve_back = apply_outbound(asked_back.item, CONTACT, K.SUBSCRIBED)
    assert approve_back.route
    users_item = approve_back.item
    contacts_item = apply_inbound(contacts_item, user, K.SUBSCRIBED).item

    assert state_of(users_item) is S.BOTH
    assert state_of(contacts_item) is S.BOTH
    assert is_subscribed_to(users_item)
    assert is_subscribed_from(users_item)


# --- Helpers and removal (RFC 6121 §2.5.3) ---------------------------------------------


@pytest.mark.parametrize(
    ("subscription", "to", "from_"),
    [
        (Subscription.NONE, False, False),
        (Subscription.TO, True, False),
        (Subscription.FROM, False, True),
        (Subscription.BOTH, True, True),
    ],
)
def test_subscription_predicates(subscription: Subscription, to: bool, from_: bool) -> None:
    item = RosterItem(jid=CONTACT, subscription=subscription)
    assert is_subscribed_to(item) is to
    assert is_subscribed_from(item) is from_


def test_predicates_on_missing_item() -> None:
    assert not is_subscribed_to(None)
    assert not is_subscribed_from(None)
    assert not roster_visible(None)
    assert state_of(None) is S.NONE


def test_state_of_ignores_pending_flags_made_moot_by_the_subscription() -> None:
    item = RosterItem(
        jid=CONTACT, subscription=Subscription.BOTH, pending_out=True, pending_in=True
    )
    assert state_of(item) is S.BOTH


REMOVAL = [
    (S.NONE, ()),
    (S.NONE_PENDING_OUT, (K.UNSUBSCRIBE,)),
    (S.NONE_PENDING_IN, (K.UNSUBSCRIBED,)),
    (S.NONE_PENDING_OUT_IN, (K.UNSUBSCRIBE, K.UNSUBSCRIBED)),
    (S.TO, (K.UNSUBSCRIBE,)),
    (S.TO_PENDING_IN, (K.UNSUBSCRIBE, K.UNSUBSCRIBED)),
    (S.FROM, (K.UNSUBSCRIBED,)),
    (S.FROM_PENDING_OUT, (K.UNSUBSCRIBE, K.UNSUBSCRIBED)),
    (S.BOTH, (K.UNSUBSCRIBE, K.UNSUBSCRIBED)),
]


@pytest.mark.parametrize(("state", "stanzas"), REMOVAL)
def test_plan_removal(state: SubscriptionState, stanzas: tuple[SubscriptionKind, ...]) -> None:
    assert plan_removal(item_in(state)) == stanzas


def test_plan_removal_of_a_pre_approval_sends_nothing() -> None:
    assert plan_removal(item_in(S.NONE, approved=True)) == ()


def test_results_are_frozen() -> None:
    result = apply_outbound(None, CONTACT, K.SUBSCRIBE)
    with pytest.raises(AttributeError):
        result.route = False  # type: ignore[misc]
