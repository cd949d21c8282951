"""Property-based fuzzing from the service's own OpenAPI document, straight at `handle`:
whatever is sent, the answer is a success or a 4xx, never an unexpected exception or a
5xx, and every row answered matches its documented schema."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core import NOT_SET
from schemathesis.generation.case import Case

from servicebay.core.errors import ServiceBayError
from servicebay.gateway.docs import PROBLEM_SCHEMA
from servicebay.services.base import ServiceCall
from tests.services.sql.sql_support import Shop

FUZZ_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)


def _call(case: Case[Any]) -> ServiceCall:
    query = [
        (name, str(item).lower() if isinstance(item, bool) else str(item))
        for name, value in (case.query or {}).items()
        for item in (value if isinstance(value, list) else [value])
    ]
    body = None if case.body is NOT_SET else case.body
    return ServiceCall(case.method, tuple(case.formatted_path.split("/")[1:]), query, body)


def _rows(answer: Any) -> list[Any]:
    if isinstance(answer, dict) and isinstance(answer.get("data"), list):
        return list(answer["data"])
    return [answer] if isinstance(answer, dict) else []


OPERATIONS = [
    ("GET", "/customer"),
    ("POST", "/customer"),
    ("GET", "/customer/{email}"),
    ("PATCH", "/customer/{email}"),
    ("DELETE", "/customer/{email}"),
    ("GET", "/orders"),
    ("POST", "/orders"),
    ("PATCH", "/orders/{id}"),
    ("DELETE", "/orders/{id}"),
    ("GET", "/events"),
    ("GET", "/queries/daily_active_users"),
]


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_request_gets_a_server_error(fuzzed_shop: Shop, method: str, path: str) -> None:
    shop = fuzzed_shop
    document = shop.service.openapi()
    components = document["components"]["schemas"]
    loaded = schemathesis.openapi.from_dict(
        {**document, "components": {"schemas": {**components, "Problem": PROBLEM_SCHEMA}}}
    )
    table = path.split("/")[1]
    rows = jsonschema_rs.Draft202012Validator(components.get(f"shop.{table}", {}))
    failures: list[str] = []

    @FUZZ_SETTINGS
    @given(case=loaded[path][method].as_strategy())
    def fuzz(case: Case[Any]) -> None:
        call = _call(case)
        try:
            reply = shop.run(shop.service.handle(call))
        except ServiceBayError as error:
            if error.status >= 500:
                failures.append(f"{call}: {error.status} {error.message}")
            return
        for row in _rows(reply.body) if table != "queries" else []:
            if not rows.is_valid(row):
                failures.append(f"{call}: {row} does not match the row schema")

    fuzz()
    assert not failures, failures[:5]
