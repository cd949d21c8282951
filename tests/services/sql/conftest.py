"""Fixtures: one shop database per backend and test worker, shared by every test here
(and one more for the fuzzer, whose random rows would surprise the others).

Creating a PostgreSQL or MariaDB database costs a few hundred milliseconds, so each
worker makes one per backend for the whole session; tests keep to their own rows (their
own `tag` in e-mails, their own days in events). The tests are plain functions: the
service runs on one event loop per worker (`Shop.run`), the loop its pool is bound to.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from servicebay.services.sql.engine import async_url
from servicebay.services.sql.service import SqlService
from tests.services.sql.sql_support import BACKENDS, Shop, new_tag, shop_metadata, shop_spec

SERVERS = {
    "postgres": ("BAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres", '"'),
    "mysql": ("BAY_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test", "`"),
}


class Databases:
    """A fresh database per backend, made on first use and dropped at the end."""

    def __init__(self, folder: Path, runner: asyncio.Runner) -> None:
        self.folder = folder
        self.runner = runner
        self.urls: dict[tuple[str, str], str] = {}
        self.created: list[tuple[str, str]] = []

    def url(self, backend: str, purpose: str) -> str:
        """The database for `purpose` on `backend` (tests that scribble get their own)."""
        if (backend, purpose) not in self.urls:
            self.urls[backend, purpose] = self._create(backend)
        return self.urls[backend, purpose]

    def _create(self, backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{self.folder / f'shop-{secrets.token_hex(4)}.db'}"
        variable, default, quote = SERVERS[backend]
        admin = os.environ.get(variable, default)
        name = f"bay_test_{secrets.token_hex(6)}"
        try:
            self.runner.run(_admin(backend, admin, f"CREATE DATABASE {quote}{name}{quote}"))
        except Exception as error:  # any failure to reach the server means "none here"
            message = f"{backend} is unavailable ({type(error).__name__}); set {variable}"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        self.created.append((backend, name))
        return make_url(admin).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        for backend, name in self.created:
            variable, default, quote = SERVERS[backend]
            force = " WITH (FORCE)" if backend == "postgres" else ""
            statement = f"DROP DATABASE IF EXISTS {quote}{name}{quote}{force}"
            self.runner.run(_admin(backend, os.environ.get(variable, default), statement))


async def _admin(backend: str, admin_url: str, statement: str) -> None:
    url = async_url(admin_url, "tests")
    if backend == "mysql":
        url = url.set(database=None)
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql(statement)
    finally:
        await engine.dispose()


async def build_schema(backend: str, url: str) -> None:
    engine = create_async_engine(async_url(url, "tests"), poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(shop_metadata(backend).create_all)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as running:
        yield running


@pytest.fixture(scope="session")
def databases(
    tmp_path_factory: pytest.TempPathFactory, runner: asyncio.Runner
) -> Iterator[Databases]:
    made = Databases(tmp_path_factory.mktemp("sql"), runner)
    yield made
    made.drop_all()


@pytest.fixture(scope="session", params=BACKENDS)
def shop(
    request: pytest.FixtureRequest, databases: Databases, runner: asyncio.Runner
) -> Iterator[Shop]:
    yield from _open_shop(request.param, "shop", databases, runner)


@pytest.fixture(scope="session", params=BACKENDS)
def fuzzed_shop(
    request: pytest.FixtureRequest, databases: Databases, runner: asyncio.Runner
) -> Iterator[Shop]:
    """A shop of its own for the fuzzer, whose random rows would surprise other tests."""
    yield from _open_shop(request.param, "fuzz", databases, runner)


def _open_shop(
    backend: str, purpose: str, databases: Databases, runner: asyncio.Runner
) -> Iterator[Shop]:
    url = databases.url(backend, purpose)
    runner.run(build_schema(backend, url))
    service = runner.run(SqlService.connect(shop_spec(), url))
    yield Shop(backend, url, service, runner)
    runner.run(service.close())


@pytest.fixture
def tag() -> str:
    """This test's mark on the rows it creates."""
    return new_tag()
