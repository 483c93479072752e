"""XEP-0092: Software Version."""

from __future__ import annotations

import platform

from imedge.protocol import ns
from imedge.protocol.element import Element
from imedge.server.context import ServerContext
from imedge.server.iq import IqRequest, IqTarget


def install(ctx: ServerContext) -> None:
    async def version(req: IqRequest) -> Element | None:
        q = Element("query", ns.VERSION)
        q.sub("name", text="IM Edge")
        q.sub("version", text=ctx.version)
        q.sub("os", text=platform.system())
        return q

    ctx.iq.register(ns.VERSION, version, targets=IqTarget.HOST)
