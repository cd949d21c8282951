"""Registered services: stored as documents, kept live per node, refreshed within seconds.

Each node keeps a connected `Service` per name. A cheap read of every service's version,
at most once per `ttl`, tells a node that another one re-registered or deleted a service;
the stale instance is closed and rebuilt on its next use.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicebay.core import secret_store
from servicebay.core.crypto import MasterKey
from servicebay.core.errors import (
    ConfigurationError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    ServiceUnavailable,
)
from servicebay.core.models import ServiceRecord, utcnow
from servicebay.services.base import Service
from servicebay.services.kinds import KINDS, REGISTERED_KINDS, parse_spec
from servicebay.services.spec import ServiceSpec

log = logging.getLogger(__name__)


class ServiceRegistry:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], master_key: MasterKey, *, ttl: float
    ) -> None:
        self._sessions = sessions
        self._master_key = master_key
        self._ttl = ttl
        self._versions: dict[str, int] = {}
        self._fresh_until = 0.0
        self._live: dict[str, tuple[int, Service]] = {}
        self._lock = asyncio.Lock()

    async def get(self, name: str) -> Service | None:
        """The live service, connected on first use; None when no such service exists."""
        version = (await self._current_versions()).get(name)
        if version is None:
            return None
        live = self._live.get(name)
        if live is not None and live[0] == version:
            return live[1]
        async with self._lock:
            live = self._live.get(name)
            if live is not None and live[0] == version:
                return live[1]
            async with self._sessions() as session:
                record = await session.get(ServiceRecord, name)
            if record is None:
                return None
            try:
                service = await self._build(parse_spec(record.spec))
            except (ConfigurationError, InvalidInput) as error:
                raise ServiceUnavailable(
                    f"service {name} is unavailable: {error.message}"
                ) from None
            await self._replace(name, record.version, service)
            return service

    async def register(self, document: Any, *, actor: str) -> tuple[ServiceRecord, bool]:
        """Validate the document against its data source, then store it as a new version.

        Connecting first means a wrong table, column or credential is the registrant's
        400, not every caller's 503 later.
        """
        spec = parse_spec(document)
        if spec.kind not in REGISTERED_KINDS:
            raise InvalidInput(f"a {spec.kind} service is deployed, not registered")
        async with self._sessions() as session:
            existing = await session.get(ServiceRecord, spec.name)
        if existing is not None and existing.kind not in REGISTERED_KINDS:
            raise Conflict(
                f"{spec.name} is a deployed {existing.kind} service: delete its deployment "
                f"(`bay deployments delete {spec.name}`) or choose another name"
            )
        try:
            service = await self._build(spec)
        except ConfigurationError as error:
            raise InvalidInput(f"service {spec.name} cannot start: {error.message}") from None
        try:
            async with self._sessions() as session, session.begin():
                record = await session.get(ServiceRecord, spec.name)
                created = record is None
                if record is None:
                    record = ServiceRecord(name=spec.name, version=0, created_by=actor)
                    session.add(record)
                record.kind, record.description = spec.kind, spec.description
                record.spec = spec.model_dump(mode="json", by_alias=False)
                record.version += 1
                record.updated_at = utcnow()
        except Exception:
            await service.close()
            raise
        await self._replace(spec.name, record.version, service)
        self._fresh_until = 0.0
        return record, created

    async def delete(self, name: str) -> None:
        async with self._sessions() as session, session.begin():
            record = await session.get(ServiceRecord, name)
            if record is None:
                raise NotFound(f"no service named {name}")
            if record.kind not in REGISTERED_KINDS:
                raise Conflict(
                    f"{name} is a deployed {record.kind} service: `bay deployments delete "
                    f"{name}` removes it"
                )
            await session.delete(record)
        live = self._live.pop(name, None)
        if live is not None:
            await live[1].close()
        self._fresh_until = 0.0

    async def record(self, name: str) -> ServiceRecord:
        async with self._sessions() as session:
            record = await session.get(ServiceRecord, name)
        if record is None:
            raise NotFound(f"no service named {name}")
        return record

    async def records(self) -> list[ServiceRecord]:
        async with self._sessions() as session:
            return list(await session.scalars(select(ServiceRecord).order_by(ServiceRecord.name)))

    async def live_services(self) -> list[Service]:
        """Every service that can be reached now; one that cannot is logged and left out."""
        services = []
        for name in sorted(await self._current_versions()):
            try:
                service = await self.get(name)
            except ServiceUnavailable as error:
                log.warning("%s", error.message)
                continue
            if service is not None:
                services.append(service)
        return services

    async def close(self) -> None:
        for _, service in self._live.values():
            await service.close()
        self._live.clear()

    async def _build(self, spec: ServiceSpec) -> Service:
        resource = f"service:{spec.name}"

        async def read_secret(name: str) -> str:
            try:
                async with self._sessions() as session:
                    return await secret_store.reveal(
                        session, self._master_key, name, for_resource=resource
                    )
            except NotFound:
                raise InvalidInput(
                    f"service {spec.name} needs secret {name}, which does not exist: "
                    f"`bay secrets set {name} --allow {resource}`"
                ) from None
            except Forbidden:
                raise InvalidInput(
                    f"secret {name} is not allowed for {resource}: "
                    f"`bay secrets allow {name} {resource}`"
                ) from None

        return await KINDS[spec.kind].build(spec, read_secret)

    async def _replace(self, name: str, version: int, service: Service) -> None:
        old = self._live.get(name)
        self._live[name] = (version, service)
        if old is not None and old[1] is not service:
            await old[1].close()

    async def _current_versions(self) -> dict[str, int]:
        if time.monotonic() < self._fresh_until:
            return self._versions
        async with self._sessions() as session:
            rows = await session.execute(select(ServiceRecord.name, ServiceRecord.version))
            self._versions = {name: version for name, version in rows.tuples()}
        self._fresh_until = time.monotonic() + self._ttl
        for name in set(self._live) - set(self._versions):
            await self._live.pop(name)[1].close()
        return self._versions
