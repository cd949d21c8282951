"""Shared fixtures: real `bay` processes serving real instances on loopback.

`server` is one instance per test worker, shared by tests that only add their own users;
a test that needs a server of its own (other settings, another database) asks for
`start_server` (stopped when the test ends) or, for a server shared by a module,
`launch` (the caller stops it).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

BAY = str(Path(sys.executable).with_name("bay"))
ADMIN_EMAIL = "admin@example.com"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_MYSQL_URL = "mysql://root@127.0.0.1:3306/test"
IN_CI = bool(os.environ.get("CI"))
WHEELS = Path(sys.executable).parent.parent / "wheels"
"""The wheels `make install` downloads, so that builds in the tests never reach an index."""


def offline_wheels(*packages: str) -> Path:
    """The wheels folder, holding a wheel of each of `packages`. Without them the test is
    skipped saying how to get them, except in CI, where `make install` must have."""
    missing = [name for name in packages if not any(WHEELS.glob(f"{name}-*.whl"))]
    if missing:
        message = f"no wheel of {', '.join(missing)} in {WHEELS}: run `make install`"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return WHEELS


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bay(
    *args: str, env: dict[str, str], input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the `bay` command as a user would."""
    return subprocess.run(
        [BAY, *args], env=env, input=input, capture_output=True, text=True, timeout=120
    )


@dataclass
class Server:
    url: str
    admin_key: str
    admin_email: str
    home: Path
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def admin(self) -> httpx.Client:
        return self.client(self.admin_key)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def new_user(self, *, teams: list[str] | None = None, admin: bool = False) -> tuple[str, str]:
        """A fresh user with a key: (email, key)."""
        email = f"user-{secrets.token_hex(4)}@example.com"
        with self.admin() as client:
            created = client.post(
                "/api/v1/users",
                json={"email": email, "name": "Test User", "teams": teams or [], "admin": admin},
            )
            assert created.status_code == 201, created.text
            key = client.post("/api/v1/keys", json={"user": email, "name": "test"})
            assert key.status_code == 201, key.text
        return email, key.json()["key"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def launch_server(
    home: Path,
    *,
    database_url: str | None = None,
    settings: dict[str, str] | None = None,
    init: bool = True,
    master_key: str | None = None,
) -> Server:
    """`bay init` (unless the instance exists) and `bay serve` on a free port."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "BAY_HOME": str(home),
        "BAY_LOG_FORMAT": "json",
        "BAY_RATE_LIMIT_PER_MINUTE": "100000",
        "BAY_RATE_LIMIT_BURST": "10000",
        **(settings or {}),
    }
    if database_url:
        env["BAY_DATABASE_URL"] = database_url
    if master_key:
        env["BAY_MASTER_KEY"] = master_key
    admin_key = ""
    if init:
        created = bay("init", "--json", "--admin-email", ADMIN_EMAIL, env=env)
        assert created.returncode == 0, created.stderr
        admin_key = json.loads(created.stdout)["key"]["key"]
    port = free_port()
    log_path = home / f"serve-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [BAY, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    server = Server(
        f"http://127.0.0.1:{port}", admin_key, ADMIN_EMAIL, home, env, log_path, process
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bay serve exited with {process.returncode}:\n{server.log_text()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"bay serve did not become ready:\n{server.log_text()}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = launch_server(tmp_path_factory.mktemp("instance"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def launch() -> Callable[..., Server]:
    """`launch_server(home, *, database_url, settings, init, master_key)`; stop it yourself."""
    return launch_server


@pytest.fixture
def start_server() -> Iterator[Callable[..., Server]]:
    """Start `bay serve` processes for one test; all are stopped when it ends."""
    started: list[Server] = []

    def start(home: Path, **options: Any) -> Server:
        node = launch_server(home, **options)
        started.append(node)
        return node

    yield start
    for node in reversed(started):
        node.stop()


@pytest.fixture
def admin(server: Server) -> Iterator[httpx.Client]:
    with server.admin() as client:
        yield client


@pytest.fixture
def sales_db(tmp_path: Path) -> Path:
    """A small SQLite business database: customers (two of them) and activity events."""
    path = tmp_path / "sales.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE customer (
                id INTEGER PRIMARY KEY, email VARCHAR(200) NOT NULL UNIQUE,
                name VARCHAR(100) NOT NULL, plan VARCHAR(20) NOT NULL DEFAULT 'free');
            INSERT INTO customer (email, name, plan) VALUES
                ('julius@nyknicks.com', 'Julius Randle', 'pro'),
                ('jalen@nyknicks.com', 'Jalen Brunson', 'free');
            CREATE TABLE events (day DATE NOT NULL, user_email VARCHAR(200) NOT NULL);
            INSERT INTO events VALUES ('2026-11-27', 'a@x'), ('2026-11-27', 'b@x'),
                                      ('2026-11-28', 'a@x');
            """
        )
    return path


def _postgres_admin_url() -> str:
    return os.environ.get("BAY_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


async def _postgres(statement: str) -> None:
    import asyncpg

    url = make_url(_postgres_admin_url())
    connection = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password,
        database=url.database or "postgres",
    )  # fmt: skip
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _mysql_admin_url() -> str:
    return os.environ.get("BAY_TEST_MYSQL_URL", DEFAULT_MYSQL_URL)


async def _mysql(statement: str) -> None:
    import asyncmy

    url = make_url(_mysql_admin_url())
    connection = await asyncmy.connect(
        host=url.host, port=url.port or 3306, user=url.username, password=url.password or "",
    )  # fmt: skip
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(statement)
    finally:
        connection.close()


def _throwaway_database(
    engine: str, admin_url: str, run: Callable[[str], Coroutine[Any, Any, None]], quote: str
) -> Iterator[str]:
    """Create a database for one test and drop it afterwards.

    Without a server the test is skipped with the reason, except in CI, where it fails.
    """
    name = f"bay_test_{secrets.token_hex(6)}"
    try:
        asyncio.run(run(f"CREATE DATABASE {quote}{name}{quote}"))
    except Exception as error:  # any failure to reach the server means "none here"
        variable = f"BAY_TEST_{engine.upper()}_URL"
        message = f"{engine} at {admin_url} is unavailable ({error}); set {variable}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    drop = f"DROP DATABASE IF EXISTS {quote}{name}{quote}"
    asyncio.run(run(drop + (" WITH (FORCE)" if engine == "postgres" else "")))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database (`BAY_TEST_POSTGRES_URL`'s server) for one test."""
    yield from _throwaway_database("postgres", _postgres_admin_url(), _postgres, '"')


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """A new, empty MariaDB/MySQL database (`BAY_TEST_MYSQL_URL`'s server) for one test."""
    yield from _throwaway_database("mysql", _mysql_admin_url(), _mysql, "`")
