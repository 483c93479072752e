"""RFC 6121 §8.5: delivery of messages addressed to local accounts.

A message to a bare JID goes to the available resources of highest non-negative priority
(§8.5.2.1.1); with none, chat and normal messages are offered to offline storage
(§8.5.2.2.1, `MessageToOffline`, handled by `imedge.features.offline`). A message to a
full JID goes to that resource, or is handled as if sent to the bare JID when the resource
is gone (§8.5.3.2.1). Errors say `service-unavailable` alike for an account that does not
exist and for one that cannot take the message (§8.5.1), so they reveal nothing more.

Two events of this module let other features take part without re-deciding the routing:
`MessageDelivering` (just before the stanza is handed to the chosen sessions; carbons
use it) and `MessageToOffline`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from imedge.domain.errors import StanzaError, StanzaErrorCondition
from imedge.domain.jid import Jid
from imedge.domain.presence import message_targets
from imedge.protocol.stanza import MessageType
from imedge.server.context import ServerContext
from imedge.server.events import Priority
from imedge.server.session import C2SSession
from imedge.server.stanzas import MessageToBare, MessageToFull, MessageToHost, StanzaEvent
from imedge.store.ports import StoreError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class MessageDelivering(StanzaEvent):
    """`stanza` is about to be handed to `sessions`, resources of the account `to.bare`.

    Handlers may still adjust the stanza (nothing has serialised it yet) and send copies
    of it elsewhere (XEP-0280); what they return is ignored, every handler runs.
    """

    sessions: list[C2SSession]


@dataclass(slots=True)
class MessageToOffline(StanzaEvent):
    """A chat or normal message for an existing account that no resource takes now.

    RFC 6121 §8.5.2.2.1: the server stores it (XEP-0160) or answers service-unavailable. A
    handler returns True once it has stored the message (or deliberately dropped it);
    it raises StanzaError to refuse it; when nobody handles it the sender gets
    service-unavailable.
    """


def _service_unavailable() -> StanzaError:
    return StanzaError(StanzaErrorCondition.SERVICE_UNAVAILABLE)


def pick_sessions(mtype: MessageType, available: list[C2SSession]) -> list[C2SSession]:
    """The available sessions that get a message of `mtype` sent to their bare JID.

    RFC 6121 §8.5.2.1.1: normal and chat go to the resources of highest non-negative
    priority (all of them when several share it); headline to every resource of
    non-negative priority. A negative priority never receives such a message.
    """
    if mtype is MessageType.HEADLINE:
        return [s for s in available if s.priority >= 0]
    by_resource = {s.jid.resource or "": s for s in available}
    names = message_targets({name: s.priority for name, s in by_resource.items()})
    return [by_resource[name] for name in names]


def install(ctx: ServerContext) -> None:
    bus = ctx.bus

    async def deliver(ev: StanzaEvent, sessions: list[C2SSession]) -> None:
        await bus.fire(MessageDelivering(ev.stanza, ev.from_, ev.to, ev.origin, sessions))
        # The same element goes to every session: it is serialised on delivery and must
        # not change from here on.
        for session in sessions:
            session.deliver(ev.stanza)

    async def account_exists(bare: Jid) -> bool:
        try:
            account = await ctx.store.accounts.get(bare)
        except StoreError:
            log.exception("cannot look up account %s", bare)
            raise StanzaError(StanzaErrorCondition.INTERNAL_SERVER_ERROR) from None
        # A disabled account cannot log in to read anything: treat it as absent.
        return account is not None and not account.disabled

    async def to_bare(ev: StanzaEvent) -> bool:
        mtype = MessageType.of(ev.stanza)
        if mtype is MessageType.ERROR:
            return True  # §8.5.2.1.1, §8.5.2.2.1: an error to a bare JID is silently ignored
        if mtype is MessageType.GROUPCHAT:
            # §8.5.2.1.1, §8.5.2.2.1, §8.5.1: never delivered to an account's resources;
            # the same answer whether the account exists or not.
            raise _service_unavailable()
        bare = ev.to.bare
        targets = pick_sessions(mtype, ctx.sessions.available_of(bare))
        if targets:
            await deliver(ev, targets)
            return True
        if mtype is MessageType.HEADLINE:
            return True  # §8.5.2.2.1 and §8.5.1: silently ignored, existing account or not
        # Chat or normal, nobody to take it now. A bound session (even unavailable or of
        # negative priority) proves the account exists without asking the store.
        if not ctx.sessions.sessions_of(bare) and not await account_exists(bare):
            raise _service_unavailable()  # §8.5.1
        if await bus.fire(MessageToOffline(ev.stanza, ev.from_, ev.to, ev.origin)):
            return True
        raise _service_unavailable()  # §8.5.2.2.1 (b): no offline storage

    async def to_full(ev: MessageToFull) -> bool:
        session = ctx.sessions.get(ev.to)
        if session is not None:
            # §8.5.3.1: a resource addressed by name gets the message whatever its
            # availability or priority.
            await deliver(ev, [session])
            return True
        mtype = MessageType.of(ev.stanza)
        if mtype is MessageType.ERROR:
            return True  # §8.5.3.2.1: silently ignored
        if mtype is MessageType.GROUPCHAT:
            raise _service_unavailable()  # §8.5.3.2.1
        # §8.5.3.2.1: normal, chat and headline to a resource that is gone are handled as
        # if sent to the bare JID (other resources, or offline storage).
        return await to_bare(ev)

    async def to_host(ev: MessageToHost) -> bool:
        # RFC 6120 §10.5 (local domain): a message to the server itself that no feature
        # took. Errors and headlines are dropped (never answer them); the rest learns
        # there is no such service.
        mtype = MessageType.of(ev.stanza)
        if mtype in (MessageType.ERROR, MessageType.HEADLINE):
            return True
        raise _service_unavailable()

    bus.subscribe(MessageToBare, to_bare, priority=Priority.NORMAL)
    bus.subscribe(MessageToFull, to_full, priority=Priority.NORMAL)
    bus.subscribe(MessageToHost, to_host, priority=Priority.FALLBACK)
