"""XEP-0199: XMPP Ping."""

from __future__ import annotations

from imedge.protocol import ns
from imedge.protocol.element import Element
from imedge.server.context import ServerContext
from imedge.server.iq import IqRequest, IqTarget


async def _pong(req: IqRequest) -> Element | None:
    return None


def install(ctx: ServerContext) -> None:
    # XEP-0199 §4.2 (client to server) and §4.3 (to an account, answered by the server
    # when no resource is addressed).
    ctx.iq.register(ns.PING, _pong, targets=IqTarget.HOST | IqTarget.SELF | IqTarget.BARE)
