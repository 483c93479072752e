"""XEP-0280: Message Carbons (urn:xmpp:carbons:2).

A resource that enables carbons gets, wrapped in XEP-0297 `<forwarded/>`, a copy of every
eligible message its account sends from another resource (`<sent/>`, §8) and of every
eligible message the account receives on another resource (`<received/>`, §7). Received
copies follow the RFC 6121 delivery decision of `imedge.features.messages`, through its
`MessageDelivering` event, so that exactly the resources that did not get the original
get a copy.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from imedge.domain.errors import StanzaError, StanzaErrorCondition
from imedge.domain.jid import Jid
from imedge.features.messages import MessageDelivering
from imedge.protocol import ns
from imedge.protocol.element import Element
from imedge.protocol.stanza import IqType, MessageType
from imedge.server.context import ServerContext
from imedge.server.events import Priority
from imedge.server.iq import IqRequest, IqTarget
from imedge.server.session import C2SSession
from imedge.server.stanzas import MessageFromClient

log = logging.getLogger(__name__)


class CarbonKind(StrEnum):
    SENT = "sent"  # §8: sent by another resource of the account
    RECEIVED = "received"  # §7: received by another resource of the account


def is_eligible(stanza: Element) -> bool:
    """§6, the suggested rules: IM messages only, minus those asked not to be copied."""
    mtype = MessageType.of(stanza)
    if mtype is MessageType.CHAT:
        pass
    elif mtype is MessageType.NORMAL:
        if stanza.find("body", stanza.ns) is None:
            return False
    else:
        # Groupchat, headline and error messages are not copied; copying errors would
        # need tracking which message each one answers (§6 says so too).
        return False
    if stanza.find_ns(ns.CARBONS) is not None:
        return False  # <private/> (§9), or already a carbon: never copy a copy
    if stanza.find("no-copy", ns.HINTS) is not None:
        return False  # XEP-0334 §4.3
    # §6: nothing a MUC room sends is copied, its private messages included.
    return stanza.find("x", ns.MUC_USER) is None


def _in_client_ns(el: Element) -> Element:
    """`el` as a `jabber:client` stanza: one from a server stream is `jabber:server`, which
    inside `<forwarded/>` would otherwise be written with its own namespace."""
    if el.ns != ns.SERVER:
        return el
    return Element(
        el.name,
        ns.CLIENT,
        dict(el.attrs),
        [_in_client_ns(c) if isinstance(c, Element) else c for c in el.children],
    )


def wrap(kind: CarbonKind, original: Element, user: Jid, session: C2SSession) -> Element:
    """The carbon for `session`: from the bare JID, same type, the original forwarded."""
    attrs = {"from": str(user), "to": str(session.jid)}
    mtype = original.get("type")
    if mtype is not None:
        attrs["type"] = mtype
    carbon = Element("message", ns.CLIENT, attrs)
    carbon.sub(str(kind), ns.CARBONS).sub("forwarded", ns.FORWARD).add(_in_client_ns(original))
    return carbon


def install(ctx: ServerContext) -> None:
    def carbon_sessions(user: Jid, exclude: list[C2SSession]) -> list[C2SSession]:
        return [s for s in ctx.sessions.sessions_of(user) if s.carbons and s not in exclude]

    async def toggle(req: IqRequest) -> Element | None:
        # §4 and §5: only a client of this server changes its own session's setting.
        session = req.origin
        if session is None or req.from_ != session.jid:
            raise StanzaError(StanzaErrorCondition.NOT_ALLOWED)
        if req.payload.name == "enable":
            session.carbons = True
        elif req.payload.name == "disable":
            session.carbons = False
        else:
            raise StanzaError(StanzaErrorCondition.BAD_REQUEST)
        log.debug("carbons %sd for %s", req.payload.name, session.jid)
        return None

    def on_sent(ev: MessageFromClient) -> None:
        # §8: copies go to the sender's other carbons-enabled resources, whether or not
        # the sending resource enabled carbons. Returns None: routing goes on.
        sender = ev.origin
        if sender is None or ev.to.bare == ev.from_.bare:
            # To one's own account the resources get the original already.
            return
        if not is_eligible(ev.stanza):
            return
        targets = carbon_sessions(sender.bare, [sender])
        if not targets:
            return
        # A copy: features down the route may still adjust the original.
        original = ev.stanza.copy()
        for session in targets:
            session.deliver(wrap(CarbonKind.SENT, original, sender.bare, session))

    def on_delivering(ev: MessageDelivering) -> None:
        stanza = ev.stanza
        private = stanza.find_all("private", ns.CARBONS)
        if private:
            # §9: no copies of a private message, and the receiving server removes the
            # marker before delivering it.
            for el in private:
                stanza.remove(el)
            return
        user = ev.to.bare
        if ev.from_.bare == user or not is_eligible(stanza):
            return
        # §7: every carbons-enabled resource that does not get the original.
        for session in carbon_sessions(user, ev.sessions):
            session.deliver(wrap(CarbonKind.RECEIVED, stanza, user, session))

    ctx.iq.register(ns.CARBONS, toggle, types=(IqType.SET,), targets=IqTarget.SELF)
    ctx.bus.subscribe(MessageFromClient, on_sent, priority=Priority.PRE)
    ctx.bus.subscribe(MessageDelivering, on_delivering, priority=Priority.NORMAL)
