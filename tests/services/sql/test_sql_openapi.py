"""The OpenAPI document: generated from the reflected schema, and true to the answers."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest

from tests.services.sql.sql_support import Shop

OPERATIONS = {"get", "post", "patch", "delete"}


@pytest.fixture
def document(shop: Shop) -> dict[str, Any]:
    return shop.service.openapi()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in OPERATIONS
    ]


def test_paths_follow_the_spec(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    paths = {path: sorted(set(item) & OPERATIONS) for path, item in document["paths"].items()}
    assert paths == {
        "/customer": ["get", "post"],
        "/customer/{email}": ["delete", "get", "patch"],
        "/orders": ["get", "post"],
        "/orders/{id}": ["delete", "get", "patch"],
        "/events": ["get"],
        "/events/{id}": ["get"],
        "/queries/daily_active_users": ["get"],
    }


def test_every_operation_is_documented(document: dict[str, Any]) -> None:
    operation_ids = []
    for path, method, operation in _operations(document):
        assert operation["summary"], (path, method)
        assert operation["description"], (path, method)
        assert operation["tags"] == ["shop"]
        operation_ids.append(operation["operationId"])
        errors = {
            status: answer for status, answer in operation["responses"].items() if status >= "400"
        }
        assert "400" in errors, (path, method)
        for answer in errors.values():
            schema = answer["content"]["application/problem+json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Problem"}
    assert len(operation_ids) == len(set(operation_ids))
    assert "People who bought something." in document["paths"]["/customer"]["get"]["description"]
    query = document["paths"]["/queries/daily_active_users"]["get"]
    assert query["description"] == "Distinct users with an event on a day."


def test_components_are_named_after_the_service(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]

    assert all(name.startswith("shop.") for name in schemas)
    assert "Problem" not in schemas
    for schema in schemas.values():
        assert jsonschema_rs.meta.is_valid(schema)


def test_row_schema_from_reflected_columns(shop: Shop, document: dict[str, Any]) -> None:
    row = document["components"]["schemas"]["shop.customer"]
    columns = row["properties"]

    assert row["description"] == "People who bought something."
    assert "secret_note" not in columns
    assert columns["email"] == {"type": "string", "maxLength": 120}
    assert columns["age"]["type"] == ["integer", "null"]
    if shop.backend != "sqlite":
        assert (columns["age"]["minimum"], columns["age"]["maximum"]) == (-32768, 32767)
    assert columns["balance"]["type"] == "string"
    assert columns["balance"]["format"] == "decimal"
    assert columns["active"] == {"type": "boolean"}
    assert columns["born"] == {"type": ["string", "null"], "format": "date"}
    assert columns["tier"]["readOnly"] is True
    assert columns["profile"] == {"description": "Any JSON value."}
    if shop.backend == "postgres":
        assert columns["created_at"] == {"type": "string", "format": "date-time"}
        assert columns["external_id"] == {"type": ["string", "null"], "format": "uuid"}
    else:
        assert "format" not in columns["created_at"]
    status = document["components"]["schemas"]["shop.orders"]["properties"]["status"]
    if shop.backend != "sqlite":
        assert status["enum"] == ["new", "paid", "shipped"]


def test_request_schemas(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    create = schemas["shop.customer.create"]

    assert create["required"] == ["email", "name"]
    assert "tier" not in create["properties"]
    assert "id" in create["properties"]
    assert create["properties"]["balance"]["type"] == ["string", "number"]
    assert schemas["shop.customer.update"]["minProperties"] == 1
    assert "required" not in schemas["shop.customer.update"]
    key = document["paths"]["/customer/{email}"]["parameters"][0]
    assert (key["name"], key["in"], key["required"]) == ("email", "path", True)
    parameters = {
        p["name"]: p for p in document["paths"]["/queries/daily_active_users"]["get"]["parameters"]
    }
    assert parameters["day"]["required"] is True
    assert parameters["day"]["schema"] == {"type": "string", "format": "date"}
    assert parameters["user_below"]["required"] is False
    assert parameters["user_below"]["schema"]["default"] == 1_000_000


def test_answers_match_the_schemas(shop: Shop, tag: str, document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    row = jsonschema_rs.Draft202012Validator(schemas["shop.customer"], validate_formats=True)
    create = jsonschema_rs.Draft202012Validator(
        schemas["shop.customer.create"], validate_formats=True
    )
    body = {
        "email": f"{tag}@example.com",
        "name": "Schema",
        "age": 3,
        "balance": "1.50",
        "score": 2.5,
        "born": "2001-02-03",
        "wakes_at": "04:05:06",
        "profile": {"a": 1},
    }
    create.validate(body)
    shop.customers(tag, 2)
    shop.call("POST", "customer", body=body)

    for created in shop.mine(tag):
        row.validate(created)
