"""`SqlService`: a SQL database's tables and named queries as a REST service."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from servicebay.core.errors import ConfigurationError, Forbidden, InvalidInput
from servicebay.services.base import Permission, ServiceCall, ServiceReply
from servicebay.services.sql.engine import async_url, create_engine, read_engine
from servicebay.services.sql.errors import describe
from servicebay.services.sql.openapi import document
from servicebay.services.sql.queries import NamedQuery, build_queries
from servicebay.services.sql.routes import Route, route
from servicebay.services.sql.schema import TableModel, build_tables, reflect
from servicebay.services.sql.spec import SqlServiceSpec
from servicebay.services.sql.table import TableEndpoints


class SqlService:
    """Built by `connect`, which checks the spec against the database once; afterwards
    every request uses the reflected model and the pooled engine."""

    def __init__(
        self,
        spec: SqlServiceSpec,
        engine: AsyncEngine,
        tables: dict[str, TableModel],
        queries: dict[str, NamedQuery],
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.description = spec.description
        self.engine = engine
        self.tables = tables
        self.queries = queries
        reads = read_engine(engine)
        self._endpoints = {
            name: TableEndpoints(
                spec.name, engine, reads, model, spec.default_limit, spec.max_limit
            )
            for name, model in tables.items()
        }

    @classmethod
    async def connect(cls, spec: SqlServiceSpec, url: str) -> SqlService:
        """Raises InvalidInput listing every table, column or key the spec names that the
        database lacks, and ConfigurationError (never quoting the URL) when the database
        cannot be reached."""
        engine = create_engine(async_url(url, spec.name))
        names = None if spec.tables == "*" else list(spec.tables)
        try:
            async with engine.connect() as connection:
                reflected = await connection.run_sync(reflect, names)
        except (DBAPIError, OSError, TimeoutError) as error:
            await engine.dispose()
            raise ConfigurationError(
                f"service {spec.name!r} cannot reach its database ({describe(error)})"
            ) from None
        except TypeError:  # the driver's connect() refused a keyword: a URL query option
            await engine.dispose()
            raise ConfigurationError(
                f"service {spec.name!r}: its database URL has an option the driver does not take"
            ) from None
        tables, problems = build_tables(spec, reflected)
        queries, query_problems = build_queries(spec)
        problems += query_problems
        if problems:
            await engine.dispose()
            raise InvalidInput(
                f"service {spec.name!r} does not match its database: "
                + "; ".join(problem["msg"] for problem in problems),
                errors=problems,
            )
        return cls(spec, engine, tables, queries)

    def permission_for(self, call: ServiceCall) -> Permission:
        return self._route(call).permission

    async def handle(self, call: ServiceCall) -> ServiceReply:
        found = self._route(call)
        if found.refusal is not None:
            raise Forbidden(found.refusal)
        if found.query is not None:
            return await found.query.run(self.engine, call.query)
        assert found.table is not None
        endpoints = self._endpoints[found.table.name]
        action = found.permission.action
        if found.key is None:
            if action == "create":
                return await endpoints.create_rows(call.body, call.query)
            return await endpoints.list_rows(call.query)
        if action == "update":
            return await endpoints.update_row(found.key, call.body, call.query)
        if action == "delete":
            return await endpoints.delete_row(found.key, call.query)
        return await endpoints.get_row(found.key, call.query)

    def openapi(self) -> dict[str, Any]:
        return document(self.spec, self.tables, self.queries)

    async def close(self) -> None:
        await self.engine.dispose()

    def _route(self, call: ServiceCall) -> Route:
        return route(self.name, self.tables, self.queries, call)
