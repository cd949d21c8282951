from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from servicebay.core import audit
from servicebay.core.access import Principal
from servicebay.core.errors import InvalidInput
from servicebay.gateway.api.common import API, Cursor, Limit, page, transaction
from servicebay.gateway.auth import Caller, get_instance, require_admin
from servicebay.gateway.schemas import AuditEventOut, Page, VerificationOut

router = APIRouter(prefix=f"{API}/audit", tags=["audit"])


def _utc(moment: datetime | None, name: str) -> datetime | None:
    if moment is None:
        return None
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(
            f"{name} is out of range",
            errors=[{"loc": ["query", name], "msg": "out of range", "type": "value_error"}],
        ) from None


def audit_filter(
    actor: Annotated[str | None, Query(max_length=320)] = None,
    resource: Annotated[str | None, Query(max_length=1000)] = None,
    action: Annotated[str | None, Query(max_length=200)] = None,
    outcome: Literal["allowed", "denied", "error"] | None = None,
    since: Annotated[datetime | None, Query(description="ISO 8601; UTC when no offset.")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601, exclusive.")] = None,
) -> audit.AuditFilter:
    return audit.AuditFilter(
        actor, resource, action, outcome, _utc(since, "since"), _utc(until, "until")
    )


Filter = Annotated[audit.AuditFilter, Depends(audit_filter)]


def _visible_to(caller: Principal, where: audit.AuditFilter) -> audit.AuditFilter:
    if caller.admin:
        return where
    return audit.AuditFilter(
        caller.email, where.resource, where.action, where.outcome, where.since, where.until
    )


@router.get("", response_model=Page[AuditEventOut], summary="Query the audit log")
async def list_events(
    request: Request, caller: Caller, where: Filter, limit: Limit = 100, cursor: Cursor = None
) -> Page[AuditEventOut]:
    """Newest first. Admins see everything; anyone else sees their own events."""
    async with transaction(request) as session:
        events = await audit.query(session, _visible_to(caller, where), limit=limit, cursor=cursor)
    return page(events, AuditEventOut.of)


@router.get(
    "/export",
    summary="Export the audit log as JSON lines",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def export_events(request: Request, caller: Caller, where: Filter) -> StreamingResponse:
    """Oldest first, one event per line, streamed however long the log is."""
    require_admin(caller, "export the audit log")
    sessions = get_instance(request).sessions

    async def lines() -> AsyncIterator[bytes]:
        async with sessions() as session:
            async for event in audit.scan(session, where):
                yield AuditEventOut.of(event).model_dump_json().encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get("/verify", response_model=VerificationOut, summary="Verify the audit chain")
async def verify_chain(request: Request, caller: Caller) -> VerificationOut:
    """Recomputes every hash: reports edited, missing, inserted or cut-off events."""
    require_admin(caller, "verify the audit log")
    async with transaction(request) as session:
        return VerificationOut.of(await audit.verify(session))
