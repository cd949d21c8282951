"""Alembic environment: migrations run on the caller's connection, or on the configured URL."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from servicebay.core.db import create_engine
from servicebay.core.models import Base

config = context.config


def run_on(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_on_url(url: str) -> None:
    engine = create_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(run_on)
    await engine.dispose()


shared_connection = config.attributes.get("connection")
if shared_connection is not None:
    run_on(shared_connection)
else:
    asyncio.run(run_on_url(config.get_main_option("sqlalchemy.url") or ""))
