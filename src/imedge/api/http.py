"""The HTTP listener: health, metrics (and the admin REST API as it grows)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Generator, Sequence

import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


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
    return app


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
