"""Helpers the core tests share: migrated engines and raw SQL, as an attacker would use it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from servicebay.core.db import create_engine
from servicebay.core.migrate import upgrade


async def migrated_engine(url: str) -> AsyncEngine:
    """An engine on `url` with the schema at head."""
    engine = create_engine(url)
    await upgrade(engine)
    return engine


async def execute(engine: AsyncEngine, statement: str, **params: Any) -> None:
    """Run one raw statement in its own transaction."""
    async with engine.begin() as connection:
        await connection.execute(text(statement), params)


async def drop_append_only_triggers(engine: AsyncEngine) -> None:
    """What someone with write access to the database does before tampering with the log."""
    if engine.dialect.name == "sqlite":
        await execute(engine, "DROP TRIGGER audit_events_no_update")
        await execute(engine, "DROP TRIGGER audit_events_no_delete")
    else:
        await execute(engine, "DROP TRIGGER audit_events_append_only ON audit_events")
        await execute(engine, "DROP TRIGGER audit_events_no_truncate ON audit_events")
