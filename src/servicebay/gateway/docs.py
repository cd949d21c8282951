"""API documentation served from the package itself: no CDN, so it works offline."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from servicebay.services.base import Service
from servicebay.services.registry import ServiceRegistry

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status", "detail", "request_id"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}
PROBLEM_RESPONSES = {
    "400": "Invalid input; `errors` lists each bad field.",
    "401": "No key, or a malformed, unknown, revoked or expired key, or a disabled user.",
    "403": "The key is valid but lacks the right; `detail` names it.",
    "404": "No such thing.",
    "413": "The body is too large.",
    "429": "Rate limited; retry after `Retry-After` seconds.",
}


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with the errors this gateway really answers (400, not 422)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            if operation.get("security"):
                for status, description in PROBLEM_RESPONSES.items():
                    responses.setdefault(status, _problem_response(description))
    for name in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(name, None)
    app.openapi_schema = schema
    return schema


SERVICE_SECURITY: list[dict[str, list[str]]] = [
    {"HTTPBearer": []},
    {"APIKeyHeader": []},
    {"APIKeyQuery": []},
]


def _mounted_paths(service: Service) -> tuple[dict[str, Any], dict[str, Any]]:
    """The service's paths under `/{name}`, each operation tagged and secured; and its
    component schemas."""
    document = service.openapi()
    paths: dict[str, Any] = {}
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            if isinstance(operation, dict) and "responses" in operation:
                operation.setdefault("tags", [service.name])
                operation["security"] = SERVICE_SECURITY
        paths[f"/{service.name}{path}"] = operations
    return paths, document.get("components", {}).get("schemas", {})


def merged_openapi(app: FastAPI, services: list[Service]) -> dict[str, Any]:
    """The platform's own schema plus every live service's, as one document for /docs."""
    document = copy.deepcopy(build_openapi(app))
    tags = document.setdefault("tags", [])
    for service in services:
        paths, schemas = _mounted_paths(service)
        document["paths"].update(paths)
        document["components"]["schemas"].update(schemas)
        tags.append({"name": service.name, "description": service.description})
    return document


def service_document(service: Service) -> dict[str, Any]:
    """One service's schema on its own, as served at `/{name}/openapi.json`."""
    paths, schemas = _mounted_paths(service)
    return {
        "openapi": "3.1.0",
        "info": {"title": f"{service.name} (ServiceBay service)", "version": "1",
                 "description": service.description},
        "paths": paths,
        "components": {
            "schemas": {**schemas, "Problem": PROBLEM_SCHEMA},
            "securitySchemes": {
                "HTTPBearer": {"type": "http", "scheme": "bearer"},
                "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "APIKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"},
            },
        },
    }  # fmt: skip


def install(app: FastAPI, registry: Callable[[], ServiceRegistry]) -> None:
    app.mount("/docs/static", StaticFiles(directory=swagger_ui_path), name="docs-static")

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(merged_openapi(app, await registry().live_services()))

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon-32x32.png",
        )
