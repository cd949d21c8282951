"""Liveness, readiness and metrics: unauthenticated, unaudited, cheap."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from servicebay.core.migrate import current_revision, head_revision
from servicebay.gateway.auth import get_instance

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: database reachable and migrated, audit running")
async def readyz(request: Request) -> JSONResponse:
    instance = get_instance(request)
    checks: dict[str, str] = {}
    try:
        async with instance.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        revision = await current_revision(instance.engine)
        checks["database"] = "ok"
        checks["schema"] = "ok" if revision == head_revision() else f"at {revision}, not head"
    except Exception as error:  # readiness reports, it never raises
        checks["database"] = f"unreachable: {type(error).__name__}"
    checks["audit"] = "ok" if instance.audit.running else "stopped"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
