"""XEP-0191: Blocking Command.

A user's block list lives in `ctx.store.blocking`; while the user has sessions it is kept
in memory, so the stanza path does not read the database for every stanza. Stanzas to
users without sessions (offline messages, subscription requests) load it on demand, so a
blocked contact cannot fill the offline store either.

The veto runs at `Priority.BLOCKING` on every event a stanza between a local account and
someone else passes through, in both directions:

- inbound (XEP-0191 §3.5, "Blocked Entity Attempts to Communicate with User"): presence is
  dropped without answer, messages and IQ get/set get `service-unavailable` (what a user
  who is offline or does not exist would produce, so the block is not revealed), other
  IQs are dropped;
- outbound (XEP-0191 §3.6): a message, IQ or directed presence the user sends to a
  blocked entity is refused with `<not-acceptable/>` and `<blocked/>`; presence the server
  fans out on the user's behalf is silently left out.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from imedge.domain.blocking import matches
from imedge.domain.errors import StanzaError, StanzaErrorCondition
from imedge.domain.jid import Jid, JidMalformed
from imedge.domain.roster import Subscription
from imedge.protocol import ns
from imedge.protocol.element import Element
from imedge.protocol.stanza import IqType, error_reply, may_bounce
from imedge.server.context import ServerContext
from imedge.server.events import Priority
from imedge.server.iq import IqRequest, IqTarget
from imedge.server.session import C2SSession
from imedge.server.stanzas import (
    IqToBare,
    IqToFull,
    MessageFromClient,
    MessageToBare,
    MessageToFull,
    PresenceFromClient,
    PresenceToBare,
    PresenceToFull,
    SessionClosed,
    StanzaEvent,
    StanzaToRemote,
)

log = logging.getLogger(__name__)

# Seconds a block list stays cached after the user's last session ended: the presence
# feature still sends the user's unavailable presence to every contact right then.
_CACHE_GRACE = 10.0


@dataclass(frozen=True, slots=True)
class BlockList:
    """One user's blocked JIDs, with the JID matching of XEP-0191 §4 (that of XEP-0016 §2.1)."""

    items: frozenset[Jid]

    def blocks(self, jid: Jid) -> bool:
        """True if an item matches `jid`: the same JID, its bare JID, or its domain."""
        items = self.items
        if not items:
            return False
        # An item with a resource matches only that exact JID; a bare item every resource
        # of it; a domain item everything at that domain.
        return jid in items or jid.bare in items or jid.host in items


def parse_items(payload: Element) -> list[Jid]:
    """The `<item jid=.../>` children of a block or unblock request (XEP-0191 §3.3)."""
    out: list[Jid] = []
    for item in payload.find_all("item", ns.BLOCKING):
        text = item.get("jid")
        if text is None:
            raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "an item without a 'jid'")
        try:
            out.append(Jid.parse(text))
        except JidMalformed as exc:
            raise StanzaError(StanzaErrorCondition.JID_MALFORMED, str(exc)) from None
    return list(dict.fromkeys(out))


def blocked_error(stanza: Element) -> Element:
    """XEP-0191 §3.6: `<not-acceptable/>` with the application condition `<blocked/>`."""
    reply = error_reply(
        stanza, StanzaErrorCondition.NOT_ACCEPTABLE, "you have blocked this address"
    )
    err = reply.find("error")
    assert err is not None
    err.sub("blocked", ns.BLOCKING_ERRORS)
    return reply


class Blocking:
    """The block lists in use, the resources that asked for theirs, and the veto."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self._cache: dict[Jid, BlockList] = {}
        self._epoch = 0  # bumped on every change, so a load racing a change is not cached
        self._interested: set[str] = set()  # ids of sessions that fetched their block list

    # --- the lists ------------------------------------------------------------------
    async def blocklist(self, user: Jid) -> BlockList:
        cached = self._cache.get(user)
        if cached is not None:
            return cached
        epoch = self._epoch
        blocklist = BlockList(frozenset(await self.ctx.store.blocking.get_blocklist(user)))
        if epoch == self._epoch and self.ctx.sessions.sessions_of(user):
            self._cache[user] = blocklist
        return blocklist

    def _changed(self, user: Jid) -> None:
        self._epoch += 1
        self._cache.pop(user, None)

    def _evict_if_gone(self, user: Jid) -> None:
        if not self.ctx.sessions.sessions_of(user):
            self._cache.pop(user, None)

    def _is_account(self, jid: Jid) -> bool:
        return jid.local is not None and jid.domain in self.ctx.hosts

    # --- IQ handlers (XEP-0191 §3.2 to §3.5) ----------------------------------------
    async def on_get(self, req: IqRequest) -> Element | None:
        if req.payload.name != "blocklist":
            raise StanzaError(StanzaErrorCondition.BAD_REQUEST)
        user = req.from_.bare
        if req.origin is not None:
            # §3.2: this resource now gets the pushes of §3.3 and §3.4.
            self._interested.add(req.origin.id)
        result = Element("blocklist", ns.BLOCKING)
        for jid in sorted((await self.blocklist(user)).items, key=str):
            result.sub("item", attrs={"jid": str(jid)})
        return result

    async def on_set(self, req: IqRequest) -> Element | None:
        user = req.from_.bare
        name = req.payload.name
        items = parse_items(req.payload)
        if name == "block":
            if not items:
                raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "nothing to block")
            await self._block(user, items)
        elif name == "unblock":
            await self._unblock(user, items)
        else:
            raise StanzaError(StanzaErrorCondition.BAD_REQUEST)
        return None

    async def _block(self, user: Jid, items: list[Jid]) -> None:
        before = await self.blocklist(user)
        new = [j for j in items if j not in before.items]
        # §3.3: contacts allowed to see the user's presence get an unavailable presence, sent
        # while they are not blocked yet so that the outbound veto lets it through.
        await self._send_presence(user, new, available=False)
        await self.ctx.store.blocking.block(user, items)
        self._changed(user)
        log.info("%s blocked %s", user, ", ".join(map(str, items)))
        self._push(user, "block", items)

    async def _unblock(self, user: Jid, items: list[Jid]) -> None:
        before = await self.blocklist(user)
        if items:
            await self.ctx.store.blocking.unblock(user, items)
            removed = [j for j in items if j in before.items]
        else:
            # §3.5: an empty <unblock/> unblocks everyone.
            await self.ctx.store.blocking.unblock_all(user)
            removed = list(before.items)
        self._changed(user)
        log.info("%s unblocked %s", user, ", ".join(map(str, items)) if items else "everyone")
        self._push(user, "unblock", items)
        # §3.4: contacts allowed to see the user's presence get the current presence again.
        await self._send_presence(user, removed, available=True)

    def _push(self, user: Jid, name: str, items: list[Jid]) -> None:
        """§3.3/§3.4: tell every resource that fetched the block list about the change."""
        for session in self.ctx.sessions.sessions_of(user):
            if session.id not in self._interested:
                continue
            push = Element("iq", ns.CLIENT, {"type": "set", "id": "block-" + secrets.token_hex(6)})
            push.set("to", str(session.jid))
            payload = push.sub(name, ns.BLOCKING)
            for jid in items:
                payload.sub("item", attrs={"jid": str(jid)})
            session.deliver(push)

    async def _send_presence(self, user: Jid, items: Iterable[Jid], *, available: bool) -> None:
        items = list(items)
        sessions = self.ctx.sessions.available_of(user)
        if not items or not sessions:
            return
        # Who may receive the user's presence: subscribers (RFC 6121 §4.2.2) and the
        # targets of directed presence (RFC 6121 §4.6).
        _, roster = await self.ctx.store.rosters.get_roster(user)
        subscribers = {
            r.jid for r in roster if r.subscription in (Subscription.FROM, Subscription.BOTH)
        }
        for session in sessions:
            targets = subscribers | session.directed
            for contact in sorted(targets, key=str):
                if not any(matches(item, contact) for item in items):
                    continue
                if available:
                    if session.presence is None:
                        continue
                    presence = session.presence.copy()
                else:
                    presence = Element("presence", ns.CLIENT, {"type": "unavailable"})
                presence.set("from", str(session.jid))
                presence.set("to", str(contact))
                await self.ctx.router.route(presence, session.jid, contact)

    # --- the veto (XEP-0191 §3.5, §3.6) ---------------------------------------------
    async def veto_from_client(self, ev: StanzaEvent) -> bool:
        """A message or directed presence the user's client sends: refuse it early, before
        other features (carbons) see it."""
        if isinstance(ev, PresenceFromClient) and ev.broadcast:
            return False
        return await self._veto_outbound(ev, answer=True)

    async def veto_local(self, ev: StanzaEvent) -> bool:
        """A stanza to a local account: either side may have blocked the other."""
        if ev.from_.bare == ev.to.bare:
            return False
        if await self._veto_outbound(ev, answer=ev.stanza.name != "presence"):
            return True
        if not self._is_account(ev.to):
            return False
        if not (await self.blocklist(ev.to.bare)).blocks(ev.from_):
            return False
        stanza = ev.stanza
        name = stanza.name
        log.debug("blocked %s from %s to %s", name, ev.from_, ev.to)
        if name == "message" or (name == "iq" and stanza.get("type") in (IqType.GET, IqType.SET)):
            # Looks like an unavailable user: the block itself is not revealed.
            await self.ctx.router.bounce(
                stanza, ev.from_, ev.to, StanzaError(StanzaErrorCondition.SERVICE_UNAVAILABLE)
            )
        return True

    async def veto_remote(self, ev: StanzaEvent) -> bool:
        return await self._veto_outbound(ev, answer=ev.stanza.name != "presence")

    async def _veto_outbound(self, ev: StanzaEvent, *, answer: bool) -> bool:
        stanza = ev.stanza
        # Errors are answers (for instance the one a blocked entity gets for its message),
        # never refused.
        if not self._is_account(ev.from_) or stanza.get("type") == "error":
            return False
        if ev.from_.bare == ev.to.bare:
            return False
        if not (await self.blocklist(ev.from_.bare)).blocks(ev.to):
            return False
        log.debug("refused %s from %s to blocked %s", stanza.name, ev.from_, ev.to)
        if answer and may_bounce(stanza):
            self._answer_blocked(ev)
        return True

    def _answer_blocked(self, ev: StanzaEvent) -> None:
        reply = blocked_error(ev.stanza)
        reply.set("from", str(ev.to))
        reply.set("to", str(ev.from_))
        # Delivered straight to the sender's resource: routed, it would come from the
        # blocked address and be vetoed in turn.
        session: C2SSession | None = ev.origin
        if session is None or session.jid != ev.from_:
            session = self.ctx.sessions.get(ev.from_)
        if session is not None:
            session.deliver(reply)

    # --- life cycle -----------------------------------------------------------------
    def on_session_closed(self, ev: SessionClosed) -> None:
        self._interested.discard(ev.session.id)
        user = ev.session.bare
        if user in self._cache:
            asyncio.get_running_loop().call_later(_CACHE_GRACE, self._evict_if_gone, user)


def install(ctx: ServerContext) -> None:
    blocking = Blocking(ctx)
    ctx.iq.register(ns.BLOCKING, blocking.on_get, types=(IqType.GET,), targets=IqTarget.SELF)
    ctx.iq.register(ns.BLOCKING, blocking.on_set, types=(IqType.SET,), targets=IqTarget.SELF)
    bus = ctx.bus
    bus.subscribe(MessageFromClient, blocking.veto_from_client, priority=Priority.BLOCKING)
    bus.subscribe(PresenceFromClient, blocking.veto_from_client, priority=Priority.BLOCKING)
    for event in (MessageToBare, MessageToFull, PresenceToBare, PresenceToFull, IqToBare, IqToFull):
        bus.subscribe(event, blocking.veto_local, priority=Priority.BLOCKING)
    bus.subscribe(StanzaToRemote, blocking.veto_remote, priority=Priority.BLOCKING)
    # FIRST: a SessionClosed handler earlier in the chain may return True and stop it.
    bus.subscribe(SessionClosed, blocking.on_session_closed, priority=Priority.FIRST)
