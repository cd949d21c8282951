"""A pooled async engine for a service's database URL, whatever driver the URL names."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from servicebay.core.errors import ConfigurationError

POOL_SIZE = 20
POOL_OVERFLOW = 20

_ASYNC_DRIVERS = {
    "sqlite": "aiosqlite",
    "postgresql": "asyncpg",
    "postgres": "asyncpg",
    "mysql": "asyncmy",
    "mariadb": "asyncmy",
}
_BACKENDS = {"postgres": "postgresql"}
_CONNECT_ARGS: dict[str, dict[str, Any]] = {
    "postgresql": {"timeout": 10},
    "mysql": {"connect_timeout": 10, "charset": "utf8mb4"},
    "mariadb": {"connect_timeout": 10, "charset": "utf8mb4"},
}
"""An unreachable server fails in seconds, not the drivers' default minute."""


def async_url(url: str, service: str) -> URL:
    """The URL with its backend's async driver, whichever driver (if any) it named.

    Errors never quote the URL: it holds the database's password.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigurationError(
            f"the secret of service {service!r} does not hold a SQLAlchemy URL"
        ) from None
    backend = _BACKENDS.get(parsed.get_backend_name(), parsed.get_backend_name())
    if backend not in _ASYNC_DRIVERS:
        raise ConfigurationError(
            f"service {service!r}: the {backend!r} backend is not supported "
            "(use SQLite, PostgreSQL, MySQL or MariaDB)"
        )
    if backend == "postgresql" and "sslmode" in parsed.query and "ssl" not in parsed.query:
        # libpq's (and psycopg's) spelling; asyncpg takes the same values as `ssl`.
        query = dict(parsed.query)
        query["ssl"] = query.pop("sslmode")
        parsed = parsed.set(query=query)
    return parsed.set(drivername=f"{backend}+{_ASYNC_DRIVERS[backend]}")


def create_engine(url: URL) -> AsyncEngine:
    """Pooled; connections are recycled before servers drop idle ones (MySQL's
    wait_timeout), and a dropped connection invalidates the pool: no ping per request."""
    options: dict[str, Any] = {"pool_recycle": 1800}
    if url.get_backend_name() != "sqlite":
        # Enough connections kept open for a busy gateway: a request that finds the pool
        # empty would otherwise open, and then close, a connection of its own.
        options |= {"pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW}
    engine = create_async_engine(
        url, connect_args=_CONNECT_ARGS.get(url.get_backend_name(), {}), **options
    )
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(connection: Any, record: Any) -> None:
    """SQLite leaves foreign keys unenforced and LIKE case-insensitive unless told:
    make both behave as on PostgreSQL."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA case_sensitive_like = ON")
    cursor.close()


def read_engine(engine: AsyncEngine) -> AsyncEngine:
    """The engine (same pool) for single-statement reads.

    On PostgreSQL they run outside a transaction: a lone SELECT sees one snapshot either
    way, and the BEGIN and ROLLBACK the driver would wrap it in are two round trips more
    than the query itself. Other backends keep their default: switching MySQL's
    autocommit costs a round trip each way, and SQLite's reads are in-process.
    """
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine
