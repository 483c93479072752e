"""Routes stanzas between local sessions, server features and remote domains (RFC 6120 §10)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from imedge.domain.errors import (
    StanzaError,
    StanzaErrorCondition,
    StreamError,
    StreamErrorCondition,
)
from imedge.domain.jid import Jid, JidMalformed
from imedge.protocol.element import Element
from imedge.protocol.stanza import IqType, error_reply, iq_result, may_bounce
from imedge.server.events import EventBus
from imedge.server.iq import IqDispatcher, IqRequest, IqTarget
from imedge.server.registry import SessionRegistry
from imedge.server.session import C2SSession
from imedge.server.stanzas import (
    IqToBare,
    IqToFull,
    MessageFromClient,
    MessageToBare,
    MessageToFull,
    MessageToHost,
    PresenceFromClient,
    PresenceToBare,
    PresenceToFull,
    PresenceToHost,
    StanzaEvent,
    StanzaToRemote,
)

log = logging.getLogger(__name__)

_IQ_TYPES = frozenset(t.value for t in IqType)

# A service on its own (sub)domain, e.g. `directory.example.org`, like an XEP-0114
# component but in-process: it gets every stanza addressed to that domain, with the
# sender and the recipient; a StanzaError it raises is bounced to the sender.
ComponentHandler = Callable[[Element, Jid, Jid, C2SSession | None], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Component:
    domain: str
    name: str  # what disco#items calls it (XEP-0030 §4)
    handler: ComponentHandler


class Router:
    def __init__(
        self,
        hosts: Iterable[str],
        bus: EventBus,
        sessions: SessionRegistry,
        iq: IqDispatcher,
    ) -> None:
        self.hosts = frozenset(hosts)
        self.bus = bus
        self.sessions = sessions
        self.iq = iq
        self._components: dict[str, Component] = {}

    def add_component(self, domain: str, handler: ComponentHandler, *, name: str = "") -> None:
        """Route stanzas addressed to `domain` (and its JIDs) to `handler`, not to s2s."""
        self._components[domain] = Component(domain, name, handler)

    def components(self) -> list[Component]:
        return sorted(self._components.values(), key=lambda c: c.domain)

    def is_local(self, jid: Jid) -> bool:
        return jid.domain in self.hosts

    # --- from a local client ---------------------------------------------------------
    async def from_client(self, session: C2SSession, stanza: Element) -> None:
        """Stamp, check and dispatch a stanza a bound client sent (RFC 6120 §8.1.2.1)."""
        attrs = stanza.attrs
        claimed = attrs.get("from")
        if claimed is not None and claimed != str(session.jid):
            try:
                claimed_jid = Jid.parse(claimed)
            except JidMalformed:
                claimed_jid = None
            if claimed_jid not in (session.jid, session.bare):
                raise StreamError(StreamErrorCondition.INVALID_FROM, "'from' is not your address")
        stanza.set("from", str(session.jid))
        name = stanza.name
        if name == "iq" and not self._valid_iq(session, stanza):
            return
        to_attr = attrs.get("to")
        if to_attr is None:
            to = None
        else:
            try:
                to = Jid.parse(to_attr)
            except JidMalformed as exc:
                self.bounce_to_session(
                    session, stanza, StanzaError(StanzaErrorCondition.JID_MALFORMED, str(exc))
                )
                return
        try:
            if name == "message":
                ev_to = to or session.bare
                if not await self.bus.fire(MessageFromClient(stanza, session.jid, ev_to, session)):
                    await self.route(stanza, session.jid, ev_to, session)
            elif name == "presence":
                broadcast = to is None
                ev = PresenceFromClient(stanza, session.jid, to or session.bare, session, broadcast)
                if not await self.bus.fire(ev) and not broadcast:
                    await self.route(stanza, session.jid, ev.to, session)
            elif to is None or to == session.bare:
                await self._iq_local(stanza, session.jid, session.bare, session, IqTarget.SELF)
            else:
                await self.route(stanza, session.jid, to, session)
        except StanzaError as err:
            self.bounce_to_session(session, stanza, err)

    def _valid_iq(self, session: C2SSession, stanza: Element) -> bool:
        # RFC 6120 §8.2.3: an id, a known type, and exactly one payload for get/set.
        t = stanza.attrs.get("type")
        if "id" not in stanza.attrs or t not in _IQ_TYPES:
            self.bounce_to_session(
                session,
                stanza,
                StanzaError(StanzaErrorCondition.BAD_REQUEST, "IQ needs an id and a valid type"),
            )
            return False
        if t in ("get", "set") and sum(1 for _ in stanza.elements()) != 1:
            self.bounce_to_session(
                session,
                stanza,
                StanzaError(StanzaErrorCondition.BAD_REQUEST, "IQ get/set needs exactly one child"),
            )
            return False
        return True

    def bounce_to_session(self, session: C2SSession, stanza: Element, err: StanzaError) -> None:
        if not may_bounce(stanza):
            return
        reply = error_reply(stanza, err.condition, err.text, err.type)
        if "to" not in stanza.attrs:
            reply.attrs.pop("from", None)
        reply.attrs["to"] = str(session.jid)
        session.deliver(reply)

    # --- routing ---------------------------------------------------------------------
    async def route(
        self, stanza: Element, from_: Jid, to: Jid, origin: C2SSession | None = None
    ) -> None:
        """Deliver `stanza` to `to`, locally or through the s2s layer; bounce on failure."""
        try:
            if to.domain in self.hosts:
                await self._route_local(stanza, from_, to, origin)
            elif (component := self._components.get(to.domain)) is not None:
                await component.handler(stanza, from_, to, origin)
            elif not await self.bus.fire(StanzaToRemote(stanza, from_, to, origin)):
                raise StanzaError(
                    StanzaErrorCondition.REMOTE_SERVER_NOT_FOUND, f"no route to {to.domain}"
                )
        except StanzaError as err:
            await self.bounce(stanza, from_, to, err)

    async def bounce(self, stanza: Element, from_: Jid, to: Jid, err: StanzaError) -> None:
        """Send `stanza`'s sender the error answer (never for errors and IQ results)."""
        if not may_bounce(stanza):
            return
        reply = error_reply(stanza, err.condition, err.text, err.type)
        reply.attrs["from"] = str(to)
        reply.attrs["to"] = str(from_)
        log.debug("bounce %s from %s to %s: %s", stanza.name, from_, to, err.condition)
        await self.route(reply, to, from_)

    async def _route_local(
        self, stanza: Element, from_: Jid, to: Jid, origin: C2SSession | None
    ) -> None:
        name = stanza.name
        if to.local is None:
            if name == "iq":
                await self._iq_local(stanza, from_, to, origin, IqTarget.HOST)
            elif name == "message":
                await self._fire_or(MessageToHost(stanza, from_, to, origin), None)
            else:
                await self.bus.fire(PresenceToHost(stanza, from_, to, origin))
        elif to.resource is None:
            if name == "message":
                await self._fire_or(
                    MessageToBare(stanza, from_, to, origin),
                    StanzaErrorCondition.SERVICE_UNAVAILABLE,
                )
            elif name == "presence":
                await self.bus.fire(PresenceToBare(stanza, from_, to, origin))
            elif from_.bare == to:
                await self._iq_local(stanza, from_, to, origin, IqTarget.SELF)
            elif not await self.bus.fire(IqToBare(stanza, from_, to, origin)):
                await self._iq_local(stanza, from_, to, origin, IqTarget.BARE)
        elif name == "message":
            await self._fire_or(
                MessageToFull(stanza, from_, to, origin), StanzaErrorCondition.SERVICE_UNAVAILABLE
            )
        elif name == "presence":
            await self.bus.fire(PresenceToFull(stanza, from_, to, origin))
        elif not await self.bus.fire(IqToFull(stanza, from_, to, origin)):
            session = self.sessions.get(to)
            if session is not None:
                session.deliver(stanza)
            elif stanza.attrs.get("type") in ("get", "set"):
                # RFC 6121 §8.5.3.2.3: an IQ to an unavailable full JID.
                raise StanzaError(StanzaErrorCondition.SERVICE_UNAVAILABLE)

    async def _fire_or(self, ev: StanzaEvent, condition: StanzaErrorCondition | None) -> None:
        if not await self.bus.fire(ev) and condition is not None:
            raise StanzaError(condition)

    async def _iq_local(
        self, stanza: Element, from_: Jid, to: Jid, origin: C2SSession | None, target: IqTarget
    ) -> None:
        t = stanza.attrs.get("type")
        if t not in ("get", "set"):
            return  # results and errors to the server or an account end here
        payload = next(stanza.elements(), None)
        if payload is None:
            raise StanzaError(StanzaErrorCondition.BAD_REQUEST)
        req = IqRequest(stanza, payload, IqType(t), from_, to, origin)
        result = await self.iq.dispatch(req, target)
        reply = iq_result(stanza, result)
        if "to" in stanza.attrs:
            reply.attrs["from"] = str(to)
        reply.attrs["to"] = str(from_)
        if origin is not None and from_ == origin.jid:
            origin.deliver(reply)
        else:
            await self.route(reply, to, from_)
