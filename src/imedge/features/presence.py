"""RFC 6121 §3, §4: Presence subscriptions, presence broadcast, probes and directed presence.

The subscription state machine itself is pure (`imedge.domain.roster`); this module reads
the stored item, applies the machine, persists and pushes the result, and sends the
stanzas the result asks for. Everything that leaves the user's own sessions goes through
`Router.route`, so a remote contact is handled exactly like a local one; a local contact's
server side is then this same module, reached through the `PresenceTo*` events.
"""

from __future__ import annotations

import logging

from imedge.domain.errors import StanzaError, StanzaErrorCondition
from imedge.domain.jid import Jid
from imedge.domain.presence import PresenceType, parse_priority
from imedge.domain.roster import (
    RosterItem,
    SubscriptionKind,
    apply_inbound,
    apply_outbound,
    is_subscribed_from,
    is_subscribed_to,
)
from imedge.features.roster import push_item, roster_locks, save_item
from imedge.protocol import ns
from imedge.protocol.element import Element, stanza_bytes
from imedge.protocol.fragment import FragmentError, parse_stanza
from imedge.server.context import ServerContext
from imedge.server.events import Priority
from imedge.server.session import C2SSession
from imedge.server.stanzas import (
    InitialPresence,
    PresenceFromClient,
    PresenceToBare,
    PresenceToFull,
    SessionClosed,
    StanzaEvent,
)

log = logging.getLogger(__name__)


def _presence(type_: PresenceType | SubscriptionKind | None, from_: Jid, to: Jid) -> Element:
    el = Element("presence", ns.CLIENT)
    if type_ is not None:
        el.attrs["type"] = str(type_)
    el.attrs["from"] = str(from_)
    el.attrs["to"] = str(to)
    return el


def _addressed(stanza: Element, from_: Jid, to: Jid) -> Element:
    """A copy of `stanza` with new addresses (the original may be sent elsewhere too)."""
    el = stanza.copy()
    el.attrs["from"] = str(from_)
    el.attrs["to"] = str(to)
    return el


def _type_of(stanza: Element) -> PresenceType:
    try:
        return PresenceType.from_attr(stanza.get("type"))
    except ValueError:
        # RFC 6120 §8.3.3.1: a type the protocol does not define is a bad request.
        raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "unknown presence type") from None


class Presence:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.locks = roster_locks(ctx)

    # === from the user's own client ======================================================
    async def from_client(self, ev: PresenceFromClient) -> bool:
        session = ev.origin
        if session is None:
            return False
        stanza = ev.stanza
        ptype = _type_of(stanza)
        if ptype.is_subscription:
            if ev.to.bare != session.bare:
                await self._outbound_subscription(
                    session, stanza, ev.to.bare, SubscriptionKind(ptype)
                )
            # else: the user is implicitly subscribed to itself; nothing to manage.
        elif ptype is PresenceType.PROBE:
            # §4.3: probing is the server's business; a client's probe is sent like one of
            # ours, from the bare JID, so that the contact's server checks the subscription.
            if ev.to.bare != session.bare:
                probe = _addressed(stanza, session.bare, ev.to.bare)
                await self.ctx.router.route(probe, session.bare, ev.to.bare, session)
        elif ev.broadcast:
            if ptype is PresenceType.AVAILABLE:
                await self._broadcast_available(session, stanza)
            elif ptype is PresenceType.UNAVAILABLE:
                await self._go_unavailable(session, stanza, notify_self=True)
            # A broadcast error has no one to go to.
        elif ptype is PresenceType.ERROR:
            await self.ctx.router.route(stanza, session.jid, ev.to, session)
        else:
            await self._directed(session, stanza, ev.to, ptype)
        return True

    async def _outbound_subscription(
        self,
        session: C2SSession | None,
        stanza: Element,
        contact: Jid,
        kind: SubscriptionKind,
        *,
        user: Jid | None = None,
    ) -> None:
        """RFC 6121 §3.1.2, §3.1.5, §3.2.2, §3.3.2, §3.4: the user sent `kind` to `contact`
        (from one of their sessions, or through the admin API on their behalf)."""
        user = session.bare if session is not None else user
        assert user is not None
        version: int | None = None
        async with self.locks.hold(user):
            before = await self.ctx.store.rosters.get_item(user, contact)
            result = apply_outbound(before, contact, kind)
            if result.changed:
                version = await save_item(self.ctx, user, before, result.item, contact)
        if result.push and version is not None:
            push_item(self.ctx, user, contact, result.item, version)
        if result.drop_request:
            await self.ctx.store.subscription_requests.delete_request(user, contact)
        if result.send_unavailable:
            # §3.2.2: "offline" first, while the contact's server still takes our presence.
            await self._send_unavailable(user, contact)
        if result.route:
            # §3.1.2: subscription stanzas are stamped with the user's bare JID.
            await self.ctx.router.route(_addressed(stanza, user, contact), user, contact, session)
        if result.send_presence:
            # §3.1.5: after approving, the contact gets the user's current presence.
            await self._send_presence(user, contact)
        log.debug("%s sent %s to %s: %s", user, kind, contact, result)

    async def _broadcast_available(self, session: C2SSession, stanza: Element) -> None:
        """RFC 6121 §4.2.2 (initial presence) and §4.4.2 (subsequent presence)."""
        try:
            priority = parse_priority(stanza.find_text("priority", ns.CLIENT))
        except ValueError as exc:
            raise StanzaError(StanzaErrorCondition.BAD_REQUEST, str(exc)) from None
        initial = not session.available
        kept = stanza.copy()
        kept.attrs.pop("to", None)
        kept.attrs["from"] = str(session.jid)
        session.priority = priority
        session.presence = kept
        session.available = True
        user = session.bare
        _, items = await self.ctx.store.rosters.get_roster(user)
        for item in items:
            if is_subscribed_from(item):
                await self.ctx.router.route(
                    _addressed(kept, session.jid, item.jid), session.jid, item.jid, session
                )
        # §4.2.2, §4.4.2: the user's own available resources get it too, the sender included.
        for own in self.ctx.sessions.available_of(user):
            own.deliver(_addressed(kept, session.jid, own.jid))
        if not initial:
            return
        # §4.2.2: the new resource learns what the user's other resources are doing...
        for own in self.ctx.sessions.available_of(user):
            if own is not session and own.presence is not None:
                session.deliver(_addressed(own.presence, own.jid, session.jid))
        # ...and §4.3.1: what the contacts it is subscribed to are doing.
        for item in items:
            if is_subscribed_to(item) and item.jid != user:
                if self.ctx.router.is_local(item.jid):
                    await self._answer_local_probe(session, item.jid)
                else:
                    probe = _presence(PresenceType.PROBE, user, item.jid)
                    await self.ctx.router.route(probe, user, item.jid, session)
        await self.ctx.bus.fire(InitialPresence(session))

    async def _answer_local_probe(self, session: C2SSession, contact: Jid) -> None:
        """§4.3.2 for a contact on this server, answered straight to the new session."""
        sessions = self.ctx.sessions.available_of(contact)
        if not sessions:
            return  # §4.3.2 would say "unavailable": the client assumes that already.
        item = await self.ctx.store.rosters.get_item(contact, session.bare)
        if not is_subscribed_from(item):
            return
        for other in sessions:
            if other.presence is not None:
                # Routed, not delivered directly, so that vetoes (XEP-0191) apply.
                answer = _addressed(other.presence, other.jid, session.jid)
                await self.ctx.router.route(answer, other.jid, session.jid)

    async def _go_unavailable(
        self, session: C2SSession, stanza: Element, *, notify_self: bool
    ) -> None:
        """RFC 6121 §4.5.2: the resource goes offline; tell everyone who saw it online."""
        was_available = session.available
        session.available = False
        session.presence = None
        user = session.bare
        gone = stanza.copy()
        gone.attrs.pop("to", None)
        gone.attrs["from"] = str(session.jid)
        told: set[Jid] = set()
        if was_available:
            _, items = await self.ctx.store.rosters.get_roster(user)
            for item in items:
                if is_subscribed_from(item):
                    told.add(item.jid)
                    await self.ctx.router.route(
                        _addressed(gone, session.jid, item.jid), session.jid, item.jid
                    )
            for own in self.ctx.sessions.available_of(user):
                own.deliver(_addressed(gone, session.jid, own.jid))
            if notify_self:
                session.deliver(_addressed(gone, session.jid, session.jid))
        # §4.6.3: directed-presence targets saw the resource online too.
        directed = sorted(session.directed, key=str)
        session.directed.clear()
        for target in directed:
            if target not in told:
                await self.ctx.router.route(
                    _addressed(gone, session.jid, target), session.jid, target
                )

    async def _directed(
        self, session: C2SSession, stanza: Element, to: Jid, ptype: PresenceType
    ) -> None:
        """RFC 6121 §4.6.2: presence to one entity, remembered so that it learns of the end."""
        user = session.bare
        if to.bare != user:
            if ptype is PresenceType.AVAILABLE:
                item = await self.ctx.store.rosters.get_item(user, to.bare)
                if not is_subscribed_from(item):
                    session.directed.add(to)
            else:
                session.directed.discard(to)
        await self.ctx.router.route(stanza, session.jid, to, session)

    async def _send_presence(self, user: Jid, contact: Jid) -> None:
        """The current presence of each available resource of `user`, to `contact`."""
        for own in self.ctx.sessions.available_of(user):
            current = own.presence if own.presence is not None else Element("presence", ns.CLIENT)
            await self.ctx.router.route(_addressed(current, own.jid, contact), own.jid, contact)

    async def _send_unavailable(self, user: Jid, contact: Jid) -> None:
        for own in self.ctx.sessions.available_of(user):
            gone = _presence(PresenceType.UNAVAILABLE, own.jid, contact)
            await self.ctx.router.route(gone, own.jid, contact)

    # === to a local account ==============================================================
    async def to_bare(self, ev: PresenceToBare) -> bool:
        ptype = _type_of(ev.stanza)
        user = ev.to.bare
        if await self._server_side(ev, ptype):
            return True
        sessions = self.ctx.sessions.available_of(user)
        if not sessions:
            # §4.4.3, §8.5.2.2.2: nobody online; presence is not stored for later.
            return True
        sender = ev.from_
        # §4.4.3: only what the user subscribed to, or a reply to its own directed
        # presence, reaches it; an unavailable is always harmless and let through.
        if (
            ptype is PresenceType.AVAILABLE
            and sender.bare != user
            and not await self._accepts_presence_from(user, sender)
        ):
            log.debug("dropped presence from %s to %s: no subscription", sender, user)
            return True
        for own in sessions:
            own.deliver(ev.stanza)
        return True

    async def to_full(self, ev: PresenceToFull) -> bool:
        ptype = _type_of(ev.stanza)
        if await self._server_side(ev, ptype):
            return True
        # §8.5.3.1: presence to a connected resource (directed presence, errors) goes to
        # it; §8.5.3.2.1: to a resource that is not there, it is dropped.
        session = self.ctx.sessions.get(ev.to)
        if session is not None:
            session.deliver(ev.stanza)
        return True

    async def _server_side(self, ev: StanzaEvent, ptype: PresenceType) -> bool:
        """Subscription stanzas and probes, which the user's server answers for the bare
        JID whatever resource they name (§3, §4.3.2, §8.5.3.2.1)."""
        user = ev.to.bare
        if ptype.is_subscription:
            if ev.from_.bare != user:
                await self._inbound_subscription(
                    ev.stanza, ev.from_.bare, user, SubscriptionKind(ptype)
                )
            return True
        if ptype is PresenceType.PROBE:
            await self._answer_probe(ev.from_, user)
            return True
        return False

    async def _inbound_subscription(
        self, stanza: Element, contact: Jid, user: Jid, kind: SubscriptionKind
    ) -> None:
        """RFC 6121 §3.1.3, §3.1.6, §3.2.3, §3.3.3: `contact` sent `kind` to the user."""
        account = await self.ctx.store.accounts.get(user)
        if account is None or account.disabled:
            # §3.1.3, §8.5.1: silently ignored, so the sender cannot tell it from a user
            # who does not answer.
            return
        version: int | None = None
        async with self.locks.hold(user):
            before = await self.ctx.store.rosters.get_item(user, contact)
            result = apply_inbound(before, contact, kind)
            if result.changed:
                version = await save_item(self.ctx, user, before, result.item, contact)
        if result.push and version is not None:
            push_item(self.ctx, user, contact, result.item, version)
        delivered = _addressed(stanza, contact, user)
        if result.drop_request:
            await self.ctx.store.subscription_requests.delete_request(user, contact)
        if result.store_request:
            # §3.1.3: kept and delivered again at each initial presence until answered.
            data = stanza_bytes(delivered, ns.CLIENT)
            await self.ctx.store.subscription_requests.put_request(user, contact, data)
        if result.deliver:
            for own in self.ctx.sessions.available_of(user):
                own.deliver(delivered)
        if result.send_unavailable:
            # §3.3.3: the contact no longer receives the user's presence.
            await self._send_unavailable(user, contact)
        if result.auto_reply is not None:
            # §3.1.3 (already subscribed) and §3.4 (pre-approved): answered for the user.
            reply = _presence(result.auto_reply, user, contact)
            await self.ctx.router.route(reply, user, contact)
        if result.send_presence:
            await self._send_presence(user, contact)
        log.debug("%s got %s from %s: %s", user, kind, contact, result)

    async def _answer_probe(self, prober: Jid, user: Jid) -> None:
        """RFC 6121 §4.3.2: a probe for the user's presence."""
        if prober.bare != user:
            item = await self.ctx.store.rosters.get_item(user, prober.bare)
            if not is_subscribed_from(item):
                # §4.3.2 and §8.5.1: the same answer whether or not the account exists.
                # It makes the prober's server end a subscription we do not know of; a
                # pre-approval is not touched (§3.4).
                reply = _presence(SubscriptionKind.UNSUBSCRIBED, user, prober.bare)
                await self.ctx.router.route(reply, user, prober.bare)
                return
        sessions = self.ctx.sessions.available_of(user)
        if not sessions:
            await self.ctx.router.route(
                _presence(PresenceType.UNAVAILABLE, user, prober), user, prober
            )
            return
        for own in sessions:
            current = own.presence if own.presence is not None else Element("presence", ns.CLIENT)
            await self.ctx.router.route(_addressed(current, own.jid, prober), own.jid, prober)

    async def _accepts_presence_from(self, user: Jid, sender: Jid) -> bool:
        for own in self.ctx.sessions.sessions_of(user):
            if sender in own.directed or sender.bare in own.directed:
                return True
        item: RosterItem | None = await self.ctx.store.rosters.get_item(user, sender.bare)
        return is_subscribed_to(item)

    # === session life cycle ==============================================================
    async def on_initial_presence(self, ev: InitialPresence) -> None:
        """RFC 6121 §3.1.3: unanswered subscription requests, again, to the new resource."""
        session = ev.session
        for contact, data in await self.ctx.store.subscription_requests.get_requests(session.bare):
            try:
                stanza = parse_stanza(data)
            except FragmentError as exc:
                log.warning(
                    "stored subscription request from %s to %s is unreadable: %s",
                    contact,
                    session.bare,
                    exc,
                )
                continue
            session.deliver(stanza)

    async def on_session_closed(self, ev: SessionClosed) -> None:
        """RFC 6121 §4.5.2: a client that vanished without saying goodbye went offline."""
        session = ev.session
        current = self.ctx.sessions.get(session.jid)
        if current is not None and current is not session and current.available:
            # A new connection took over the resource (RFC 6120 §7.7.2.2) and already
            # speaks for it: an "unavailable" now would be wrong.
            session.directed.clear()
            return
        if session.available or session.directed:
            gone = Element("presence", ns.CLIENT, {"type": "unavailable"})
            await self._go_unavailable(session, gone, notify_self=False)


async def subscribe_on_behalf(ctx: ServerContext, user: Jid, contact: Jid) -> None:
    """Ask `contact` for a presence subscription as if `user` had sent it from a client
    (issue 5: a contact added through the admin API on the user's behalf)."""
    request = Element("presence", ns.CLIENT, {"type": "subscribe", "to": str(contact.bare)})
    await Presence(ctx)._outbound_subscription(
        None, request, contact.bare, SubscriptionKind.SUBSCRIBE, user=user.bare
    )


def install(ctx: ServerContext) -> None:
    presence = Presence(ctx)
    ctx.bus.subscribe(PresenceFromClient, presence.from_client, priority=Priority.NORMAL)
    ctx.bus.subscribe(PresenceToBare, presence.to_bare, priority=Priority.NORMAL)
    ctx.bus.subscribe(PresenceToFull, presence.to_full, priority=Priority.NORMAL)
    ctx.bus.subscribe(InitialPresence, presence.on_initial_presence, priority=Priority.NORMAL)
    ctx.bus.subscribe(SessionClosed, presence.on_session_closed, priority=Priority.NORMAL)
