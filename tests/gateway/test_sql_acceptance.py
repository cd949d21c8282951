"""Acceptance of `sql` services through real HTTP, as their users meet them.

One `bay serve` per test worker for this module, and one business database per backend
(SQLite, PostgreSQL, MariaDB), each registered over HTTP as a service of its own. The
service layer's own tests (tests/services/sql/) cover every endpoint in depth through
`handle`; here the same service is reached the way callers reach it: a key, a grant, the
audit log, URL encoding, the log file and the published documentation.

Tests keep to their own rows (a tag in their e-mails) or change nothing, so they share
the databases; a refused or hostile request is checked against a fingerprint of every row.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import re
import secrets
import select
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from servicebay.services.sql.engine import async_url
from tests.conftest import (
    _mysql,
    _mysql_admin_url,
    _postgres,
    _postgres_admin_url,
    _throwaway_database,
)
from tests.gateway.gateway_support import (
    PROBLEM_JSON,
    REVOCATION_BOUND_SECONDS,
    assert_problem,
    find_event,
    unique_name,
    wait_for,
)

if TYPE_CHECKING:
    from tests.conftest import Server

SERVER_BACKENDS = (pytest.param("postgres", marks=pytest.mark.postgres), "mysql")
BACKENDS = ("sqlite", *SERVER_BACKENDS)
DEFAULT_PORTS = {"postgres": 5432, "mysql": 3306}
HIDDEN_NOTE = f"HIDDEN-{secrets.token_hex(6)}"
"""The hidden column's value in every seeded row: no answer may ever show it."""
FULL = ["read", "create", "update", "delete"]
VISIBLE = {"id", "email", "name", "plan", "balance", "active", "signed_up"}


# The business database ------------------------------------------------------------------


def business_tables() -> sa.MetaData:
    """The sales database: the same tables, in each backend's own types."""
    metadata = sa.MetaData()
    sa.Table(
        "customer",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(120), nullable=False),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("plan", sa.String(20), nullable=False, server_default="free"),
        sa.Column("balance", sa.Numeric(10, 2), nullable=False, server_default="0"),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("signed_up", sa.Date),
        sa.Column("internal_note", sa.String(200)),
        sa.UniqueConstraint("email", name="uq_customer_email"),
    )
    sa.Table(
        "invoice",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "customer_id",
            sa.Integer,
            sa.ForeignKey("customer.id", name="fk_invoice_customer"),
            nullable=False,
        ),
        sa.Column("amount", sa.Numeric(10, 2), nullable=False),
        sa.Column("issued_on", sa.Date, nullable=False),
        sa.CheckConstraint("amount > 0", name="ck_invoice_amount_positive"),
    )
    sa.Table(
        "events",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("customer_email", sa.String(120), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
    )
    return metadata


SEED_CUSTOMERS = [
    # email, name, plan, balance, active, signed_up
    ("julius@nyknicks.com", "Julius Randle", "pro", "120.50", True, dt.date(2024, 1, 15)),
    ("jalen@nyknicks.com", "Jalen Brunson", "pro", "99.99", True, dt.date(2024, 2, 1)),
    ("josh@nyknicks.com", "Josh Hart", "free", "0", True, dt.date(2024, 3, 9)),
    ("mitchell@nyknicks.com", "Mitchell Robinson", "pro", "250.00", False, dt.date(2023, 7, 1)),
    ("og@nyknicks.com", "OG Anunoby", "pro", "75.25", True, None),
    ("mikal@nyknicks.com", "Mikal Bridges", "free", "10.00", True, dt.date(2024, 7, 6)),
]
SEED_INVOICES = [("80.00", dt.date(2026, 1, 5)), ("40.50", dt.date(2026, 2, 5))]
"""Both Julius's: a foreign key holds him."""
SEED_EVENTS = [
    ("julius@nyknicks.com", dt.date(2026, 11, 27), "login"),
    ("jalen@nyknicks.com", dt.date(2026, 11, 27), "login"),
    ("julius@nyknicks.com", dt.date(2026, 11, 27), "purchase"),
    ("og@nyknicks.com", dt.date(2026, 11, 28), "login"),
]


async def _build(url: str) -> None:
    metadata = business_tables()
    engine = create_async_engine(async_url(url, "tests"), poolclass=NullPool)
    customer, invoice, events = (
        metadata.tables[name] for name in ("customer", "invoice", "events")
    )
    try:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
            await connection.execute(
                sa.insert(customer),
                [
                    {
                        "email": email,
                        "name": name,
                        "plan": plan,
                        "balance": Decimal(balance),
                        "active": active,
                        "signed_up": signed_up,
                        "internal_note": HIDDEN_NOTE,
                    }
                    for email, name, plan, balance, active, signed_up in SEED_CUSTOMERS
                ],
            )
            await connection.execute(
                sa.insert(invoice),
                [
                    {"customer_id": 1, "amount": Decimal(amount), "issued_on": issued_on}
                    for amount, issued_on in SEED_INVOICES
                ],
            )
            await connection.execute(
                sa.insert(events),
                [{"customer_email": e, "day": d, "kind": k} for e, d, k in SEED_EVENTS],
            )
    finally:
        await engine.dispose()


async def _fingerprint(url: str) -> str:
    digest = hashlib.sha256()
    metadata = business_tables()
    engine = create_async_engine(async_url(url, "tests"), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            for table in metadata.sorted_tables:
                rows = await connection.execute(sa.select(table).order_by(table.c.id))
                for row in rows:
                    digest.update(f"{table.name}{tuple(row)!r}".encode())
    finally:
        await engine.dispose()
    return digest.hexdigest()


def sales_document(name: str, secret: str, **changes: Any) -> dict[str, Any]:
    """The `service.json` of the sales database, as docs/services/sql.md shows it."""
    return {
        "name": name,
        "kind": "sql",
        "description": "Customers, invoices and activity of the sales database.",
        "secret": secret,
        "default_limit": 20,
        "max_limit": 50,
        "tables": {
            "customer": {
                "description": "People who buy from us, looked up by e-mail.",
                "key": "email",
                "operations": FULL,
                "read_only": ["plan"],
                "hidden": ["internal_note"],
            },
            "invoice": {"description": "What each customer was billed.", "operations": FULL},
            "events": {"columns": ["id", "customer_email", "day", "kind"]},
        },
        "queries": {
            "daily_active_users": {
                "description": "Distinct customers with any event on a day.",
                "sql": "SELECT COUNT(DISTINCT customer_email) AS users, COUNT(*) AS events "
                "FROM events WHERE day = :day",
                "params": {"day": {"type": "date", "description": "The day, YYYY-MM-DD."}},
            }
        },
        **changes,
    }


@dataclass
class Business:
    """A business database on one backend, served as service `name` from secret `secret`."""

    backend: str
    url: str
    name: str
    secret: str

    def path(self, *segments: str) -> str:
        return "/" + "/".join([self.name, *segments])

    def fingerprint(self) -> str:
        """Every row of every table, hashed: equal before and after means nothing changed."""
        return asyncio.run(_fingerprint(self.url))

    def revealing(self) -> list[str]:
        """What would give the database away: its URL and, for servers, its name and
        password; for SQLite, the file's path."""
        url = make_url(self.url)
        found = [self.url, url.render_as_string(hide_password=False)]
        found += [url.database] if url.database else []
        found += [url.password] if url.password else []
        return [text for text in found if text]


@dataclass
class Businesses:
    """One database and service per backend, made on first use, removed at the end."""

    server: Server
    folder: Path
    stack: ExitStack
    made: dict[str, Business] = field(default_factory=dict)

    def get(self, backend: str) -> Business:
        if backend not in self.made:
            self.made[backend] = self._make(backend)
        return self.made[backend]

    def _make(self, backend: str) -> Business:
        if backend == "sqlite":
            url = f"sqlite:///{self.folder / f'sales-{secrets.token_hex(4)}.db'}"
        else:
            database = contextmanager(_throwaway_database)
            if backend == "postgres":
                url = self.stack.enter_context(
                    database("postgres", _postgres_admin_url(), _postgres, '"')
                )
            else:
                url = self.stack.enter_context(database("mysql", _mysql_admin_url(), _mysql, "`"))
        asyncio.run(_build(url))
        business = Business(backend, url, unique_name(f"sales_{backend}"), secret_name("SALES_DB"))
        with self.server.admin() as admin:
            stored = admin.put(
                f"/api/v1/secrets/{business.secret}",
                json={"value": url, "allow": [f"service:{business.name}"]},
            )
            assert stored.status_code == 200, stored.text
            registered = admin.post(
                "/api/v1/services", json=sales_document(business.name, business.secret)
            )
            assert registered.status_code == 201, registered.text
        # Before the database is dropped, the service lets its connections go.
        self.stack.callback(self._remove, business)
        return business

    def _remove(self, business: Business) -> None:
        with self.server.admin() as admin:
            admin.delete(f"/api/v1/services/{business.name}")


@pytest.fixture(scope="module")
def bay(
    launch: Callable[..., Server], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """This module's own server: its log file and audit log hold only this module's calls."""
    running = launch(tmp_path_factory.mktemp("sql-acceptance"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def businesses(bay: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Businesses]:
    with ExitStack() as stack:
        yield Businesses(bay, tmp_path_factory.mktemp("business"), stack)


@pytest.fixture(params=BACKENDS)
def business(request: pytest.FixtureRequest, businesses: Businesses) -> Business:
    """The sales service on each backend in turn."""
    return businesses.get(request.param)


@pytest.fixture(params=SERVER_BACKENDS)
def networked(request: pytest.FixtureRequest, businesses: Businesses) -> Business:
    """The sales database on each database server in turn (PostgreSQL, MariaDB)."""
    return businesses.get(request.param)


@pytest.fixture
def sales(businesses: Businesses) -> Business:
    """The sales service on SQLite: for what the gateway decides, whatever the backend."""
    return businesses.get("sqlite")


@pytest.fixture
def admin(bay: Server) -> Iterator[httpx.Client]:
    with bay.admin() as client:
        yield client


def grant(admin: httpx.Client, principal: str, resource: str, actions: list[str]) -> str:
    created = admin.post(
        "/api/v1/grants", json={"principal": principal, "resource": resource, "actions": actions}
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def secret_name(prefix: str) -> str:
    """Secrets become environment variables: upper case."""
    return f"{prefix}_{secrets.token_hex(4).upper()}"


def tag() -> str:
    return f"t{secrets.token_hex(4)}"


# 1. One scenario, every endpoint, on each database ------------------------------------------


def test_a_database_is_registered_and_served_with_every_endpoint(
    bay: Server, admin: httpx.Client, business: Business
) -> None:
    name, secret, mine = unique_name("sales"), secret_name("SALES_URL"), tag()
    stored = admin.put(
        f"/api/v1/secrets/{secret}", json={"value": business.url, "allow": [f"service:{name}"]}
    )
    assert stored.status_code == 200, stored.text
    assert "value" not in stored.json()

    registered = admin.post("/api/v1/services", json=sales_document(name, secret))

    assert registered.status_code == 201, registered.text
    assert registered.json()["name"] == name
    assert (registered.json()["kind"], registered.json()["version"]) == ("sql", 1)
    assert registered.json()["spec"]["secret"] == secret
    sales = f"/{name}"

    # Get by key: decimals as strings, booleans as booleans, hidden columns absent.
    julius = admin.get(f"{sales}/customer/julius@nyknicks.com")
    assert julius.status_code == 200, julius.text
    assert julius.json() == {
        "id": 1,
        "email": "julius@nyknicks.com",
        "name": "Julius Randle",
        "plan": "pro",
        "balance": "120.50",
        "active": True,
        "signed_up": "2024-01-15",
    }

    # A filtered list, a page at a time.
    query = {
        "plan": "pro",
        "active": "is.true",
        "balance": "gte.50",
        "order": "balance.desc",
        "select": "email,balance",
        "limit": "2",
    }
    first = admin.get(f"{sales}/customer", params=query)
    assert first.status_code == 200, first.text
    assert first.json()["data"] == [
        {"email": "julius@nyknicks.com", "balance": "120.50"},
        {"email": "jalen@nyknicks.com", "balance": "99.99"},
    ]
    assert first.json()["next"]
    second = admin.get(f"{sales}/customer", params={**query, "cursor": first.json()["next"]})
    assert second.json() == {
        "data": [{"email": "og@nyknicks.com", "balance": "75.25"}],
        "next": None,
    }
    chosen = admin.get(
        f"{sales}/customer",
        params={
            "email": "in.(josh@nyknicks.com,mikal@nyknicks.com,nobody@x)",
            "name": "like.*s*",
            "select": "name",
            "order": "name",
        },
    )
    assert chosen.json()["data"] == [{"name": "Josh Hart"}, {"name": "Mikal Bridges"}]
    undated = admin.get(f"{sales}/customer", params={"signed_up": "is.null", "select": "email"})
    assert undated.json()["data"] == [{"email": "og@nyknicks.com"}]

    # Create one: an object in, the stored row out, with its defaults.
    one = admin.post(
        f"{sales}/customer", json={"email": f"{mine}-1@example.com", "name": "Ada", "balance": 12.5}
    )
    assert one.status_code == 201, one.text
    created = one.json()
    assert isinstance(created.pop("id"), int)
    assert created == {
        "email": f"{mine}-1@example.com",
        "name": "Ada",
        "plan": "free",
        "balance": "12.50",
        "active": True,
        "signed_up": None,
    }

    # Create many: an array in, all or nothing, `{"data": [...]}` out.
    many = admin.post(
        f"{sales}/customer",
        json=[
            {"email": f"{mine}-2@example.com", "name": "Grace"},
            {
                "email": f"{mine}-3@example.com",
                "name": "Edsger",
                "active": False,
                "signed_up": "2026-01-02",
                "balance": "3",
            },
        ],
    )
    assert many.status_code == 201, many.text
    assert many.json()["next"] is None
    assert [(row["email"], row["active"], row["balance"]) for row in many.json()["data"]] == [
        (f"{mine}-2@example.com", True, "0.00"),
        (f"{mine}-3@example.com", False, "3.00"),
    ]
    half_bad = admin.post(
        f"{sales}/customer",
        json=[
            {"email": f"{mine}-4@example.com", "name": "Kept?"},
            {"email": f"{mine}-1@example.com", "name": "Duplicate"},
        ],
    )
    conflict = assert_problem(half_bad, 409)
    assert conflict["errors"][0]["constraint"] == "uq_customer_email"
    assert admin.get(f"{sales}/customer/{mine}-4@example.com").status_code == 404

    # A key is one path segment, URL-encoded: '/', '+', spaces and accents included.
    odd = f"{mine}+a b/zoë@example.com"
    assert admin.post(f"{sales}/customer", json={"email": odd, "name": "Zoë"}).status_code == 201
    found = admin.get(f"{sales}/customer/{quote(odd, safe='@')}")
    assert (found.status_code, found.json()["name"]) == (200, "Zoë")
    assert admin.delete(f"{sales}/customer/{quote(odd, safe='')}").status_code == 204

    # Every bad field in one 400.
    bad = admin.post(
        f"{sales}/customer", json={"email": 5, "balance": "lots", "plan": "pro", "nope": 1}
    )
    problem = assert_problem(bad, 400)
    assert sorted(tuple(error["loc"]) for error in problem["errors"]) == [
        ("body", "balance"),
        ("body", "email"),
        ("body", "name"),
        ("body", "nope"),
        ("body", "plan"),
    ]
    assert_problem(admin.get(f"{sales}/customer", params={"limit": "51"}), 400)

    # Patch: the changed row, as stored.
    patched = admin.patch(
        f"{sales}/customer/{mine}-2@example.com", json={"name": "Grace Hopper", "balance": "7.1"}
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["name"], patched.json()["balance"]) == ("Grace Hopper", "7.10")
    mine_now = admin.get(
        f"{sales}/customer", params={"email": f"like.{mine}-*", "select": "name", "order": "name"}
    )
    assert mine_now.json()["data"] == [
        {"name": "Ada"},
        {"name": "Edsger"},
        {"name": "Grace Hopper"},
    ]

    # Delete: 204, then gone; a row others point at is a 409 naming the foreign key.
    assert admin.delete(f"{sales}/customer/{mine}-3@example.com").status_code == 204
    assert_problem(admin.get(f"{sales}/customer/{mine}-3@example.com"), 404)
    assert_problem(admin.delete(f"{sales}/customer/{mine}-3@example.com"), 404)
    held = assert_problem(admin.delete(f"{sales}/customer/julius@nyknicks.com"), 409)
    assert held["errors"][0]["constraint"] == "fk_invoice_customer"
    check = assert_problem(
        admin.post(
            f"{sales}/invoice", json={"customer_id": 1, "amount": "-1", "issued_on": "2026-03-01"}
        ),
        409,
    )
    assert check["errors"][0]["constraint"] == "ck_invoice_amount_positive"

    # A named query, its parameters bound.
    active = admin.get(f"{sales}/queries/daily_active_users", params={"day": "2026-11-27"})
    assert active.status_code == 200, active.text
    assert active.json() == {"data": [{"users": 2, "events": 3}], "next": None}
    missing = assert_problem(admin.get(f"{sales}/queries/daily_active_users"), 400)
    assert missing["errors"] == [{"loc": ["query", "day"], "msg": "required", "type": "missing"}]

    # Tidy up, and a removed service is gone at once.
    for index in (1, 2):
        assert admin.delete(f"{sales}/customer/{mine}-{index}@example.com").status_code == 204
    assert admin.delete(f"/api/v1/services/{name}").status_code == 204
    assert_problem(admin.get(f"{sales}/customer/julius@nyknicks.com"), 404)
    admin.delete(f"/api/v1/secrets/{secret}")


# 2 and 3. Permissions: checked before any query, audited, and nothing changes when refused -


def every_endpoint(sales: Business, mine: str) -> dict[str, tuple[str, str, Any]]:
    """One valid request per endpoint, which a grant would let through: name -> (method,
    path, body)."""
    return {
        "list": ("GET", sales.path("customer"), None),
        "get": ("GET", sales.path("customer", "jalen@nyknicks.com"), None),
        "create": ("POST", sales.path("customer"), {"email": f"{mine}@example.com", "name": "M"}),
        "patch": ("PATCH", sales.path("customer", "josh@nyknicks.com"), {"name": "Changed"}),
        "delete": ("DELETE", sales.path("customer", "mikal@nyknicks.com"), None),
        "query": ("GET", sales.path("queries", "daily_active_users") + "?day=2026-11-27", None),
    }


NEEDS = {
    "list": ("read", "customer"),
    "get": ("read", "customer"),
    "create": ("create", "customer"),
    "patch": ("update", "customer"),
    "delete": ("delete", "customer"),
    "query": ("read", "queries/daily_active_users"),
}


def test_read_only_is_refused_every_write_and_the_data_stays_as_it_was(
    bay: Server, admin: httpx.Client, sales: Business
) -> None:
    email, key = bay.new_user()
    grant(admin, f"user:{email}", f"service:{sales.name}/customer", ["read"])
    before = sales.fingerprint()
    calls = every_endpoint(sales, tag())

    with bay.client(key) as client:
        answers = {name: client.request(m, p, json=b) for name, (m, p, b) in calls.items()}

    assert answers["list"].status_code == 200, answers["list"].text
    assert answers["get"].json()["name"] == "Jalen Brunson"
    for name in ("create", "patch", "delete"):
        action, table = NEEDS[name]
        assert_problem(answers[name], 403, f"`{action}` on `service:{sales.name}/{table}`")
    assert_problem(answers["query"], 403, f"`read` on `service:{sales.name}/queries/")
    assert sales.fingerprint() == before


def test_without_a_grant_every_endpoint_is_refused_audited_and_changes_nothing(
    bay: Server, admin: httpx.Client, sales: Business
) -> None:
    email, key = bay.new_user()
    before = sales.fingerprint()
    sent: dict[str, str] = {}

    with bay.client(key) as client:
        for name, (method, path, body) in every_endpoint(sales, tag()).items():
            sent[name] = f"refused-{name}-{secrets.token_hex(6)}"
            answer = client.request(method, path, json=body, headers={"X-Request-ID": sent[name]})
            action, table = NEEDS[name]
            assert_problem(answer, 403, f"`{action}` on `service:{sales.name}/{table}`")

    assert sales.fingerprint() == before
    for name, request_id in sent.items():
        action, table = NEEDS[name]
        event = find_event(admin, request_id, actor=email)
        assert event["outcome"] == "denied"
        assert event["status"] == 403
        assert event["resource"] == f"service:{sales.name}/{table}"
        assert event["action"] == f"service.{action}"


def test_a_grant_on_a_table_glob_covers_the_tables_it_matches_and_no_other(
    bay: Server, admin: httpx.Client, sales: Business
) -> None:
    email, key = bay.new_user(teams=["sales_analysts"])
    granted = grant(admin, "team:sales_analysts", f"service:{sales.name}/cust*", ["read"])

    with bay.client(key) as client:
        listed = client.get(sales.path("customer"), headers={"X-Request-ID": f"glob-{granted}"})
        found = client.get(sales.path("customer", "og@nyknicks.com"))
        invoices = client.get(sales.path("invoice"))
        events = client.get(sales.path("events"))
        query = client.get(
            sales.path("queries", "daily_active_users"), params={"day": "2026-11-27"}
        )
        create = client.post(sales.path("customer"), json={"email": "x@example.com", "name": "X"})

    assert listed.status_code == 200, listed.text
    assert found.json()["name"] == "OG Anunoby"
    assert_problem(invoices, 403, f"`read` on `service:{sales.name}/invoice`")
    assert_problem(events, 403, f"`read` on `service:{sales.name}/events`")
    assert_problem(query, 403)
    assert_problem(create, 403, f"`create` on `service:{sales.name}/customer`")
    allowed = find_event(admin, f"glob-{granted}", actor=email)
    assert (allowed["outcome"], allowed["action"]) == ("allowed", "service.read")
    assert allowed["detail"]["grant"] == granted


def test_invoke_on_the_whole_service_covers_every_table_action_and_query(
    bay: Server, admin: httpx.Client, sales: Business
) -> None:
    email, key = bay.new_user()
    grant(admin, f"user:{email}", f"service:{sales.name}", ["invoke"])
    mine = tag()
    row = {"email": f"{mine}@example.com", "name": "Invoked"}

    with bay.client(key) as client:
        answers = [
            client.get(sales.path("customer"), params={"limit": "1"}),
            client.get(sales.path("customer", "julius@nyknicks.com")),
            client.post(sales.path("customer"), json=row),
            client.patch(sales.path("customer", row["email"]), json={"name": "Changed"}),
            client.delete(sales.path("customer", row["email"])),
            client.get(sales.path("invoice")),
            client.get(sales.path("events"), params={"day": "2026-11-28"}),
            client.get(sales.path("queries", "daily_active_users"), params={"day": "2026-11-28"}),
        ]

    assert [answer.status_code for answer in answers] == [200, 200, 201, 200, 204, 200, 200, 200]
    assert answers[7].json()["data"] == [{"users": 1, "events": 1}]


def test_an_operation_the_table_does_not_offer_is_refused_to_everyone_and_audited(
    bay: Server, admin: httpx.Client, sales: Business
) -> None:
    email, key = bay.new_user()
    grant(admin, f"user:{email}", f"service:{sales.name}", ["invoke"])
    before, request_id = sales.fingerprint(), f"offer-{secrets.token_hex(8)}"
    event = {"customer_email": "x@example.com", "day": "2026-11-29", "kind": "login"}

    with bay.client(key) as client:
        refused = client.post(
            sales.path("events"), json=event, headers={"X-Request-ID": request_id}
        )
    by_admin = admin.post(sales.path("events"), json=event)

    assert_problem(refused, 403, "the service does not allow create on events")
    assert_problem(by_admin, 403, "the service does not allow create on events")
    assert sales.fingerprint() == before
    audited = find_event(admin, request_id, actor=email)
    assert (audited["outcome"], audited["status"]) == ("denied", 403)
    assert audited["path"] == sales.path("events")
    assert (audited["action"], audited["resource"]) == (
        "service.create",
        f"service:{sales.name}/events",
    )
    assert "does not allow create" in audited["detail"]["reason"]


def test_a_revoked_grant_stops_access_within_5_seconds(
    bay: Server, admin: httpx.Client, sales: Business
) -> None:
    email, key = bay.new_user()
    granted = grant(admin, f"user:{email}", f"service:{sales.name}/customer", ["read"])

    with bay.client(key) as client:

        def lookup() -> httpx.Response:
            return client.get(sales.path("customer", "julius@nyknicks.com"))

        allowed, _ = wait_for(lookup, lambda answer: answer.status_code == 200)
        assert allowed.status_code == 200, allowed.text

        assert admin.delete(f"/api/v1/grants/{granted}").status_code == 204

        refused, elapsed = wait_for(lookup, lambda answer: answer.status_code == 403)
    assert_problem(refused, 403, f"`read` on `service:{sales.name}/customer`")
    assert elapsed <= REVOCATION_BOUND_SECONDS


def test_only_api_key_is_the_gateways_and_other_parameters_reach_the_service(
    bay: Server, admin: httpx.Client, tmp_path: Path
) -> None:
    """Columns may be called token, key, password or secret: filters on them apply (they
    are only redacted from logs), while `?api_key=` authenticates and is no filter."""
    database = tmp_path / "vouchers.db"
    with sqlite3.connect(database) as db:
        db.executescript(
            """
            CREATE TABLE voucher (id INTEGER PRIMARY KEY, token VARCHAR(40) NOT NULL UNIQUE,
                                  key VARCHAR(20), password VARCHAR(20), secret VARCHAR(20));
            INSERT INTO voucher (token, key, password, secret) VALUES
                ('t1', 'k1', 'p1', 's1'), ('t2', 'k2', 'p2', 's2'), ('t3', 'k3', 'p3', 's3');
            """
        )
    name, secret = unique_name("vouchers"), secret_name("VOUCHER_DB")
    admin.put(
        f"/api/v1/secrets/{secret}",
        json={"value": f"sqlite:///{database}", "allow": [f"service:{name}"]},
    )
    document = {"name": name, "kind": "sql", "description": "Vouchers", "secret": secret}
    assert admin.post("/api/v1/services", json=document).status_code == 201
    email, key = bay.new_user()
    grant(admin, f"user:{email}", f"service:{name}", ["read"])

    for column in ("token", "key", "password", "secret"):
        found = admin.get(f"/{name}/voucher", params={column: f"{column[0]}2", "select": "id"})
        assert found.status_code == 200, found.text
        assert found.json()["data"] == [{"id": 2}], column
    with bay.client() as anonymous:
        by_query_key = anonymous.get(f"/{name}/voucher", params={"api_key": key, "token": "t3"})
    assert by_query_key.status_code == 200, by_query_key.text
    assert [row["id"] for row in by_query_key.json()["data"]] == [3]
    admin.delete(f"/api/v1/services/{name}")


def test_a_constraint_without_a_name_is_reported_without_one(
    admin: httpx.Client, tmp_path: Path
) -> None:
    """SQLite reports columns, not constraints: the name comes from the table's definition,
    and an unnamed constraint has none to give (not the text "None")."""
    database = tmp_path / "unnamed.db"
    with sqlite3.connect(database) as db:
        db.executescript(
            """
            CREATE TABLE parent (id INTEGER PRIMARY KEY, code VARCHAR(10) UNIQUE);
            CREATE TABLE child (id INTEGER PRIMARY KEY,
                                parent_id INTEGER NOT NULL REFERENCES parent (id));
            INSERT INTO parent VALUES (1, 'a');
            INSERT INTO child VALUES (1, 1);
            """
        )
    name, secret = unique_name("unnamed"), secret_name("UNNAMED_DB")
    admin.put(
        f"/api/v1/secrets/{secret}",
        json={"value": f"sqlite:///{database}", "allow": [f"service:{name}"]},
    )
    document = {
        "name": name, "kind": "sql", "description": "Unnamed constraints", "secret": secret,
        "tables": {"parent": {"operations": ["read", "create", "delete"]},
                   "child": {"operations": ["read", "create"]}},
    }  # fmt: skip
    assert admin.post("/api/v1/services", json=document).status_code == 201

    conflicts = [
        admin.delete(f"/{name}/parent/1"),
        admin.post(f"/{name}/child", json={"parent_id": 99}),
        admin.post(f"/{name}/parent", json={"code": "a"}),
    ]

    kinds = []
    for answer in conflicts:
        [error] = assert_problem(answer, 409)["errors"]
        assert "constraint" not in error, error
        assert "None" not in answer.json()["detail"]
        kinds.append(error["type"])
    assert kinds == ["foreign_key_violation", "foreign_key_violation", "unique_violation"]
    admin.delete(f"/api/v1/services/{name}")


# 4. An injection corpus through HTTP ------------------------------------------------------

HOSTILE_VALUES = [
    "'; DROP TABLE customer; --",
    "1 OR 1=1",
    "1' OR '1'='1",
    "julius@nyknicks.com' --",
    "julius@nyknicks.com' OR 'a'='a",
    "x' /* comment */ OR 1=1",
    "-- comment",
    "# comment",
    "1; DELETE FROM customer",
    "1); DROP TABLE invoice; --",
    "x'); UPDATE customer SET name='pwned'; --",
    "' UNION SELECT internal_note, 1, 1, 1, 1, 1, 1 FROM customer --",
    "' || (SELECT internal_note FROM customer LIMIT 1) || '",
    '" OR ""="',
    "`) OR 1=1 #",
    "\\' OR 1=1 --",
    "eq.x' --",
    "neq.' OR 1=1",
    "gt.0 OR 1=1",
    "in.(1);DELETE FROM customer",
    "in.(1,2) OR 1=1",
    "in.('a') OR ('1'='1')",
    "is.null; DROP TABLE customer",
    "is.null OR 1=1",
    "like.%' OR 'a'='a",
    "ilike.*') OR 1=1 --",
    "not.eq.1",
    "or=(id.gt.0)",
    "$1",
    ":email",
    "%s",
    "?",
    "%",
    "%27%20OR%201%3D1",
    "x\x00y",
    "é' OR 1=1 --",
    "1e999",
    "NaN",
    "pg_sleep(5)",
    "SLEEP(5)",
    "2024-01-01'; DROP TABLE events; --",
    "a/b",
    "../../api/v1/users",
]
HOSTILE_NAMES = [
    "email; DROP TABLE customer",
    "email--",
    "email/**/",
    '"email"',
    "`email`",
    "[email]",
    "email,internal_note",
    "internal_note",
    "customer.email",
    "1=1",
    "(SELECT 1)",
    "email desc",
    "email.desc; DROP TABLE customer",
    "*",
    "EMAIL",
    "email\x00",
    "pg_catalog.pg_user",
    "information_schema.tables",
]
FILTERED_COLUMNS = ("email", "name", "id", "balance", "active", "signed_up")
COMPARISONS = ("neq", "gt", "gte", "lt", "lte")
DRIVER_TEXT = re.compile(
    r"\bselect\s+[\w\"`.*]+(\s*,\s*[\w\"`.*]+)*\s+from\b|\binsert\s+into\b"
    r"|\bupdate\s+\S+\s+set\b|\bdelete\s+from\b|\bdrop\s+table\b|\bunion\s+select\b"
    r"|sqlalchemy|asyncpg|asyncmy|aiosqlite|sqlite3|psycopg|pymysql|\[sql:|\[parameters:"
    r"|traceback|background on this error|syntax error|you have an error in your sql"
    r"|duplicate entry|violates|constraint failed|sqlstate|errno|postgresql://|mysql://"
    r"|sqlite://|password",
    re.IGNORECASE,
)


@dataclass
class Probe:
    """Hostile requests to one service, as its admin (so every one may reach SQL)."""

    client: httpx.Client
    business: Business

    def __call__(
        self,
        method: str,
        path: str,
        *,
        echoed: tuple[str, ...] = (),
        params: list[tuple[str, str]] | None = None,
        body: Any = None,
    ) -> httpx.Response:
        """Send; the answer must be a success or a clean client error that shows nothing
        of the database, its driver or its URL, nor any hidden value."""
        query = httpx.QueryParams(tuple(params)) if params is not None else None
        answer = self.client.request(method, path, params=query, json=body)
        where = (method, path, params, body)
        assert answer.status_code < 500, (where, answer.status_code, answer.text[:300])
        if answer.status_code >= 400:
            assert answer.headers["content-type"].startswith(PROBLEM_JSON), where
        text = answer.text
        assert HIDDEN_NOTE not in text, where
        for revealing in self.business.revealing():
            assert revealing not in text, where
        found = DRIVER_TEXT.search(_without(text, echoed))
        assert found is None, (where, found.group(0), text[:300])
        return answer


def _without(text: str, echoed: tuple[str, ...]) -> str:
    """`text` less what the caller sent, which an answer may quote back (a key in a 404,
    a parameter's name in `loc`), in each form a JSON answer could quote it."""
    for sent in sorted(echoed, key=len, reverse=True):
        for form in (sent, json.dumps(sent)[1:-1], json.dumps(repr(sent))[1:-1], repr(sent)[1:-1]):
            text = text.replace(form, "")
    return text


@pytest.fixture
def probe(admin: httpx.Client, business: Business) -> Probe:
    return Probe(admin, business)


def test_hostile_filter_values_are_compared_as_values(business: Business, probe: Probe) -> None:
    before = business.fingerprint()
    for column in FILTERED_COLUMNS:
        for value in HOSTILE_VALUES:
            for hostile in (value, f"in.({value})", f"in.(julius@nyknicks.com,{value})"):
                answer = probe(
                    "GET", business.path("customer"), params=[(column, hostile)], echoed=(value,)
                )
                operator = hostile.partition(".")[0] if "." in hostile else "eq"
                if answer.status_code == 200 and operator not in COMPARISONS:
                    emails = [row["email"] for row in answer.json()["data"]]
                    # No tautology: at most the one row a listed value names exactly.
                    assert set(emails) <= {"julius@nyknicks.com"}, (column, hostile, emails)
                    if column in ("email", "name") and not hostile.startswith("in.(julius"):
                        assert emails == [], (column, hostile)
    assert business.fingerprint() == before


def test_hostile_identifiers_are_refused_with_400(business: Business, probe: Probe) -> None:
    before = business.fingerprint()
    for name in HOSTILE_NAMES + HOSTILE_VALUES:
        positions: list[tuple[str, str]] = [
            (name, "1"),
            ("select", name),
            ("order", name),
            ("order", f"email.{name}"),
            ("order", f"{name}.desc"),
        ]
        for parameter in positions:
            answer = probe("GET", business.path("customer"), params=[parameter], echoed=(name,))
            assert answer.status_code == 400, (parameter, answer.text[:300])
        answer = probe(
            "GET",
            business.path("customer", "julius@nyknicks.com"),
            params=[("select", name)],
            echoed=(name,),
        )
        assert answer.status_code == 400, (name, answer.text[:300])
    assert business.fingerprint() == before


def test_hostile_limits_and_cursors_are_refused_with_400(business: Business, probe: Probe) -> None:
    before = business.fingerprint()
    forged = [
        "eyJvcmRlciI6IFsiaWQuYXNjIl0sICJhZnRlciI6IFsiMSBPUiAxPTEiXX0",
        "InsnOyBEUk9QIFRBQkxFIGN1c3RvbWVyOyAtLSI",
        "0" * 500,
    ]
    for value in [*HOSTILE_VALUES, "-1", "0", "1e3", "0x10", "51", "99999999999", "1.5", ""]:
        answer = probe("GET", business.path("customer"), params=[("limit", value)], echoed=(value,))
        assert answer.status_code == 400, (value, answer.text[:300])
    for value in HOSTILE_VALUES + forged:
        answer = probe(
            "GET", business.path("customer"), params=[("cursor", value)], echoed=(value,)
        )
        assert answer.status_code == 400, (value, answer.text[:300])
    assert business.fingerprint() == before


def test_hostile_keys_in_the_path_match_no_row(business: Business, probe: Probe) -> None:
    before = business.fingerprint()
    for value in HOSTILE_VALUES + HOSTILE_NAMES:
        key = quote(value, safe="")
        for method, body in (("GET", None), ("PATCH", {"name": "pwned"}), ("DELETE", None)):
            answer = probe(method, business.path("customer", key), body=body, echoed=(value,))
            assert answer.status_code in (400, 404), (method, value, answer.text[:300])
            invoice = probe(
                method,
                business.path("invoice", key),
                body=body and {"amount": "1"},
                echoed=(value,),
            )
            assert invoice.status_code in (400, 404), (method, value, invoice.text[:300])
    assert business.fingerprint() == before


@pytest.mark.parametrize(
    "path",
    [
        "customer/julius%40nyknicks.com%2F..%2F..%2Fapi%2Fv1%2Fusers",
        "customer/..%2F..%2Fapi%2Fv1%2Fusers",
        "customer/%2E%2E%2F%2E%2E%2Fapi%2Fv1%2Fusers",
        "customer/%2e%2e",
        "customer/a%2Fb",
        "customer/julius@nyknicks.com%2F",
        "customer/julius@nyknicks.com/extra",
        "customer%2Fjulius@nyknicks.com",
        "customer%2F..%2Finvoice",
        "queries%2Fdaily_active_users",
        "queries/daily_active_users%2F..%2F..%2Fcustomer",
        "customer;DROP%20TABLE%20customer",
        "customer%3BDROP%20TABLE%20customer",
        "customer%00",
        "customer/julius%00@nyknicks.com",
        "%2E%2E/api/v1/users",
        "..%2Fapi%2Fv1%2Fusers",
        "CUSTOMER",
        "customer%20",
        "internal_note",
        "pg_catalog.pg_user",
        "information_schema.tables",
        "sqlite_master",
        "customer/julius%40nyknicks.com;DELETE",
    ],
)
def test_encoded_slashes_and_traversal_in_the_path_stay_inside_the_service(
    business: Business, probe: Probe, admin: httpx.Client, path: str
) -> None:
    before = business.fingerprint()
    for method in ("GET", "PATCH", "DELETE"):
        body = {"name": "pwned"} if method == "PATCH" else None
        answer = probe(method, f"/{business.name}/{path}", body=body, echoed=_decoded(path))
        assert answer.status_code in (400, 404, 405), (method, path, answer.text[:300])
    assert business.fingerprint() == before
    assert admin.get(business.path("customer", "julius@nyknicks.com")).json()["name"] == (
        "Julius Randle"
    )


def _decoded(path: str) -> tuple[str, ...]:
    segments = [unquote(segment) for segment in path.split("/")]
    return (unquote(path), *segments)


def test_hostile_bodies_and_query_parameters_change_nothing(
    business: Business, probe: Probe
) -> None:
    before = business.fingerprint()
    customers, query = business.path("customer"), business.path("queries", "daily_active_users")
    for name in HOSTILE_NAMES + HOSTILE_VALUES:
        row = {"email": "new@example.com", "name": "N", name: 1}
        created = probe("POST", customers, body=row, echoed=(name,))
        assert created.status_code == 400, (name, created.text[:300])
        patched = probe(
            "PATCH",
            business.path("customer", "josh@nyknicks.com"),
            body={name: 1},
            echoed=(name,),
        )
        assert patched.status_code == 400, (name, patched.text[:300])
        unknown = probe("GET", query, params=[("day", "2026-11-27"), (name, "1")], echoed=(name,))
        assert unknown.status_code == 400, (name, unknown.text[:300])
    for value in HOSTILE_VALUES:
        for column in ("balance", "active", "signed_up", "id"):
            row = {"email": "new@example.com", "name": "N", column: value}
            created = probe("POST", customers, body=row, echoed=(value,))
            assert created.status_code == 400, (column, value, created.text[:300])
        day = probe("GET", query, params=[("day", value)], echoed=(value,))
        assert day.status_code == 400, (value, day.text[:300])
        bulk = probe(
            "POST",
            customers,
            body=[{"email": "first@example.com", "name": "F"}, {"email": value, "name": 3}],
            echoed=(value,),
        )
        assert bulk.status_code == 400, (value, bulk.text[:300])
    assert business.fingerprint() == before


@pytest.mark.parametrize(
    "raw_query",
    [
        "email=julius@nyknicks.com';DROP TABLE customer;--",
        "email=julius%40nyknicks.com%27%3B%20DROP%20TABLE%20customer%3B--",
        "email=x&email=neq.x",
        "email%3Dx=1",
        "=1",
        "email",
        "email=",
        "email==x",
        "&&&",
        "select=email&select=internal_note",
        "order=email&order=email;DROP TABLE customer",
        "limit=1&limit=50",
        "email=julius%00@nyknicks.com",
        "email=%ZZ",
        "email=%",
        "email=%25",
        "name=like.%25",
        "name=Julius+Randle",
        "balance=gt.1e2&balance=lt.1e999",
        "id=in.(1,2)%20OR%201%3D1",
        "active=is.true%20OR%201=1",
        "signed_up=gte.2024-01-01%27--",
    ],
)
def test_raw_query_strings_change_nothing(business: Business, probe: Probe, raw_query: str) -> None:
    before = business.fingerprint()
    answer = probe(
        "GET", f"{business.path('customer')}?{raw_query}", echoed=_query_parts(raw_query)
    )
    assert answer.status_code in (200, 400), answer.text[:300]
    if answer.status_code == 200:
        assert all(set(row) <= VISIBLE for row in answer.json()["data"])
    assert business.fingerprint() == before


def _query_parts(raw: str) -> tuple[str, ...]:
    pairs = parse_qsl(raw, keep_blank_values=True)
    return tuple(part for pair in pairs for part in pair if part)


# 5. The database URL is shown nowhere ------------------------------------------------------


def test_the_database_url_is_in_no_answer_no_log_line_and_no_audit_export(
    bay: Server, admin: httpx.Client, business: Business
) -> None:
    broken = unique_name("broken")
    allowed = admin.put(
        f"/api/v1/secrets/{business.secret}",
        json={"value": business.url, "allow": [f"service:{business.name}", f"service:{broken}"]},
    )
    # A service whose named query its database refuses: an error logged by the server.
    failing = sales_document(
        broken,
        business.secret,
        queries={"fails": {"sql": "SELECT no_such_column FROM no_such_table", "params": {}}},
    )
    answers = [
        allowed,
        admin.get("/api/v1/secrets"),
        admin.post("/api/v1/services", json=sales_document(business.name, business.secret)),
        admin.post("/api/v1/services", json=failing),
        admin.get(f"/{broken}/queries/fails"),
        admin.post(
            "/api/v1/services",
            json=sales_document(
                unique_name("wrong"), business.secret, tables={"no_such_table": {}}
            ),
        ),
        admin.get("/api/v1/services"),
        admin.get(f"/api/v1/services/{business.name}"),
        admin.get(f"/{business.name}/openapi.json"),
        admin.get("/openapi.json"),
        admin.get(business.path("customer"), params={"nope": "1"}),
        admin.get(business.path("customer", "nobody@example.com")),
        admin.post(business.path("customer"), json={"email": "julius@nyknicks.com", "name": "J"}),
        admin.delete(business.path("customer", "julius@nyknicks.com")),
        admin.get(business.path("queries", "daily_active_users"), params={"day": "soon"}),
        admin.get(f"/api/v1/audit?resource=service:{business.name}/customer"),
    ]
    statuses = [answer.status_code for answer in answers]
    assert statuses[:6] == [200, 200, 200, 201, 500, 400], [a.text[:200] for a in answers[:6]]
    assert_problem(answers[4], 500)
    assert admin.delete(f"/api/v1/services/{broken}").status_code == 204
    export = admin.get("/api/v1/audit/export")
    assert export.status_code == 200
    log = bay.log_text()

    assert "database error" in log  # the failing query was logged...
    for revealing in business.revealing():  # ...and nothing gives the database away
        for answer in answers:
            assert revealing not in answer.text, (answer.request.url, answer.text[:300])
        assert revealing not in log
        assert revealing not in export.text


def test_an_unreachable_database_is_refused_at_registration_without_its_url(
    bay: Server, admin: httpx.Client
) -> None:
    name, secret, password = unique_name("gone"), secret_name("GONE_DB"), secrets.token_hex(12)
    url = f"postgresql://bay_user:{password}@127.0.0.1:1/sales_{password[:6]}"
    admin.put(f"/api/v1/secrets/{secret}", json={"value": url, "allow": [f"service:{name}"]})

    refused = admin.post("/api/v1/services", json=sales_document(name, secret))

    problem = assert_problem(refused, 400, "cannot reach its database")
    for text in (refused.text, bay.log_text(), admin.get("/api/v1/audit/export").text):
        assert password not in text
        assert url not in text
    assert name in problem["detail"]


class Cable:
    """A TCP forwarder between the gateway and a database server, that can be cut (every
    connection dropped, new ones refused) and mended: a database going away, for real."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.connected = True
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            with self.lock:
                if not self.connected:
                    client.close()
                    continue
                upstream = socket.create_connection(self.target)
                self.sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pipe(one: socket.socket, other: socket.socket) -> None:
        peer = {one: other, other: one}
        try:
            while True:
                ready, _, _ = select.select(list(peer), [], [])
                for end in ready:
                    data = end.recv(65536)
                    if not data:
                        raise ConnectionResetError
                    peer[end].sendall(data)
        except OSError:
            one.close()
            other.close()

    def cut(self) -> None:
        with self.lock:
            self.connected = False
            for end in self.sockets:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()
            self.sockets.clear()

    def mend(self) -> None:
        with self.lock:
            self.connected = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_a_database_that_goes_away_answers_503_and_is_used_again_when_back(
    bay: Server, admin: httpx.Client, networked: Business
) -> None:
    url = make_url(networked.url)
    cable = Cable(url.host or "127.0.0.1", url.port or DEFAULT_PORTS[networked.backend])
    name, secret = unique_name("remote"), secret_name("REMOTE_DB")
    through = url.set(port=cable.port).render_as_string(hide_password=False)
    admin.put(f"/api/v1/secrets/{secret}", json={"value": through, "allow": [f"service:{name}"]})
    try:
        assert admin.post("/api/v1/services", json=sales_document(name, secret)).status_code == 201

        def lookup() -> httpx.Response:
            return admin.get(f"/{name}/customer/julius@nyknicks.com")

        assert lookup().status_code == 200
        cable.cut()
        gone = [lookup() for _ in range(5)]  # pooled connections lost, then none to be had
        cable.mend()
        back, _ = wait_for(lookup, lambda answer: answer.status_code == 200)
    finally:
        cable.close()
        admin.delete(f"/api/v1/services/{name}")

    for answer in gone:
        problem = assert_problem(answer, 503, f"the database of service '{name}' is")
        assert through not in answer.text
        assert str(cable.port) not in problem["detail"]
    assert back.json()["name"] == "Julius Randle"


# 6. Documentation -------------------------------------------------------------------------


def test_the_service_is_documented_alone_and_in_the_merged_schema(
    admin: httpx.Client, bay: Server, business: Business
) -> None:
    name = business.name
    expected = {
        f"/{name}/customer": {"get", "post"},
        f"/{name}/customer/{{email}}": {"get", "patch", "delete"},
        f"/{name}/invoice": {"get", "post"},
        f"/{name}/invoice/{{id}}": {"get", "patch", "delete"},
        f"/{name}/events": {"get"},
        f"/{name}/events/{{id}}": {"get"},
        f"/{name}/queries/daily_active_users": {"get"},
    }
    with bay.client() as anonymous:  # what exists is public; calling it is not
        alone = anonymous.get(f"/{name}/openapi.json")
    merged = admin.get("/openapi.json")
    assert alone.status_code == 200, alone.text
    assert merged.status_code == 200, merged.text

    for document in (alone.json(), merged.json()):
        paths = {
            path: ops for path, ops in document["paths"].items() if path.startswith(f"/{name}/")
        }
        assert {path: _verbs(ops) for path, ops in paths.items()} == expected
        for path, operations in paths.items():
            for verb in _verbs(operations):
                operation = operations[verb]
                assert operation["summary"], (path, verb)
                assert operation["description"], (path, verb)
                assert operation["security"], (path, verb)
                for parameter in operation.get("parameters", []):
                    assert parameter["description"], (path, verb, parameter["name"])
        customer = paths[f"/{name}/customer"]
        assert "People who buy from us" in customer["get"]["description"]
        query = paths[f"/{name}/queries/daily_active_users"]["get"]
        assert query["description"] == "Distinct customers with any event on a day."
        assert [(p["name"], p["required"]) for p in query["parameters"]] == [("day", True)]
        assert "internal_note" not in json.dumps(paths)
        _assert_refs_resolve(document)
    tags = {tag["name"]: tag.get("description") for tag in merged.json()["tags"]}
    assert tags[name] == "Customers, invoices and activity of the sales database."

    page = admin.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in page.text
    for asset in re.findall(r"""["'](/docs/static/[^"']+)["']""", page.text):
        assert admin.get(asset).status_code == 200, asset


def _verbs(operations: dict[str, Any]) -> set[str]:
    return {verb for verb in operations if verb in ("get", "post", "patch", "put", "delete")}


def _assert_refs_resolve(document: dict[str, Any]) -> None:
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(document)))
    missing = refs - set(document["components"]["schemas"])
    assert not missing, missing
