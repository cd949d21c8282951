"""The seam between the gateway and every kind of service."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ServiceCall:
    """One request to a service, stripped of HTTP plumbing and of the caller's key."""

    method: str
    path: tuple[str, ...]
    """The segments after `/{service}/`, URL-decoded: `("customer", "julius@nyknicks.com")`."""
    query: Sequence[tuple[str, str]] = ()
    """Query parameters in order, repeated names kept (the key, if passed, is removed)."""
    body: Any = None
    """The parsed JSON body, or None when there was none."""
    request_id: str = "-"


@dataclass
class ServiceReply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Permission:
    """What a call needs: `action` on `resource` (e.g. `read` on `service:sql/customer`)."""

    resource: str
    action: str


class Service(Protocol):
    name: str
    description: str

    def permission_for(self, call: ServiceCall) -> Permission:
        """The permission `call` needs; raises NotFound for an unknown endpoint.

        It must not touch the data source: it runs before the caller is authorised.
        """
        ...

    async def handle(self, call: ServiceCall) -> ServiceReply: ...

    def openapi(self) -> dict[str, Any]:
        """This service's OpenAPI 3.1 document, paths relative to `/{name}`."""
        ...

    async def close(self) -> None: ...
