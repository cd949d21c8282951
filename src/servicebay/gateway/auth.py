"""Authentication and the rate limit, as FastAPI dependencies.

A key may arrive three ways; whichever it is, it never reaches a log or an audit record
(the envelope redacts the query string, and headers are not recorded).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection
from starlette.types import Scope

from servicebay.core.access import Principal
from servicebay.core.errors import Forbidden, NotAuthenticated, ServiceBayError
from servicebay.core.instance import Instance
from servicebay.gateway.context import request_context
from servicebay.gateway.limits import RateLimiter, retry_after_header
from servicebay.services.registry import ServiceRegistry

# auto_error=False: a missing key is our own 401 problem, not FastAPI's 403.
bearer_scheme = HTTPBearer(auto_error=False, description="`Authorization: Bearer bay_...`")
header_scheme = APIKeyHeader(name="X-API-Key", auto_error=False)
query_scheme = APIKeyQuery(name="api_key", auto_error=False)


class RateLimited(ServiceBayError):
    status = 429
    title = "Too Many Requests"

    def __init__(self, message: str, *, retry_after: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": self.retry_after}


def get_instance(request: Request) -> Instance:
    instance = request.app.state.instance
    assert isinstance(instance, Instance)
    return instance


def get_registry(request: Request) -> ServiceRegistry:
    registry = request.app.state.services
    assert isinstance(registry, ServiceRegistry)
    return registry


def get_rate_limiter(request: Request) -> RateLimiter:
    limiter = request.app.state.rate_limiter
    assert isinstance(limiter, RateLimiter)
    return limiter


def key_of(request: HTTPConnection) -> str | None:
    """The key a request (or WebSocket) carries, the three ways the security schemes above
    document."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials:
        return credentials
    return request.headers.get("x-api-key") or request.query_params.get("api_key")


async def admit(
    instance: Instance, limiter: RateLimiter, scope: Scope, raw: str | None
) -> Principal:
    """Who `raw` identifies, recorded in the request's context, within its rate limit."""
    if not raw:
        raise NotAuthenticated(
            "an API key is required: send `Authorization: Bearer <key>`, `X-API-Key: <key>` "
            "or `?api_key=<key>`"
        )
    principal = await instance.authenticator.authenticate(raw.strip())
    context = request_context(scope)
    context.actor, context.key_id = principal.email, principal.key_id
    wait = limiter.acquire(principal.key_id)
    if wait:
        raise RateLimited(
            f"this key is over its rate limit; retry in {retry_after_header(wait)} s",
            retry_after=retry_after_header(wait),
        )
    return principal


async def authenticate(
    request: Request,
    # The schemes document the three ways in OpenAPI; `key_of` reads whichever came.
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    _header: Annotated[str | None, Depends(header_scheme)],
    _query: Annotated[str | None, Depends(query_scheme)],
) -> Principal:
    return await admit(
        get_instance(request), get_rate_limiter(request), request.scope, key_of(request)
    )


Caller = Annotated[Principal, Depends(authenticate)]


def require_admin(caller: Principal, to: str) -> None:
    if not caller.admin:
        raise Forbidden(f"admin rights are required to {to}")
