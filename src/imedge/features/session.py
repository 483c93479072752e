"""RFC 3921 §3 session establishment, kept for old clients (RFC 6121 Appendix E).

The stream features mark it `<optional/>`; a client that still asks gets an empty result.
"""

from __future__ import annotations

from imedge.protocol import ns
from imedge.protocol.element import Element
from imedge.protocol.stanza import IqType
from imedge.server.context import ServerContext
from imedge.server.iq import IqRequest, IqTarget


async def _established(req: IqRequest) -> Element | None:
    return None


def install(ctx: ServerContext) -> None:
    ctx.iq.register(
        ns.SESSION, _established, types=(IqType.SET,), targets=IqTarget.HOST | IqTarget.SELF
    )
