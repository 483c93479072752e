"""XEP-0030: Service Discovery, for the server and for accounts."""

from __future__ import annotations

from imedge.domain.errors import StanzaError, StanzaErrorCondition
from imedge.protocol import ns
from imedge.protocol.element import Element
from imedge.server.context import ServerContext
from imedge.server.iq import IqRequest, IqTarget

# What the server itself supports (XEP-0030 §3.1); features add to these sets.
SERVER_FEATURES = (
    ns.DISCO_INFO,
    ns.DISCO_ITEMS,
    ns.PING,
    ns.VERSION,
    ns.BLOCKING,
    ns.CARBONS,
    "urn:xmpp:sm:3",
    ns.ROSTER_VER,
    "msgoffline",
)
# What the server answers on behalf of an account (XEP-0030 §3.1, a bare JID).
ACCOUNT_FEATURES = (ns.DISCO_INFO, ns.DISCO_ITEMS, ns.PING)


def _info(node: str | None, identity: tuple[str, str, str], features: tuple[str, ...]) -> Element:
    q = Element("query", ns.DISCO_INFO)
    if node:
        raise StanzaError(StanzaErrorCondition.ITEM_NOT_FOUND)
    category, type_, name = identity
    q.sub("identity", attrs={"category": category, "type": type_, "name": name})
    for f in sorted(features):
        q.sub("feature", attrs={"var": f})
    return q


def install(ctx: ServerContext) -> None:
    async def host_info(req: IqRequest) -> Element | None:
        return _info(req.payload.get("node"), ("server", "im", "IM Edge"), SERVER_FEATURES)

    async def host_items(req: IqRequest) -> Element | None:
        if req.payload.get("node"):
            raise StanzaError(StanzaErrorCondition.ITEM_NOT_FOUND)
        q = Element("query", ns.DISCO_ITEMS)
        # XEP-0030 §4.1: the services on our subdomains (the corporate directory...).
        suffix = "." + req.to.domain
        for component in ctx.router.components():
            if component.domain.endswith(suffix):
                item = {"jid": component.domain}
                if component.name:
                    item["name"] = component.name
                q.sub("item", attrs=item)
        return q

    async def account_info(req: IqRequest) -> Element | None:
        # Answer only for accounts that exist, and only to those who may know it exists:
        # the account itself, or a contact with a presence subscription (XEP-0030 §3.1).
        user = req.to.bare
        if req.from_.bare != user:
            item = await ctx.store.rosters.get_item(user, req.from_.bare)
            if item is None or item.subscription not in ("from", "both"):
                raise StanzaError(StanzaErrorCondition.SERVICE_UNAVAILABLE)
        elif await ctx.store.accounts.get(user) is None:
            raise StanzaError(StanzaErrorCondition.SERVICE_UNAVAILABLE)
        return _info(
            req.payload.get("node"), ("account", "registered", str(user)), ACCOUNT_FEATURES
        )

    async def account_items(req: IqRequest) -> Element | None:
        if req.from_.bare != req.to.bare:
            raise StanzaError(StanzaErrorCondition.SERVICE_UNAVAILABLE)
        return Element("query", ns.DISCO_ITEMS)

    ctx.iq.register(ns.DISCO_INFO, host_info, targets=IqTarget.HOST)
    ctx.iq.register(ns.DISCO_ITEMS, host_items, targets=IqTarget.HOST)
    ctx.iq.register(ns.DISCO_INFO, account_info, targets=IqTarget.SELF | IqTarget.BARE)
    ctx.iq.register(ns.DISCO_ITEMS, account_items, targets=IqTarget.SELF | IqTarget.BARE)
