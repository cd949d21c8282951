"""SQL services through the gateway: registered as documents, called with grants, audited."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from tests.conftest import Server


@pytest.fixture
def sql_service(server: Server, admin: httpx.Client, sales_db: Path) -> Iterator[str]:
    """A registered `sql` service over the sales database, named uniquely per test."""
    name = f"sales-{secrets.token_hex(3)}"
    secret = f"SALES_DB_{secrets.token_hex(3).upper()}"
    stored = admin.put(
        f"/api/v1/secrets/{secret}",
        json={"value": f"sqlite:///{sales_db}", "allow": [f"service:{name}"]},
    )
    assert stored.status_code == 200, stored.text
    registered = admin.post("/api/v1/services", json=document(name, secret))
    assert registered.status_code == 201, registered.text
    yield name
    admin.delete(f"/api/v1/services/{name}")
    admin.delete(f"/api/v1/secrets/{secret}")


def document(name: str, secret: str) -> dict[str, object]:
    return {
        "name": name,
        "kind": "sql",
        "description": "The sales database",
        "secret": secret,
        "tables": {
            "customer": {
                "description": "Paying and free customers",
                "key": "email",
                "operations": ["read", "create", "update", "delete"],
            }
        },
        "queries": {
            "daily_active_users": {
                "sql": "SELECT count(DISTINCT user_email) AS users FROM events WHERE day = :day",
                "params": {"day": "date"},
                "description": "Distinct users active on a day",
            }
        },
    }


def test_a_caller_without_a_grant_is_refused_before_any_query(
    server: Server, sql_service: str
) -> None:
    _, key = server.new_user()
    with server.client(key) as client:
        refused = client.get(f"/{sql_service}/customer/julius@nyknicks.com")
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert f"read` on `service:{sql_service}/customer" in refused.json()["detail"]


def test_a_read_grant_lets_a_team_look_up_a_row_by_its_key(
    server: Server, admin: httpx.Client, sql_service: str
) -> None:
    _, key = server.new_user(teams=["marketing"])
    granted = admin.post(
        "/api/v1/grants",
        json={"principal": "team:marketing", "resource": f"service:{sql_service}/customer",
              "actions": ["read"]},
    )  # fmt: skip
    assert granted.status_code == 201
    with server.client(key) as client:
        found = client.get(f"/{sql_service}/customer/julius@nyknicks.com")
        missing = client.get(f"/{sql_service}/customer/nobody@nyknicks.com")
        refused = client.post(
            f"/{sql_service}/customer", json={"email": "new@nyknicks.com", "name": "New"}
        )
    assert found.status_code == 200, found.text
    assert found.json()["name"] == "Julius Randle"
    assert missing.status_code == 404
    assert refused.status_code == 403
    assert f"create` on `service:{sql_service}/customer" in refused.json()["detail"]
    admin.delete(f"/api/v1/grants/{granted.json()['id']}")


def test_calls_to_services_are_audited_with_the_permission_they_needed(
    server: Server, admin: httpx.Client, sql_service: str
) -> None:
    email, key = server.new_user()
    with server.client(key) as client:
        client.get(f"/{sql_service}/customer/julius@nyknicks.com")
    events = admin.get("/api/v1/audit", params={"actor": email}).json()["data"]
    denied = [event for event in events if event["resource"] == f"service:{sql_service}/customer"]
    assert denied
    assert denied[0]["outcome"] == "denied"
    assert denied[0]["action"] == "service.read"


def test_a_named_query_answers_with_bound_parameters(
    server: Server, admin: httpx.Client, sql_service: str
) -> None:
    answer = admin.get(f"/{sql_service}/queries/daily_active_users", params={"day": "2026-11-27"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == [{"users": 2}]


def test_an_unknown_service_is_404_for_everyone_and_a_known_one_needs_a_key(
    server: Server, admin: httpx.Client, sql_service: str
) -> None:
    assert admin.get("/nosuchservice/anything").status_code == 404
    with server.client() as stranger:
        assert stranger.get("/nosuchservice/anything").status_code == 404
        refused = stranger.get(f"/{sql_service}/customer")
    assert refused.status_code == 401
    assert "WWW-Authenticate" in refused.headers


def test_each_service_is_documented_alone_and_in_the_merged_schema(
    server: Server, admin: httpx.Client, sql_service: str
) -> None:
    alone = admin.get(f"/{sql_service}/openapi.json")
    merged = admin.get("/openapi.json")
    assert alone.status_code == 200
    assert merged.status_code == 200
    assert any(path.startswith(f"/{sql_service}/customer") for path in alone.json()["paths"])
    assert any(path.startswith(f"/{sql_service}/customer") for path in merged.json()["paths"])
    assert f"/{sql_service}/queries/daily_active_users" in merged.json()["paths"]


def test_the_database_url_never_appears_in_answers(
    server: Server, admin: httpx.Client, sql_service: str, sales_db: Path
) -> None:
    answers = [
        admin.get("/api/v1/services").text,
        admin.get(f"/api/v1/services/{sql_service}").text,
        admin.get(f"/{sql_service}/openapi.json").text,
        admin.get(f"/{sql_service}/customer", params={"nope": "x"}).text,
        admin.post(f"/{sql_service}/customer", json={"email": "julius@nyknicks.com",
                                                     "name": "dup"}).text,
    ]  # fmt: skip
    for answer in answers:
        assert str(sales_db) not in answer


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"kind": "nosql"}, "unknown service kind"),
        ({"name": "api"}, "reserved"),
        ({"name": "Bad Name"}, "service name"),
        ({"tables": {"no_such_table": {}}}, "no_such_table"),
        ({"secret": "NO_SUCH_SECRET"}, "NO_SUCH_SECRET"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_a_wrong_service_document_is_refused_with_what_is_wrong(
    admin: httpx.Client, sql_service: str, change: dict[str, object], complaint: str
) -> None:
    current = admin.get(f"/api/v1/services/{sql_service}").json()["spec"]
    refused = admin.post("/api/v1/services", json={**current, **change})
    assert refused.status_code == 400, refused.text
    assert complaint in refused.text


def test_a_secret_not_allowed_for_the_service_is_refused_at_registration(
    admin: httpx.Client, sales_db: Path
) -> None:
    admin.put("/api/v1/secrets/UNALLOWED_DB", json={"value": f"sqlite:///{sales_db}"})
    refused = admin.post(
        "/api/v1/services", json=document(f"s-{secrets.token_hex(3)}", "UNALLOWED_DB")
    )
    assert refused.status_code == 400
    assert "bay secrets allow UNALLOWED_DB" in refused.json()["detail"]


def test_members_cannot_register_services(server: Server, sales_db: Path) -> None:
    _, key = server.new_user()
    with server.client(key) as client:
        refused = client.post("/api/v1/services", json=document("mine", "ANY"))
    assert refused.status_code == 403
