"""Calls to services, `/{service}/...`: authenticate, authorise, audit, then let through.

The service names the permission a call needs without touching its data source; the
decision is made here, before any query runs.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from servicebay.core.errors import Forbidden, InvalidInput, NotFound
from servicebay.core.redaction import SENSITIVE_PARAMETERS
from servicebay.gateway.auth import Caller, get_instance, get_registry
from servicebay.gateway.context import request_context
from servicebay.gateway.docs import service_document
from servicebay.services.base import Service, ServiceCall

router = APIRouter()
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


async def _service(request: Request, name: str) -> Service:
    service = await get_registry(request).get(name)
    if service is None:
        raise NotFound(f"no service named {name}")
    return service


@router.get("/{service}/openapi.json", include_in_schema=False)
async def service_openapi(request: Request, service: str) -> JSONResponse:
    """One service's documentation, on its own (also merged into `/openapi.json`)."""
    return JSONResponse(service_document(await _service(request, service)))


@router.api_route("/{service}/{path:path}", methods=METHODS, include_in_schema=False)
async def call_service(request: Request, service: str, path: str, caller: Caller) -> Response:
    target = await _service(request, service)
    call = ServiceCall(
        method=request.method,
        path=_segments(request, service),
        query=[
            (name, value)
            for name, value in request.query_params.multi_items()
            if name.lower() not in SENSITIVE_PARAMETERS
        ],
        body=await _json_body(request),
        request_id=request_context(request.scope).request_id,
    )
    permission = target.permission_for(call)
    context = request_context(request.scope)
    context.record(f"service.{permission.action}", permission.resource)
    decision = await get_instance(request).authorizer.decide(
        caller.subject, permission.resource, permission.action
    )
    if not decision.allowed:
        raise Forbidden(
            f"you need `{permission.action}` on `{permission.resource}`: {decision.reason}"
        )
    context.detail["grant"] = decision.grant
    reply = await target.handle(call)
    if reply.status == 204 or reply.body is None:
        return Response(status_code=reply.status, headers=reply.headers)
    return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)


def _segments(request: Request, service: str) -> tuple[str, ...]:
    """Path segments after `/{service}/`, each decoded on its own, so that an encoded
    `/` (`%2F`) stays inside its segment (a key may contain one)."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    rest = raw.decode("latin-1").split("?", 1)[0].split("/")[2:]
    return tuple(unquote(segment) for segment in rest if segment != "")


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        where = (
            f"line {error.lineno}, column {error.colno}"
            if isinstance(error, json.JSONDecodeError)
            else "encoding"
        )
        raise InvalidInput(
            f"the body is not valid JSON ({where})",
            errors=[{"loc": ["body"], "msg": "invalid JSON", "type": "json_invalid"}],
        ) from None
