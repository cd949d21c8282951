"""The shop database every SQL service test runs against, on SQLite, PostgreSQL and MariaDB.

The same tables are built with SQLAlchemy Core on each backend, each in its own types
(PostgreSQL uuid/jsonb/timestamptz, MySQL's tinyint(1) booleans, SQLite's declared
affinities). Tests call the service directly, as the gateway does, through `Shop`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from servicebay.core.errors import ServiceBayError
from servicebay.services.base import ServiceCall, ServiceReply
from servicebay.services.sql.service import SqlService
from servicebay.services.sql.spec import SqlServiceSpec

T = TypeVar("T")
BACKENDS = ("sqlite", "postgres", "mysql")

SPEC: dict[str, Any] = {
    "name": "shop",
    "kind": "sql",
    "secret": "SHOP_DATABASE_URL",
    "description": "The shop's customers, orders and events.",
    "default_limit": 20,
    "max_limit": 50,
    "tables": {
        "customer": {
            "key": "email",
            "operations": ["read", "create", "update", "delete"],
            "read only": ["tier"],
            "hidden": ["secret_note"],
            "description": "People who bought something.",
        },
        "orders": {"operations": ["read", "create", "update", "delete"]},
        "events": {"description": "What users did, for metrics."},
    },
    "queries": {
        "daily_active_users": {
            "description": "Distinct users with an event on a day.",
            "sql": "SELECT COUNT(DISTINCT user_id) AS users, COUNT(*) AS events FROM events "
            "WHERE DATE(occurred_at) = :day AND user_id < :user_below",
            "params": {
                "day": {"type": "date", "description": "The day (UTC)."},
                "user_below": {"type": "integer", "required": False, "default": 1_000_000},
            },
        }
    },
}


def shop_spec(**changes: Any) -> SqlServiceSpec:
    return SqlServiceSpec.model_validate({**SPEC, **changes})


def shop_metadata(backend: str) -> sa.MetaData:
    """The shop's tables in `backend`'s own types."""
    postgres = backend == "postgres"
    metadata = sa.MetaData()
    sa.Table(
        "customer",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(120), nullable=False),
        sa.Column("name", sa.String(60), nullable=False),
        sa.Column("age", sa.SmallInteger),
        sa.Column("balance", sa.Numeric(10, 2), nullable=False, server_default="0"),
        sa.Column("score", sa.Float),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("born", sa.Date),
        sa.Column("wakes_at", sa.Time),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=postgres),
            nullable=False,
            server_default=sa.func.current_timestamp(),
        ),
        sa.Column("external_id", postgresql.UUID(as_uuid=True) if postgres else sa.String(36)),
        sa.Column("profile", postgresql.JSONB if postgres else sa.JSON),
        sa.Column("tier", sa.String(10), nullable=False, server_default="basic"),
        sa.Column("secret_note", sa.String(100)),
        sa.UniqueConstraint("email", name="uq_customer_email"),
        comment="Customers",
    )
    sa.Table(
        "orders",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "customer_id",
            sa.Integer,
            sa.ForeignKey("customer.id", name="fk_orders_customer"),
            nullable=False,
        ),
        sa.Column("amount", sa.Numeric(10, 2), nullable=False),
        sa.Column(
            "status",
            sa.Enum("new", "paid", "shipped", name="order_status", create_constraint=True),
            nullable=False,
            server_default="new",
        ),
        sa.Column("note", sa.Text),
        sa.CheckConstraint("amount > 0", name="ck_orders_amount_positive"),
    )
    sa.Table(
        "events",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("occurred_at", sa.DateTime, nullable=False),
    )
    return metadata


@dataclass
class Shop:
    """The shop service on one backend, with a way to call it as the gateway would."""

    backend: str
    url: str
    service: SqlService
    runner: asyncio.Runner

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coroutine)

    def call(
        self,
        method: str,
        *path: str,
        query: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: Any = None,
    ) -> ServiceReply:
        pairs = list(query.items()) if isinstance(query, Mapping) else list(query)
        return self.run(self.service.handle(ServiceCall(method, path, pairs, body)))

    def refused(
        self,
        method: str,
        *path: str,
        query: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: Any = None,
    ) -> ServiceBayError:
        with pytest.raises(ServiceBayError) as caught:
            self.call(method, *path, query=query, body=body)
        return caught.value

    def customers(self, tag: str, count: int, **columns: Any) -> list[dict[str, Any]]:
        """`count` new customers `{tag}-{i}@example.com`, created through the service."""
        rows = [
            {"email": f"{tag}-{index}@example.com", "name": f"Customer {index}", **columns}
            for index in range(count)
        ]
        reply = self.call("POST", "customer", body=rows)
        assert reply.status == 201, reply.body
        created: list[dict[str, Any]] = reply.body["data"]
        return created

    def mine(self, tag: str, **query: str) -> list[dict[str, Any]]:
        """The list of this test's customers (and `query`'s filters)."""
        reply = self.call("GET", "customer", query={"email": f"like.{tag}-*", **query})
        assert reply.status == 200, reply.body
        rows: list[dict[str, Any]] = reply.body["data"]
        return rows

    def fingerprint(self) -> str:
        """Every row of every table, hashed: equal before and after means nothing changed."""

        async def read() -> str:
            digest = hashlib.sha256()
            async with self.service.engine.connect() as connection:
                for name in ("customer", "orders", "events"):
                    table = self.service.tables[name].table
                    statement = sa.select(table).order_by(*table.primary_key.columns)
                    for row in await connection.execute(statement):
                        digest.update(repr(tuple(row)).encode())
            return digest.hexdigest()

        return self.run(read())


def new_tag() -> str:
    return f"t{secrets.token_hex(5)}"


_LEAKS = re.compile(
    r"\bselect\s+[\w\"`.*]+(\s*,\s*[\w\"`.*]+)*\s+from\b|\binsert\s+into\b|\bupdate\s+\S+\s+set\b|\bdelete\s+from\b"
    r"|\bdrop\s+table\b|sqlalchemy|asyncpg|asyncmy|aiosqlite|sqlite3|pymysql|\[sql|traceback"
    r"|background on this error|syntax|duplicate entry|violates|constraint failed"
    r"|you have an error|postgresql://|mysql://|sqlite://|password",
    re.IGNORECASE,
)


def assert_no_leak(error: ServiceBayError, url: str, *echoed: str) -> None:
    """The error says nothing of SQL, the driver or the database's URL. What the caller
    sent may be echoed back (a key in a 404, a field name in `loc`), so it is removed
    before looking."""
    text = json.dumps({"message": error.message, "errors": error.errors})
    for sent in echoed:
        for form in (sent, json.dumps(sent)[1:-1], repr(sent)[1:-1]):
            text = text.replace(form, "")
    assert url not in text
    found = _LEAKS.search(text)
    assert found is None, f"{found.group(0)!r} in {text}"


def locs(error: ServiceBayError) -> list[list[Any]]:
    return [list(item["loc"]) for item in error.errors or []]
