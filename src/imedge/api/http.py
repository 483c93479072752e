"""The HTTP listener: health, metrics and the admin REST API."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The admin API takes small JSON documents; a larger body is refused before it is parsed.
MAX_BODY_BYTES = 4 * 1024 * 1024
DRAIN_BYTES = 64 * 1024 * 1024


def create_app(
    *,
    version: str,
    registry: CollectorRegistry,
    check_store: Callable[[], Awaitable[None]],
    sessions: Callable[[], int],
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    app = FastAPI(
        title="IM Edge",
        version=version,
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )

    @app.get("/health", summary="Liveness and store reachability")
    async def health() -> JSONResponse:
        try:
            await check_store()
        except Exception as exc:
            return JSONResponse(
                {"status": "degraded", "store": f"unreachable: {exc}", "sessions": sessions()},
                status_code=503,
            )
        return JSONResponse(
            {"status": "ok", "store": "ok", "sessions": sessions(), "version": version}
        )

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_exception_handler(RequestValidationError, invalid_request)
    return app


async def invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 for a request that does not fit the schema, without echoing the input
    (it may be huge, or a NaN that JSON cannot carry back), and with `field` and `message`
    beside `loc` and `msg`, so that clients read it as they read the service's refusals."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": [_problem(e) for e in exc.errors()]}, status_code=422)


def _problem(error: Mapping[str, Any]) -> dict[str, object]:
    loc = [p if isinstance(p, int) else str(p) for p in error.get("loc", ())]
    where = loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc
    if error.get("type") == "json_invalid":
        where = []
    return {
        "field": ".".join(str(p) for p in where) or "body",
        "message": str(error.get("msg", "")),
        "loc": loc,
        "msg": str(error.get("msg", "")),
        "type": str(error.get("type", "")),
    }


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, chunked ones included, before the
    application reads them (uvicorn sets no limit of its own)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            size += len(chunk)
            if size > self.limit:
                # Read (and drop) the rest, up to a point, so that the client, still
                # sending, sees the answer rather than a reset connection.
                while more and size < DRAIN_BYTES:
                    message = await receive()
                    size += len(message.get("body", b""))
                    more = message["type"] == "http.request" and message.get("more_body", False)
                await self._refuse(send)
                return
            chunks.append(chunk)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        payload = json.dumps(
            {"detail": f"the request body is larger than {self.limit // 1024} KiB"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside our event loop: the process's signals stay ours."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def http_server(app: FastAPI, host: str, port: int) -> EmbeddedServer:
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
    )
    return EmbeddedServer(config)
