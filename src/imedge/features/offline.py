"""XEP-0160: Best Practices for Handling Offline Messages, with XEP-0203 delay stamps.

Chat and normal messages that no resource can take (`MessageToOffline`, RFC 6121
§8.5.2.2.1) are stored with a `<delay/>` naming this server; when a resource of the account
sends initial presence with a non-negative priority, they are handed to it in the order
they arrived, then removed from the store.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from weakref import WeakValueDictionary

from imedge.domain.errors import StanzaError, StanzaErrorCondition
from imedge.domain.jid import Jid
from imedge.features.messages import MessageToOffline
from imedge.protocol import ns
from imedge.protocol.element import Element, stanza_bytes
from imedge.protocol.fragment import FragmentError, parse_stanza
from imedge.server.context import ServerContext
from imedge.server.events import Priority
from imedge.server.session import C2SSession
from imedge.server.stanzas import InitialPresence
from imedge.store.ports import StoreError

log = logging.getLogger(__name__)

CHATSTATES = "http://jabber.org/protocol/chatstates"
_BODYLESS_OK = frozenset({"thread"})  # what may accompany a chat state and still be "only" that


def delay_stamp(when: datetime) -> str:
    """XEP-0082 DateTime in UTC, to the millisecond (XEP-0203 §3)."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stamped(stanza: Element, domain: str, when: datetime) -> Element:
    """A copy of `stanza` with this server's XEP-0203 delay (XEP-0160 §2 recommends it)."""
    out = stanza.copy()
    if any(d.get("from") == domain for d in out.find_all("delay", ns.DELAY)):
        return out  # already delayed by us (e.g. handed back by stream management)
    out.sub(
        "delay",
        ns.DELAY,
        {"from": domain, "stamp": delay_stamp(when)},
        text="Offline Storage",
    )
    return out


def is_chat_state_only(stanza: Element) -> bool:
    """XEP-0160 §3: a message carrying only XEP-0085 chat states is not worth storing."""
    has_state = False
    for child in stanza.elements():
        if child.ns == CHATSTATES:
            has_state = True
        elif not (child.ns == stanza.ns and child.name in _BODYLESS_OK):
            return False
    return has_state


def may_store(stanza: Element) -> bool:
    """XEP-0334 §4.2: a sender can ask that a message never be stored."""
    return stanza.find("no-store", ns.HINTS) is None


def install(ctx: ServerContext) -> None:
    # One flush at a time per account, so two resources coming online together do not
    # both receive the queue. Weak values: a lock lives only while someone waits on it.
    locks: WeakValueDictionary[Jid, asyncio.Lock] = WeakValueDictionary()

    def lock_of(user: Jid) -> asyncio.Lock:
        lock = locks.get(user)
        if lock is None:
            lock = asyncio.Lock()
            locks[user] = lock
        return lock

    def online_target(user: Jid) -> C2SSession | None:
        candidates = [s for s in ctx.sessions.available_of(user) if s.priority >= 0]
        return max(candidates, key=lambda s: s.priority, default=None)

    async def store(ev: MessageToOffline) -> bool:
        stanza = ev.stanza
        if is_chat_state_only(stanza):
            return True  # dropped on purpose: a stale "typing…" helps nobody
        if not may_store(stanza):
            return False  # the sender gets service-unavailable (RFC 6121 §8.5.2.2.1 (b))
        user = ev.to.bare
        data = stanza_bytes(stamped(stanza, ctx.domain, datetime.now(UTC)), ns.CLIENT)
        try:
            stored = await ctx.store.offline.push(user, data, limit=ctx.limits.offline_max_messages)
        except StoreError:
            log.exception("cannot store an offline message for %s", user)
            # Better an error to the sender than a message silently lost.
            raise StanzaError(StanzaErrorCondition.INTERNAL_SERVER_ERROR) from None
        if stored is None:
            log.info("offline queue of %s is full; message from %s refused", user, ev.from_)
            # XEP-0160 §2: a full queue answers service-unavailable.
            raise StanzaError(StanzaErrorCondition.SERVICE_UNAVAILABLE)
        ctx.metrics.offline_stored.inc()
        # A resource may have come online while the message was being stored, after its
        # own flush had already read the queue: hand the queue over now, or the message
        # would wait for the next login.
        session = online_target(user)
        if session is not None:
            await flush(session)
        return True

    async def flush(session: C2SSession) -> None:
        user = session.bare
        async with lock_of(user):
            try:
                messages = await ctx.store.offline.fetch(user)
            except StoreError:
                log.exception("cannot read the offline messages of %s", user)
                return
            if not messages or ctx.sessions.get(session.jid) is not session:
                return
            done: list[int] = []
            for msg in messages:
                try:
                    el = parse_stanza(msg.stanza)
                except FragmentError as exc:
                    log.error("dropping unreadable offline message %d of %s: %s", msg.id, user, exc)
                else:
                    session.deliver(el)
                done.append(msg.id)
            # Removed once handed to the session's outbound queue. A connection that dies
            # before the bytes reach the client loses them, unless stream management
            # (XEP-0198) keeps the session and resends its unacknowledged stanzas.
            try:
                await ctx.store.offline.delete(user, done)
            except StoreError:
                # They stay stored and come again at the next login: duplicates, not loss.
                log.exception("cannot remove delivered offline messages of %s", user)
            log.debug("delivered %d offline messages to %s", len(done), session.jid)

    async def on_initial_presence(ev: InitialPresence) -> None:
        # XEP-0160 §2: only a resource with non-negative priority gets the queue.
        if ev.session.priority >= 0:
            await flush(ev.session)

    ctx.bus.subscribe(MessageToOffline, store, priority=Priority.NORMAL)
    ctx.bus.subscribe(InitialPresence, on_initial_presence, priority=Priority.NORMAL)
