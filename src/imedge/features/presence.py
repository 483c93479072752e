"""Placeholder until the module is written."""

from __future__ import annotations

from imedge.server.context import ServerContext


def install(ctx: ServerContext) -> None:
    return None
