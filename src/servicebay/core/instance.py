"""Creating an instance (`bay init`) and opening one to serve it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from servicebay.core import audit, identity
from servicebay.core.access import Authenticator, Authorizer
from servicebay.core.crypto import MasterKey, generate_master_key, load_master_key, write_master_key
from servicebay.core.db import create_engine, session_factory
from servicebay.core.errors import ServiceBayError
from servicebay.core.migrate import upgrade
from servicebay.core.models import User
from servicebay.core.settings import Settings


class InstanceExists(ServiceBayError):
    status = 409
    title = "Instance exists"


@dataclass(frozen=True)
class InstanceCreated:
    home: Path
    database_url: str
    admin_email: str
    key_id: str
    api_key: str


async def init_instance(
    settings: Settings, *, admin_email: str, admin_name: str
) -> InstanceCreated:
    """Create the home, the master key, the schema, and the first admin with a key.

    Refuses to touch an instance that already has users: re-running init must never
    replace a master key (every secret would be lost) or mint a second first admin.
    """
    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    engine = create_engine(settings.resolved_database_url)
    try:
        await upgrade(engine)
        sessions = session_factory(engine)
        async with sessions() as session, session.begin():
            if await session.scalar(select(func.count()).select_from(User)):
                raise InstanceExists(
                    f"an instance already exists at {settings.resolved_database_url_display}: "
                    "use it (`bay serve`), or choose another --home / BAY_DATABASE_URL"
                )
            if not settings.master_key:
                if settings.master_key_path.exists():
                    load_master_key(env_value=None, path=settings.master_key_path)
                else:
                    write_master_key(settings.master_key_path, generate_master_key())
            admin = await identity.create_user(
                session, email=admin_email, name=admin_name, teams=[], admin=True
            )
            issued = await identity.create_key(session, admin, name="bootstrap", lifetime=None)
            await audit.append(
                session,
                [
                    audit.AuditRecord(
                        action="instance.init",
                        outcome="allowed",
                        actor=admin.email,
                        resource=f"user:{admin.email}",
                        detail={"key_id": issued.record.id},
                    )
                ],
            )
    finally:
        await engine.dispose()
    return InstanceCreated(
        settings.home,
        settings.resolved_database_url_display,
        admin.email,
        issued.record.id,
        issued.secret,
    )


@dataclass
class Instance:
    """An opened instance: what every request of a serving process shares."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    master_key: MasterKey
    authenticator: Authenticator
    authorizer: Authorizer
    audit: audit.AuditWriter

    @classmethod
    async def open(cls, settings: Settings) -> Instance:
        master_key = load_master_key(env_value=settings.master_key, path=settings.master_key_path)
        engine = create_engine(settings.resolved_database_url)
        await upgrade(engine)
        sessions: async_sessionmaker[Any] = session_factory(engine)
        instance = cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            master_key=master_key,
            authenticator=Authenticator(sessions, ttl=settings.auth_cache_seconds),
            authorizer=Authorizer(sessions, ttl=settings.auth_cache_seconds),
            audit=audit.AuditWriter(engine, batch_max=settings.audit_batch_max),
        )
        await instance.audit.start()
        return instance

    async def close(self) -> None:
        await self.audit.stop()
        await self.engine.dispose()
