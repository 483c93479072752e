"""`/api/v1/s2s`: live server-to-server streams, links per remote domain, and connection
tests (RFC 6120 §13), for `imedge s2s` and the operators' own tools."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field, field_validator

from imedge.domain.jid import JidMalformed, prep_domain
from imedge.server.s2s.diagnose import StepName, diagnose
from imedge.server.s2s.pool import S2SPool


class StreamOut(BaseModel):
    """One live server-to-server stream."""

    id: str
    direction: Literal["in", "out"]
    local: str = Field(description="Our domain on this stream")
    remote: str | None = Field(description="The peer's domain (claimed until authenticated)")
    peer: str = Field(description="The peer's address, ip:port")
    age_seconds: float
    tls_version: str | None
    auth: Literal["none", "sasl-external", "dialback"] = Field(
        description="How the peer (inbound) or we (outbound) authenticated"
    )
    certificate: str | None = Field(
        description="valid, no_certificate, untrusted, expired or name_mismatch"
    )
    certificate_detail: str | None
    authenticated_domains: list[str]
    stanzas_in: int
    stanzas_out: int


class LinkOut(BaseModel):
    """The outbound link to one remote domain."""

    local: str
    remote: str
    state: Literal["connected", "connecting", "failed", "idle"]
    queued: int = Field(description="Stanzas waiting for the link to connect")
    last_success: float | None = Field(description="Unix time of the last connection")
    last_failure: float | None = Field(description="Unix time of the last failure")
    last_error: str | None = Field(description="Where and why the last attempt failed")
    retry_in: float | None = Field(description="Seconds until the next attempt is allowed")


class StepOut(BaseModel):
    step: StepName
    ok: bool
    detail: str


class DiagnosisOut(BaseModel):
    """The outcome of a connection test, step by step, and a paragraph for humans."""

    local: str
    remote: str
    ok: bool
    failed_step: StepName | None
    summary: str = Field(description="What worked, what failed and what to check")
    steps: list[StepOut]


class TestRequest(BaseModel):
    # Not a test class, whatever pytest's collector may think of the name.
    __test__ = False

    domain: str = Field(description="The remote XMPP domain to try", min_length=1, max_length=1023)
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


def _unprocessable(field: str, message: str) -> HTTPException:
    # The shape of FastAPI's own validation errors, so clients handle both alike.
    return HTTPException(
        422,
        detail=[{"loc": ["body", field], "msg": message, "type": "value_error"}],
    )


def s2s_router(pool: S2SPool, default_local: str, guard: Callable[..., Any]) -> APIRouter:
    router = APIRouter(prefix="/api/v1/s2s", tags=["s2s"], dependencies=[Depends(guard)])
    hosts = pool.settings.hosts

    @router.get("/streams", summary="Live server-to-server streams")
    async def streams() -> list[StreamOut]:
        return [StreamOut.model_validate(info.as_dict()) for info in pool.streams()]

    @router.get("/links", summary="Outbound links per remote domain: state, queue, last failure")
    async def links() -> list[LinkOut]:
        return [LinkOut.model_validate(s, from_attributes=True) for s in pool.link_status()]

    @router.post("/test", summary="Try to federate with a domain and report each step")
    async def test(req: TestRequest) -> DiagnosisOut:
        local = req.local or default_local
        if local not in hosts:
            raise _unprocessable("local", f"{local} is not a domain this server serves")
        if req.domain in hosts:
            raise _unprocessable("domain", f"{req.domain} is served by this server itself")
        return DiagnosisOut.model_validate((await diagnose(pool, local, req.domain)).as_dict())

    return router
