"""What every API module shares: a transaction per request, paging parameters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, TypeVar

from fastapi import Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from servicebay.core.pagination import MAX_LIMIT
from servicebay.core.pagination import Page as CorePage
from servicebay.gateway.auth import get_instance
from servicebay.gateway.context import RequestContext, request_context
from servicebay.gateway.schemas import Page

API = "/api/v1"

T = TypeVar("T")
Out = TypeVar("Out")

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[str | None, Query(max_length=200, description="`next` of the previous page.")]


@asynccontextmanager
async def transaction(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction, committed when the block ends without an error."""
    async with get_instance(request).sessions() as session, session.begin():
        yield session


def audit_change(request: Request) -> RequestContext:
    return request_context(request.scope)


def page(items: CorePage[T], convert: Callable[[T], Out]) -> Page[Out]:
    return Page[Out](data=[convert(item) for item in items.items], next=items.next)


def listing(items: Sequence[T], convert: Callable[[T], Out]) -> Page[Out]:
    return Page[Out](data=[convert(item) for item in items], next=None)
