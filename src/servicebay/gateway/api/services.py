"""Registering services: a `service.json` document in, a live REST service out."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Request, Response
from fastapi.responses import JSONResponse

from servicebay.gateway.api.common import API, audit_change, listing
from servicebay.gateway.auth import Caller, get_registry, require_admin
from servicebay.gateway.schemas import Page, ServiceOut

router = APIRouter(prefix=f"{API}/services", tags=["services"])
ServiceName = Annotated[str, Path(max_length=63)]
EXAMPLE = {
    "name": "sql",
    "kind": "sql",
    "description": "The sales database",
    "secret": "SALES_DB_URL",
    "tables": {"customer": {"key": "email", "operations": ["read"]}},
}


@router.post(
    "",
    status_code=201,
    response_model=ServiceOut,
    summary="Register or update a service",
    responses={200: {"model": ServiceOut, "description": "An existing service was updated."}},
)
async def register_service(
    request: Request,
    caller: Caller,
    document: Annotated[dict[str, Any], Body(examples=[EXAMPLE])],
) -> JSONResponse:
    """Validates the document, connects to the data source to check it, and serves the
    service at `/{name}/...` as a new version (201 when new, 200 when replaced)."""
    require_admin(caller, "register services")
    record, created = await get_registry(request).register(document, actor=caller.email)
    audit_change(request).record(
        "service.create" if created else "service.update",
        f"service:{record.name}",
        kind=record.kind,
        version=record.version,
    )
    body = ServiceOut.of(record).model_dump(mode="json")
    return JSONResponse(body, status_code=201 if created else 200)


@router.get("", response_model=Page[ServiceOut], summary="List services")
async def list_services(request: Request, caller: Caller) -> Page[ServiceOut]:
    """Every registered service: what exists is no secret; calling it needs a grant."""
    return listing(await get_registry(request).records(), ServiceOut.of)


@router.get("/{name}", response_model=ServiceOut, summary="Show a service")
async def get_service(request: Request, name: ServiceName, caller: Caller) -> ServiceOut:
    return ServiceOut.of(await get_registry(request).record(name))


@router.delete("/{name}", status_code=204, summary="Remove a service")
async def delete_service(request: Request, name: ServiceName, caller: Caller) -> Response:
    require_admin(caller, "remove services")
    await get_registry(request).delete(name)
    audit_change(request).record("service.delete", f"service:{name}")
    return Response(status_code=204)
