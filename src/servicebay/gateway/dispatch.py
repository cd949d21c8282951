"""Calls to services, `/{service}/...`: authenticate, authorise, audit, then let through.

The service names the permission a call needs without touching its data source; the
decision is made here, before any query runs.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.convertors import Convertor, register_url_convertor

from servicebay.core.errors import Forbidden, InvalidInput, NotFound
from servicebay.gateway.auth import authenticate_request, get_instance, get_registry
from servicebay.gateway.context import request_context
from servicebay.gateway.docs import service_document
from servicebay.services.base import Service, ServiceCall
from servicebay.services.spec import RESERVED_NAMES

router = APIRouter()
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
KEY_PARAMETER = "api_key"
"""The query parameter that carries the caller's key (`?api_key=`), never passed on."""


class ServiceNameConvertor(Convertor[str]):
    """A first path segment that can name a service. The platform's own prefixes never
    match, so `/api/v1/...` keeps its 404s and 405s instead of falling through here."""

    regex = rf"(?!(?:{'|'.join(map(re.escape, RESERVED_NAMES))})(?:/|$))[a-z][a-z0-9_-]{{0,62}}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("service_name", ServiceNameConvertor())


async def _service(request: Request, name: str) -> Service:
    """The service, looked up before authentication: what exists is public (`/docs`), and
    an unknown path is a 404 for everybody."""
    service = await get_registry(request).get(name)
    if service is None:
        raise NotFound(f"nothing is served at {request.url.path}: there is no service {name!r}")
    return service


@router.get("/{service:service_name}/openapi.json", include_in_schema=False)
async def service_openapi(request: Request, service: str) -> JSONResponse:
    """One service's documentation, on its own (also merged into `/openapi.json`)."""
    return JSONResponse(service_document(await _service(request, service)))


@router.api_route("/{service:service_name}/{path:path}", methods=METHODS, include_in_schema=False)
async def call_service(request: Request, service: str, path: str) -> Response:
    target = await _service(request, service)
    caller = await authenticate_request(request)
    call = ServiceCall(
        method=request.method,
        path=_segments(request, service),
        # Only the caller's own key is the gateway's: a service may have a column called
        # `token` or `key` to filter on (logs and audit records still redact those).
        query=[
            (name, value)
            for name, value in request.query_params.multi_items()
            if name.lower() != KEY_PARAMETER
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
