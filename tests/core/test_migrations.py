"""The metadata schema: migrations to head and back on SQLite and PostgreSQL, and the
database itself refusing to change the audit log."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from servicebay.core import audit
from servicebay.core.db import create_engine, session_factory
from servicebay.core.migrate import alembic_config, current_revision, head_revision, upgrade
from servicebay.core.models import Base
from tests.core.core_support import execute, migrated_engine

TABLES = {"users", "api_keys", "grants", "secrets", "audit_events", "audit_head"}


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        names: list[str] = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    return set(names)


async def downgrade_to_base(engine: AsyncEngine) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "base")

    async with engine.begin() as connection:
        await connection.run_sync(run)


async def schema_differences(engine: AsyncEngine) -> list[Any]:
    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as connection:
        return await connection.run_sync(compare)


async def audit_head_row(engine: AsyncEngine) -> tuple[int, str]:
    async with engine.connect() as connection:
        row = (await connection.execute(text("SELECT seq, hash FROM audit_head"))).one()
    return int(row[0]), str(row[1])


def test_a_new_database_is_migrated_to_head(database_url: str) -> None:
    async def scenario() -> None:
        engine = create_engine(database_url)
        try:
            assert await current_revision(engine) is None
            await upgrade(engine)
            assert await current_revision(engine) == head_revision()
            assert await table_names(engine) >= TABLES
            assert await audit_head_row(engine) == (0, audit.GENESIS_HASH)
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_the_migrated_schema_is_the_one_the_models_describe(database_url: str) -> None:
    async def scenario() -> None:
        engine = await migrated_engine(database_url)
        try:
            assert await schema_differences(engine) == []
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_migrating_again_changes_nothing(database_url: str) -> None:
    async def scenario() -> None:
        engine = await migrated_engine(database_url)
        try:
            async with session_factory(engine)() as session, session.begin():
                await audit.append(session, [audit.AuditRecord("test.kept", "allowed")])
            await upgrade(engine)
            await upgrade(engine)
            assert await current_revision(engine) == head_revision()
            assert await audit_head_row(engine) == (1, await last_hash(engine))
            async with session_factory(engine)() as session:
                assert (await audit.verify(session)).ok
        finally:
            await engine.dispose()

    asyncio.run(scenario())


async def last_hash(engine: AsyncEngine) -> str:
    async with engine.connect() as connection:
        found = await connection.scalar(text("SELECT hash FROM audit_events ORDER BY seq DESC"))
    return str(found)


def test_downgrade_to_base_removes_everything_and_upgrade_rebuilds_it(database_url: str) -> None:
    async def scenario() -> None:
        engine = await migrated_engine(database_url)
        try:
            await downgrade_to_base(engine)
            assert await current_revision(engine) is None
            assert not (await table_names(engine) & TABLES)
            if engine.dialect.name == "postgresql":
                async with engine.connect() as connection:
                    functions = await connection.scalar(
                        text("SELECT count(*) FROM pg_proc WHERE proname = 'bay_audit_append_only'")
                    )
                assert functions == 0

            await upgrade(engine)

            assert await current_revision(engine) == head_revision()
            assert await table_names(engine) >= TABLES
            assert await audit_head_row(engine) == (0, audit.GENESIS_HASH)
            async with session_factory(engine)() as session, session.begin():
                await audit.append(session, [audit.AuditRecord("test.after", "allowed")])
            with pytest.raises(DBAPIError, match="append-only"):
                await execute(engine, "DELETE FROM audit_events")
        finally:
            await engine.dispose()

    asyncio.run(scenario())


async def one_event(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session, session.begin():
        await audit.append(
            session, [audit.AuditRecord("user.create", "allowed", actor="root@example.com")]
        )


async def events(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    async with engine.connect() as connection:
        result = await connection.execute(
            text("SELECT seq, actor, hash FROM audit_events ORDER BY seq")
        )
        return [tuple(row) for row in result]


def assert_refused(database_url: str, statement: str) -> None:
    """`statement` against the audit log fails as append-only and changes nothing."""

    async def scenario() -> None:
        engine = await migrated_engine(database_url)
        try:
            await one_event(engine)
            before = await events(engine)

            with pytest.raises(DBAPIError, match="append-only"):
                await execute(engine, statement)

            assert await events(engine) == before
        finally:
            await engine.dispose()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET actor = 'mallory@example.com'",
        "DELETE FROM audit_events WHERE seq = 1",
    ],
    ids=["update", "delete"],
)
def test_the_database_refuses_to_change_an_audit_event(database_url: str, statement: str) -> None:
    assert_refused(database_url, statement)


def test_postgresql_refuses_to_truncate_the_audit_log(postgres_url: str) -> None:
    assert_refused(postgres_url, "TRUNCATE audit_events")
