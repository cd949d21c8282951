"""The metadata database's engine: on SQLite, the write transactions of one process take
turns (`WriterTurns`) instead of meeting in SQLite's busy handler."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from servicebay.core import db
from servicebay.core.db import create_engine, session_factory


@asynccontextmanager
async def notes_database(folder: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite:///{folder / 'meta.db'}")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))
    try:
        yield engine
    finally:
        await engine.dispose()


async def bodies(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        return list(
            (await connection.execute(text("SELECT body FROM notes ORDER BY id"))).scalars()
        )


async def settle() -> None:
    """Give every other task its chance to run as far as it can."""
    for _ in range(20):
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)


def test_a_second_writer_waits_for_the_first_to_commit_and_then_writes(tmp_path: Path) -> None:
    first_wrote = asyncio.Event()
    first_may_commit = asyncio.Event()

    async def first(sessions: async_sessionmaker[AsyncSession]) -> None:
        async with sessions() as session, session.begin():
            await session.execute(text("INSERT INTO notes (body) VALUES ('first')"))
            first_wrote.set()
            await first_may_commit.wait()

    async def second(sessions: async_sessionmaker[AsyncSession]) -> None:
        await first_wrote.wait()
        async with sessions() as session, session.begin():
            # Were it to meet the first writer's lock in SQLite, it would fail at once.
            await session.execute(text("PRAGMA busy_timeout = 0"))
            await session.execute(text("INSERT INTO notes (body) VALUES ('second')"))

    async def scenario() -> None:
        async with notes_database(tmp_path) as engine:
            sessions = session_factory(engine)
            writers = [asyncio.create_task(first(sessions)), asyncio.create_task(second(sessions))]
            await first_wrote.wait()
            await settle()
            assert not writers[1].done()  # waiting for its turn, not failing "database is locked"
            assert await bodies(engine) == []  # readers go on, and see no uncommitted row
            first_may_commit.set()
            await asyncio.gather(*writers)
            assert await bodies(engine) == ["first", "second"]

    asyncio.run(scenario())


def test_a_writer_that_rolls_back_gives_its_turn_to_the_next(tmp_path: Path) -> None:
    async def failing_writer(sessions: async_sessionmaker[AsyncSession]) -> None:
        async with sessions() as session, session.begin():
            await session.execute(text("INSERT INTO notes (body) VALUES ('lost')"))
            raise RuntimeError("the caller's own failure")

    async def scenario() -> None:
        async with notes_database(tmp_path) as engine:
            with pytest.raises(RuntimeError, match="own failure"):
                await failing_writer(session_factory(engine))
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO notes (body) VALUES ('kept')"))
            assert await bodies(engine) == ["kept"]

    asyncio.run(scenario())


def test_a_writer_whose_rollback_fails_keeps_its_turn_until_its_connection_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The turn ends when a connection is returned to the pool, before the pool's own
    rollback, only if its transaction has ended: one still open would meet the next
    writer in SQLite's busy handler."""

    async def scenario() -> list[str]:
        async with notes_database(tmp_path) as engine:
            dialect = engine.sync_engine.dialect
            real_rollback = dialect.do_rollback
            failures = iter([OSError("the rollback was interrupted")])

            def rollback_failing_once(connection: object) -> None:
                failure = next(failures, None)
                if failure is not None:
                    raise failure
                real_rollback(connection)  # type: ignore[arg-type]

            async def next_writer() -> None:
                async with engine.begin() as connection:
                    await connection.execute(text("PRAGMA busy_timeout = 0"))
                    await connection.execute(text("INSERT INTO notes (body) VALUES ('kept')"))

            monkeypatch.setattr(dialect, "do_rollback", rollback_failing_once)
            with contextlib.suppress(OSError):
                async with engine.connect() as connection:
                    await connection.execute(text("INSERT INTO notes (body) VALUES ('lost')"))
                    waiting = asyncio.create_task(next_writer())
                    await settle()
            await waiting  # not "database is locked"
            assert next(failures, None) is None  # the rollback did fail once
            return await bodies(engine)

    assert asyncio.run(scenario()) == ["kept"]


def test_many_concurrent_writers_all_commit(tmp_path: Path) -> None:
    async def writer(sessions: async_sessionmaker[AsyncSession], number: int) -> None:
        async with sessions() as session, session.begin():
            await session.execute(text("SELECT count(*) FROM notes"))
            await session.execute(
                text("INSERT INTO notes (body) VALUES (:body)"), {"body": f"note {number}"}
            )
            await asyncio.sleep(0)
            await session.execute(
                text("UPDATE notes SET body = body || '.' WHERE body = :body"),
                {"body": f"note {number}"},
            )

    async def scenario() -> None:
        async with notes_database(tmp_path) as engine:
            sessions = session_factory(engine)
            await asyncio.gather(*(writer(sessions, number) for number in range(40)))
            expected = sorted(f"note {number}." for number in range(40))
            assert sorted(await bodies(engine)) == expected

    asyncio.run(scenario())


def test_a_connection_dropped_without_closing_gives_its_turn_back(tmp_path: Path) -> None:
    async def leave_open(engine: AsyncEngine) -> None:
        connection = await engine.connect()
        await connection.execute(text("INSERT INTO notes (body) VALUES ('abandoned')"))

    async def scenario() -> None:
        async with notes_database(tmp_path) as engine:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # SQLAlchemy warns of the garbage collection
                await leave_open(engine)
                gc.collect()
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO notes (body) VALUES ('next')"))
            assert await bodies(engine) == ["next"]

    asyncio.run(scenario())


def test_a_writer_cancelled_while_it_waits_for_its_turn_is_cancelled(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with notes_database(tmp_path) as engine:
            holder = await engine.connect()
            await holder.execute(text("INSERT INTO notes (body) VALUES ('held')"))

            async def waiter() -> None:
                async with engine.begin() as connection:
                    await connection.execute(text("INSERT INTO notes (body) VALUES ('never')"))

            waiting = asyncio.create_task(waiter())
            await settle()
            await holder.rollback()
            await holder.close()  # the turn passes to the waiter just as it is cancelled
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO notes (body) VALUES ('after')"))
            assert await bodies(engine) == ["after"]

    asyncio.run(scenario())


def test_a_writer_that_never_gets_its_turn_fails_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "WRITE_WAIT_SECONDS", 0.2)

    async def scenario() -> None:
        async with notes_database(tmp_path) as engine:
            holder = await engine.connect()
            await holder.execute(text("INSERT INTO notes (body) VALUES ('held')"))
            with pytest.raises(OperationalError, match="held the write turn for more than"):
                async with engine.begin() as connection:
                    await connection.execute(text("INSERT INTO notes (body) VALUES ('late')"))
            await holder.commit()
            await holder.close()
            assert await bodies(engine) == ["held"]

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("statement", "writes"),
    [
        ("INSERT INTO notes (body) VALUES (?)", True),
        ("  /* a comment */ update notes SET body = ?", True),
        ("-- a comment\nDELETE FROM notes", True),
        ("REPLACE INTO notes (body) VALUES (?)", True),
        ("WITH old AS (SELECT 1) INSERT INTO notes (body) SELECT 'x' FROM old", True),
        ("WITH old AS (SELECT 1) SELECT * FROM old", False),
        ("SELECT body FROM notes", False),
        ("PRAGMA busy_timeout = 0", False),
    ],
)
def test_which_statements_take_a_write_turn(statement: str, writes: bool) -> None:
    assert db._writes(statement) is writes
