"""Calls to services, `/{service}/...`: authenticate, authorise, audit, then let through.

This is the hot path, so it is plain ASGI in front of the FastAPI app rather than a
route inside it: a service call needs none of FastAPI's routing, dependency solving or
response validation, and skipping them is most of the gateway's cost per call. The
platform's own prefixes are reserved names, so they always fall through to FastAPI.

The service names the permission a call needs without touching its data source; the
decision is made here, before any query runs. A code service's call, once admitted, is
handed to the hosted servers' reverse proxy (`gateway.apps.Proxied`) rather than parsed:
its body streams to the supervised process untouched.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from servicebay.core.access import Principal
from servicebay.core.errors import (
    Forbidden,
    InvalidInput,
    MethodNotAllowed,
    NotFound,
    ServiceBayError,
    ServiceUnavailable,
)
from servicebay.core.instance import Instance
from servicebay.gateway.apps import Apps, Proxied
from servicebay.gateway.auth import admit, key_of
from servicebay.gateway.context import request_context
from servicebay.gateway.docs import service_document
from servicebay.gateway.limits import RateLimiter
from servicebay.gateway.problems import error_response
from servicebay.services.base import Service, ServiceCall
from servicebay.services.code import CodeService
from servicebay.services.registry import ServiceRegistry
from servicebay.services.spec import RESERVED_NAMES

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
KEY_PARAMETER = "api_key"
"""The query parameter that carries the caller's key (`?api_key=`), never passed on."""
SERVICE_PATH = re.compile(r"^/([a-z][a-z0-9_-]{0,62})/")
ROUTE = "/{service}/{path}"
"""The route template the envelope reports for metrics and audit."""


class ServiceCalls:
    """Answers `/{service}/...` itself and passes every other request to `app`."""

    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app = app
        self.state = state
        """The FastAPI app's `state`, which its lifespan fills with the instance."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = _service_name(scope)
        if name is None:
            await self.app(scope, receive, send)
            return
        scope["route_path"] = ROUTE
        request = Request(scope, receive)
        try:
            response = await self._answer(request, name)
        except ServiceBayError as error:
            response = error_response(scope, error)
        await response(scope, receive, send)

    async def _answer(self, request: Request, name: str) -> ASGIApp:
        service = await self._service(request, name)
        segments = _segments(request.scope)
        if segments == ("openapi.json",) and request.method in ("GET", "HEAD"):
            return JSONResponse(service_document(service))
        if request.method not in METHODS:
            raise MethodNotAllowed(
                f"{request.method} is not allowed on {request.url.path}",
                allow=sorted(METHODS),
            )
        instance: Instance = self.state.instance
        limiter: RateLimiter = self.state.rate_limiter
        caller = await admit(instance, limiter, request.scope, key_of(request))
        if isinstance(service, CodeService):
            return await self._proxied(request, service, segments, caller)
        call = ServiceCall(
            method="GET" if request.method == "HEAD" else request.method,
            path=segments,
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
        await self._authorize(request, service, call, caller)
        reply = await service.handle(call)
        if reply.status == 204 or reply.body is None:
            return Response(status_code=reply.status, headers=reply.headers)
        return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)

    async def _authorize(
        self, request: Request, service: Service, call: ServiceCall, caller: Principal
    ) -> None:
        """Forbidden (audited as denied) unless the caller holds the permission `call` needs."""
        instance: Instance = self.state.instance
        permission = service.permission_for(call)
        context = request_context(request.scope)
        context.record(f"service.{permission.action}", permission.resource)
        decision = await instance.authorizer.decide(
            caller.subject, permission.resource, permission.action
        )
        if not decision.allowed:
            raise Forbidden(
                f"you need `{permission.action}` on `{permission.resource}`: {decision.reason}"
            )
        context.detail["grant"] = decision.grant

    async def _proxied(
        self, request: Request, service: CodeService, segments: tuple[str, ...], caller: Principal
    ) -> ASGIApp:
        """A code-service call, admitted on its method and path alone (its body is the
        program's), handed to the proxy of supervised processes."""
        call = ServiceCall(
            method=request.method,
            path=segments,
            request_id=request_context(request.scope).request_id,
        )
        await self._authorize(request, service, call, caller)
        apps: Apps = self.state.apps
        app = await apps.find(service.name, "service")
        if app is None:
            raise ServiceUnavailable(f"service {service.name} has no deployment serving it")
        return Proxied(apps, app, f"/{service.name}", caller)

    async def _service(self, request: Request, name: str) -> Service:
        """The service, looked up before authentication: what exists is public (`/docs`),
        and an unknown path is a 404 for everybody."""
        registry: ServiceRegistry = self.state.services
        service = await registry.get(name)
        if service is None:
            raise NotFound(f"nothing is served at {request.url.path}: there is no service {name!r}")
        return service


def _service_name(scope: Scope) -> str | None:
    """The service a request is for, if its first path segment can name one."""
    if scope["type"] != "http":
        return None
    match = SERVICE_PATH.match(scope["path"])
    if match is None or match.group(1) in RESERVED_NAMES:
        return None
    return match.group(1)


def _segments(scope: Scope) -> tuple[str, ...]:
    """Path segments after `/{service}/`, each decoded on its own, so that an encoded
    `/` (`%2F`) stays inside its segment (a key may contain one)."""
    raw = scope.get("raw_path") or scope["path"].encode()
    rest = raw.decode("latin-1").split("?", 1)[0].split("/")[2:]
    return tuple(unquote(segment) for segment in rest if segment != "")


async def _json_body(request: Request) -> Any:
    if request.method in ("GET", "HEAD") and not _has_body(request):
        return None
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


def _has_body(request: Request) -> bool:
    headers = request.headers
    return "transfer-encoding" in headers or headers.get("content-length", "0") != "0"
