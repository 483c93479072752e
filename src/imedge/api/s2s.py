"""`/api/v1/s2s`: live server-to-server streams, links per remote domain, and connection tests."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field, field_validator

from imedge.domain.jid import JidMalformed, prep_domain
from imedge.server.s2s.diagnose import diagnose
from imedge.server.s2s.pool import S2SPool


class TestRequest(BaseModel):
    domain: str = Field(description="The remote XMPP domain to try", max_length=1023)
    local: str | None = Field(
        default=None, description="Our domain to test from (default: the main one)"
    )

    @field_validator("domain", "local")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return prep_domain(value)
        except JidMalformed as exc:
            raise ValueError(f"not a valid XMPP domain: {exc}") from None


def s2s_router(pool: S2SPool, default_local: str, guard: Any) -> APIRouter:
    router = APIRouter(prefix="/api/v1/s2s", tags=["s2s"], dependencies=[Depends(guard)])

    @router.get("/streams", summary="Live server-to-server streams")
    async def streams() -> list[dict[str, object]]:
        return [info.as_dict() for info in pool.streams()]

    @router.get("/links", summary="Outbound links per remote domain: state, queue, last failure")
    async def links() -> list[dict[str, object]]:
        return [asdict(s) for s in pool.link_status()]

    @router.post("/test", summary="Try to federate with a domain and report each step")
    async def test(req: TestRequest) -> dict[str, object]:
        local = req.local or default_local
        return (await diagnose(pool, local, req.domain)).as_dict()

    return router
