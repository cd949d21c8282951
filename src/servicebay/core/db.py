"""The metadata database: one async engine per process, SQLite or PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import weakref
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import await_only

from servicebay.core.errors import ConfigurationError

_ASYNC_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}


def async_url(url: str) -> URL:
    """The URL with the async driver this platform uses for its dialect.

    Users write the URL they know (`postgresql://...`, `sqlite:///...`); the driver is ours.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgres":
        backend = "postgresql"
    if backend not in _ASYNC_DRIVERS:
        raise ConfigurationError(
            f"unsupported metadata database {backend!r}: use sqlite:///PATH or postgresql://..."
        )
    return parsed.set(drivername=f"{backend}+{_ASYNC_DRIVERS[backend]}")


def create_engine(url: str) -> AsyncEngine:
    target = async_url(url)
    if target.get_backend_name() == "sqlite":
        _create_private(target.database)
        engine = create_async_engine(target, connect_args={"timeout": WRITE_WAIT_SECONDS})
        event.listen(engine.sync_engine, "connect", _tune_sqlite)
        WriterTurns().attach(engine)
        return engine
    return create_async_engine(target, pool_size=10, max_overflow=20, pool_pre_ping=True)


WRITE_WAIT_SECONDS = 30.0
"""How long a write waits for the database's one writer, in this process or another."""
_WRITING = "servicebay.writing"
"""Set in a connection's `info` while it holds this process's writer turn."""


class WriterTurns:
    """Write transactions of one process take turns on an SQLite database.

    SQLite has one writer at a time. A connection that finds another writing waits in
    SQLite's busy handler, which sleeps 1, 2, 5, 10... 100 ms between looks: with a few
    tasks writing at once (API calls, the worker's claims and endings, the audit writer)
    most of a write's time went to those sleeps. Here a connection takes an asyncio lock
    before its first write statement and gives it back when it is returned to the pool,
    after its commit or rollback: writers of this process queue in order, without
    sleeping. Other processes (`bay` administration, a second node) still meet SQLite's
    own lock. Reads never wait: in WAL mode they see the last commit.
    """

    def __init__(self) -> None:
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def attach(self, engine: AsyncEngine) -> None:
        event.listen(engine.sync_engine, "before_cursor_execute", self._before_execute)
        # However a connection leaves its user (closed, invalidated, or dropped and
        # collected: `detach`), its turn ends with it.
        for returned in ("checkin", "invalidate", "detach"):
            event.listen(engine.sync_engine.pool, returned, self._returned)
        event.listen(engine.sync_engine.pool, "reset", self._reset)

    def _reset(self, dbapi_connection: Any, record: Any, _state: Any) -> None:
        """A committed connection's turn ends before the pool's rollback-on-return (a round
        trip to aiosqlite's thread, with nothing to roll back); one whose rollback failed
        keeps it until the connection is checked in or closed."""
        driver = getattr(dbapi_connection, "driver_connection", None)
        if getattr(driver, "in_transaction", True) is False:
            self._returned(dbapi_connection, record)

    def _before_execute(
        self, connection: Connection, _cursor: Any, statement: str, *_: Any
    ) -> None:
        if _WRITING in connection.info or not _writes(statement):
            return
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        await_only(_take_turn(lock))
        connection.info[_WRITING] = (loop, lock)

    def _returned(self, _dbapi_connection: Any, record: Any, *_: Any) -> None:
        turn = record.info.pop(_WRITING, None) if record is not None else None
        if turn is None:
            return
        loop, lock = turn
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            lock.release()
        elif not loop.is_closed():  # a connection collected on another thread
            loop.call_soon_threadsafe(lock.release)


def holds_write_lock(connection: AsyncConnection) -> bool:
    """Whether the connection's transaction has written (on SQLite: holds the one
    writer's lock, so what it reads next cannot change under it)."""
    return _WRITING in connection.info


async def _take_turn(lock: asyncio.Lock) -> None:
    try:
        async with asyncio.timeout(WRITE_WAIT_SECONDS):
            await lock.acquire()
    except TimeoutError:
        raise sqlite3.OperationalError(
            f"database is locked: another write transaction of this process held the "
            f"write turn for more than {WRITE_WAIT_SECONDS:.0f} s"
        ) from None


_LEADING_COMMENTS = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_WRITE_VERBS = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def _writes(statement: str) -> bool:
    """Whether SQLite starts a write transaction for `statement` (as Python's sqlite3
    module sees it: leading comments skipped, a `WITH` that feeds a write)."""
    skipped = _LEADING_COMMENTS.match(statement)
    text = statement[skipped.end() if skipped else 0 :]
    if text[:4].upper() == "WITH":
        return any(f"{verb} " in text.upper() for verb in _WRITE_VERBS)
    return text[:7].upper().startswith(_WRITE_VERBS)


def _create_private(path: str | None) -> None:
    """Create the database file readable by its owner only (SQLite's WAL and shared-memory
    files copy its mode), whatever the process's umask."""
    if path and path != ":memory:" and not os.path.exists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers proceed while the audit writer commits; NORMAL sync is durable in WAL
    # against process crashes, FULL also against power loss: the audit log asks for FULL.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)
