"""Authentication and the rate limit, as FastAPI dependencies.

A key may arrive three ways; whichever it is, it never reaches a log or an audit record
(the envelope redacts the query string, and headers are not recorded).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

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


async def authenticate(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    header_key: Annotated[str | None, Depends(header_scheme)],
    query_key: Annotated[str | None, Depends(query_scheme)],
) -> Principal:
    raw = (bearer.credentials if bearer else None) or header_key or query_key
    if not raw:
        raise NotAuthenticated(
            "an API key is required: send `Authorization: Bearer <key>`, `X-API-Key: <key>` "
            "or `?api_key=<key>`"
        )
    principal = await get_instance(request).authenticator.authenticate(raw.strip())
    context = request_context(request.scope)
    context.actor, context.key_id = principal.email, principal.key_id
    wait = get_rate_limiter(request).acquire(principal.key_id)
    if wait:
        raise RateLimited(
            f"this key is over its rate limit; retry in {retry_after_header(wait)} s",
            retry_after=retry_after_header(wait),
        )
    return principal


Caller = Annotated[Principal, Depends(authenticate)]


async def authenticate_request(request: Request) -> Principal:
    """`authenticate`, for a route that must first find out whether it serves anything."""
    return await authenticate(
        request,
        await bearer_scheme(request),
        await header_scheme(request),
        await query_scheme(request),
    )


def require_admin(caller: Principal, to: str) -> None:
    if not caller.admin:
        raise Forbidden(f"admin rights are required to {to}")
