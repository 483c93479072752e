"""XEP-0198: Stream Management (placeholder until written)."""

from __future__ import annotations

from typing import Any

from imedge.server.c2s.stream import C2SContext
from imedge.server.context import ServerContext


class StreamManager:
    def __init__(self, c2s: C2SContext, ctx: ServerContext) -> None:
        self.c2s = c2s
        self.ctx = ctx

    def hibernate(self, stream: Any, session: Any) -> bool:
        return False

    async def handle(self, stream: Any, el: Any) -> None:
        return None

    async def shutdown(self) -> None:
        return None
