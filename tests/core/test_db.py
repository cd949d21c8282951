"""The metadata database's engine: on SQLite, the write transactions of one process take
turns (`WriterTurns`) instead of meeting in SQLite's busy handler."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

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
