"""Dispatch of IQ requests addressed to the server or to an account (RFC 6120 §8.2.3, §10.3)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Flag, auto

from imedge.domain.errors import StanzaError, StanzaErrorCondition
from imedge.domain.jid import Jid
from imedge.protocol.element import Element
from imedge.protocol.stanza import IqType
from imedge.server.session import C2SSession

log = logging.getLogger(__name__)


class IqTarget(Flag):
    HOST = auto()  # to the server's domain
    SELF = auto()  # from a user to their own account (no `to`, or their bare JID)
    BARE = auto()  # to another local account's bare JID, answered by the server for it


@dataclass(slots=True)
class IqRequest:
    stanza: Element
    payload: Element
    type: IqType
    from_: Jid
    to: Jid
    origin: C2SSession | None


IqHandler = Callable[[IqRequest], Awaitable[Element | None]]


class IqDispatcher:
    """Feature modules register handlers by payload namespace, request type and target."""

    def __init__(self) -> None:
        self._handlers: dict[tuple[str, IqType, IqTarget], IqHandler] = {}

    def register(
        self,
        ns: str,
        handler: IqHandler,
        *,
        types: tuple[IqType, ...] = (IqType.GET,),
        targets: IqTarget = IqTarget.HOST,
    ) -> None:
        for t in types:
            for target in (IqTarget.HOST, IqTarget.SELF, IqTarget.BARE):
                if target in targets:
                    self._handlers[(ns, t, target)] = handler

    def handles(self, ns: str, type_: IqType, target: IqTarget) -> bool:
        return (ns, type_, target) in self._handlers

    async def dispatch(self, req: IqRequest, target: IqTarget) -> Element | None:
        """Run the handler and return its result payload; raise StanzaError when it fails.

        RFC 6120 §8.2.3: an IQ nobody handles gets `service-unavailable`.
        """
        handler = self._handlers.get((req.payload.ns, req.type, target))
        if handler is None:
            raise StanzaError(StanzaErrorCondition.SERVICE_UNAVAILABLE)
        return await handler(req)
