"""The kinds of service, each a spec model and a factory: the seam where a kind plugs in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from servicebay.core.errors import InvalidInput
from servicebay.services.base import Service
from servicebay.services.code import CodeService, CodeServiceSpec
from servicebay.services.http.service import HttpService
from servicebay.services.http.spec import HttpServiceSpec
from servicebay.services.spec import ServiceSpec, validation_errors
from servicebay.services.sql.service import SqlService
from servicebay.services.sql.spec import SqlServiceSpec

SecretReader = Callable[[str], Awaitable[str]]
"""Reads a secret by name, for this service only (its allow-list is checked)."""


@dataclass(frozen=True)
class ServiceKind:
    spec: type[ServiceSpec]
    build: Callable[[Any, SecretReader], Awaitable[Service]]


async def _build_sql(spec: SqlServiceSpec, read_secret: SecretReader) -> Service:
    return await SqlService.connect(spec, await read_secret(spec.secret))


async def _build_http(spec: HttpServiceSpec, read_secret: SecretReader) -> Service:
    # No call upstream here: a SaaS API that is down must not stop its registration.
    return HttpService(spec, await read_secret(spec.secret) if spec.secret else None)


async def _build_code(spec: CodeServiceSpec, read_secret: SecretReader) -> Service:
    # Its secrets go to its process (the supervisor's), never to the gateway.
    return CodeService(spec)


KINDS: dict[str, ServiceKind] = {
    "sql": ServiceKind(SqlServiceSpec, _build_sql),
    "http": ServiceKind(HttpServiceSpec, _build_http),
    "code": ServiceKind(CodeServiceSpec, _build_code),
}
REGISTERED_KINDS = ("sql", "http")
"""Kinds registered from a document (`POST /api/v1/services`); a code service is deployed,
and its record published by its supervisor."""


def parse_spec(document: Any) -> ServiceSpec:
    if not isinstance(document, dict):
        raise InvalidInput("a service document is a JSON object")
    kind = document.get("kind")
    if kind == "code" and "openapi" not in document:
        raise InvalidInput(
            "a code service is a program: deploy its folder with `bay deploy FOLDER` "
            "(POST /api/v1/deployments); it is mounted once its version serves",
            errors=[{"loc": ["body", "kind"], "msg": "deploy it", "type": "value_error"}],
        )
    if kind not in KINDS:
        raise InvalidInput(
            f"unknown service kind {kind!r}; this platform serves: {', '.join(sorted(KINDS))}",
            errors=[{"loc": ["body", "kind"], "msg": "unknown kind", "type": "value_error"}],
        )
    try:
        return KINDS[kind].spec.model_validate(document)
    except ValidationError as error:
        raise validation_errors(error) from None
