"""The `code` kind: a deployed program, mounted at `/{name}/...` from the OpenAPI document
its supervisor read and published when the version started (`runtime.code_services`).

The service knows its endpoints and the permission each call needs, so the gateway's
dispatch authenticates, authorises, audits and rate-limits a call to it like any other;
the call itself is then streamed to the supervised process by the gateway's reverse
proxy (`gateway/apps.py`), which is why `handle` is never used: a code service's body is
not the gateway's to parse.

Endpoints are named by the literal segments of their OpenAPI path, placeholders left
out: `/create_customer` is `create_customer`, `/customer/{email}` is `customer`. A call
needs `read` (GET, HEAD), `create` (POST), `update` (PUT, PATCH) or `delete` (DELETE) on
`service:{name}/{endpoint}`; `invoke` covers them all.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from servicebay.core.errors import MethodNotAllowed, NotFound, ServiceUnavailable
from servicebay.services.base import Permission, ServiceCall, ServiceReply
from servicebay.services.http.spec import DEFAULT_ACTIONS
from servicebay.services.spec import ServiceSpec

ACTION_OF_METHOD = {
    **DEFAULT_ACTIONS,
    "HEAD": "read",
}
"""The action a call needs, by its method, as for an sql table."""


class CodeServiceSpec(ServiceSpec):
    """What the supervisor publishes once a version's OpenAPI is accepted."""

    kind: Literal["code"]
    deployment_version: int = Field(ge=1, description="The version the document describes.")
    openapi: dict[str, Any] = Field(description="The program's own OpenAPI document.")


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    segments: tuple[str | None, ...]
    """Each path segment: its literal text, or None for a `{placeholder}`."""

    def matches(self, path: tuple[str, ...]) -> bool:
        return len(path) == len(self.segments) and all(
            literal is None or literal == given
            for literal, given in zip(self.segments, path, strict=True)
        )


def endpoints_of(document: dict[str, Any]) -> list[Endpoint]:
    """Every operation of the document, most literal first (so `/customer/new` wins over
    `/customer/{email}`)."""
    found = []
    for path, operations in document.get("paths", {}).items():
        if not isinstance(path, str) or not isinstance(operations, dict):
            continue
        segments = tuple(
            None if part.startswith("{") and part.endswith("}") else part
            for part in path.strip("/").split("/")
            if part
        )
        name = "/".join(part for part in segments if part is not None) or "root"
        for method in operations:
            if method.upper() in ACTION_OF_METHOD:
                found.append(Endpoint(name, method.upper(), segments))
    return sorted(found, key=lambda endpoint: endpoint.segments.count(None))


class CodeService:
    """A code service as the gateway sees it: endpoints, permissions and documentation."""

    def __init__(self, spec: CodeServiceSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.description = spec.description
        self.version = spec.deployment_version
        self._endpoints = endpoints_of(spec.openapi)

    def permission_for(self, call: ServiceCall) -> Permission:
        where = "/" + "/".join(segment[:100] for segment in call.path)
        matching = [endpoint for endpoint in self._endpoints if endpoint.matches(call.path)]
        if not matching:
            raise NotFound(f"service {self.name!r} has no endpoint at {where}")
        method = "GET" if call.method.upper() == "HEAD" else call.method.upper()
        for endpoint in matching:
            if endpoint.method == method:
                return Permission(
                    f"service:{self.name}/{endpoint.name}", ACTION_OF_METHOD[endpoint.method]
                )
        allowed = sorted({endpoint.method for endpoint in matching})
        raise MethodNotAllowed(f"{method} is not allowed on {where}", allow=allowed)

    async def handle(self, call: ServiceCall) -> ServiceReply:
        raise ServiceUnavailable(f"service {self.name} is reached through the gateway's proxy")

    def openapi(self) -> dict[str, Any]:
        """The program's paths and component schemas (a copy: /docs decorates it)."""
        document = self.spec.openapi
        return {
            "paths": copy.deepcopy(document.get("paths", {})),
            "components": {
                "schemas": copy.deepcopy(document.get("components", {}).get("schemas", {}))
            },
        }

    async def close(self) -> None:
        """Nothing to close: the process belongs to its supervisor."""
