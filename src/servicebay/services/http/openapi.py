"""The service's OpenAPI 3.1 document, from its routes' descriptions and parameters.

Same shape as the `sql` kind's: paths relative to the service, operations tagged with its
name, errors pointing at `#/components/schemas/Problem`, which the gateway defines.
"""

from __future__ import annotations

from typing import Any

from servicebay.services.http.spec import HttpServiceSpec, RouteParam, RouteSpec

_SCHEMAS: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
}
_ERRORS = {
    "400": "A parameter is missing or of the wrong type; `errors` names each.",
    "502": "The upstream failed, could not be reached, or answered something other than "
    "JSON; `detail` says which.",
    "504": "The upstream did not answer in time.",
}


def document(spec: HttpServiceSpec) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": spec.name, "version": "1", "description": spec.description},
        "tags": [{"name": spec.name, "description": spec.description}],
        "paths": {
            f"/{name}": {route.method.lower(): _operation(spec.name, name, route)}
            for name, route in spec.routes.items()
        },
        "components": {"schemas": {}},
    }


def _operation(service: str, name: str, route: RouteSpec) -> dict[str, Any]:
    in_body = route.template().placeholders - set(route.template().in_path)
    operation: dict[str, Any] = {
        "tags": [service],
        "operationId": f"{service}.{name}",
        "summary": route.summary or name.replace("_", " "),
        "description": f"{route.description}\n\nNeeds `{route.grant_action}` on "
        f"`service:{service}/{name}`.",
        "parameters": [_parameter(param_name, param) for param_name, param in route.params.items()],
        "responses": {
            "200": {
                "description": "The upstream's JSON answer, with its status (2xx or 4xx).",
                "content": {"application/json": {"schema": {}}},
            },
            **{
                status: {
                    "description": description,
                    "content": {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    },
                }
                for status, description in _ERRORS.items()
            },
        },
    }
    if route.method in ("POST", "PUT", "PATCH"):
        operation["requestBody"] = {
            "required": False,
            "description": "A JSON object whose members may give the parameters instead of "
            "the query."
            if route.body is not None and in_body
            else "Passed on to the upstream as it is.",
            "content": {"application/json": {"schema": {}}},
        }
    return operation


def _parameter(name: str, param: RouteParam) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": param.required,
        "description": param.description,
        "schema": dict(_SCHEMAS[param.type]),
    }
