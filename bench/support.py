"""What the benchmarks share: a free port, a server started and waited for, an instance of
ServiceBay (`bay init`, `bay serve`), a deployment built, a throwaway PostgreSQL database,
and `wrk`."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from servicebay.runtime.bundle import build_bundle

BAY = str(Path(sys.executable).with_name("bay"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the server exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within 30 s")


def start_servicebay(
    home: Path, log: Path, *, database_url: str | None = None, **settings: str
) -> tuple[subprocess.Popen[bytes], str, str]:
    """`bay init` and `bay serve` for an instance in `home` (BAY_<NAME> for each of
    `settings`, rate limits out of the way): the server, its URL and the admin's key."""
    env = {
        **os.environ,
        "BAY_HOME": str(home),
        "BAY_LOG_LEVEL": "WARNING",
        "BAY_RATE_LIMIT_PER_MINUTE": "10000000",
        "BAY_RATE_LIMIT_BURST": "100000",
        **{f"BAY_{name.upper()}": value for name, value in settings.items()},
    }
    if database_url:
        env["BAY_DATABASE_URL"] = database_url
    created = subprocess.run(  # noqa: S603 - our own command
        [BAY, "init", "--json"], env=env, capture_output=True, text=True, check=True
    )
    port = free_port()
    server = subprocess.Popen(  # noqa: S603 - our own command
        [BAY, "serve", "--port", str(port)], env=env, stdout=log.open("wb"),
        stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_ready(f"{url}/readyz", server)
    return server, url, json.loads(created.stdout)["key"]["key"]


def deploy_folder(admin: httpx.Client, folder: Path, *, name: str | None = None) -> str:
    """Deploy `folder` through the API and wait for its first version to build; the
    digest of its environment. `name`: for kinds named by their folder (cron)."""
    deployment = name or folder.name
    sent = admin.post(
        "/api/v1/deployments",
        data={"name": name} if name else {},
        files={"bundle": ("bundle.tar.gz", build_bundle(folder).data, "application/gzip")},
    )
    if sent.is_error:
        raise SystemExit(f"{deployment} was refused: {sent.text}")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        version = admin.get(f"/api/v1/deployments/{deployment}/versions/1").json()
        if version["status"] == "ready":
            return str(version["requirements_digest"])
        if version["status"] == "failed":
            raise SystemExit(f"{deployment} did not build:\n{version['build_log']}")
        time.sleep(0.2)
    raise SystemExit(f"{deployment} still building after 300 s")


def wrk(url: str, *, duration: int, connections: int, headers: dict[str, str]) -> str:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


POSTGRES_URL_HELP = (
    "a PostgreSQL server (its user may create databases): ServiceBay's metadata goes to a "
    "new database there, dropped afterwards (SQLite in the instance's home if unset)"
)


@asynccontextmanager
async def throwaway_postgres(server_url: str) -> AsyncIterator[str]:
    """`create_database`, and `drop_database` afterwards."""
    url = await create_database(server_url)
    try:
        yield url
    finally:
        await drop_database(url)


async def create_database(server_url: str) -> str:
    """The URL of a new, empty database on the PostgreSQL server of `server_url` (whose
    user may create databases)."""
    name = f"bay_bench_{secrets.token_hex(6)}"
    await _on_server(server_url, f'CREATE DATABASE "{name}"', database=None)
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def drop_database(url: str) -> None:
    """Drop the database of `url`, as `create_database` made it, and any session on it."""
    name = make_url(url).database
    await _on_server(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', database="postgres")


async def _on_server(url: str, statement: str, *, database: str | None) -> None:
    """Run `statement` on the server of `url`, connected to `database` (None: the URL's
    own). A database cannot be dropped from a connection to itself."""
    target = make_url(url)
    server = await asyncpg.connect(
        host=target.host, port=target.port or 5432, user=target.username,
        password=target.password, database=database or target.database or "postgres",
    )  # fmt: skip
    try:
        await server.execute(statement)
    finally:
        await server.close()


def clean_up(
    processes: Sequence[subprocess.Popen[bytes]], database_url: str | None, root: Path
) -> None:
    """Stop a benchmark's processes, then drop its throwaway database (if any) and remove
    its folder, whether or not they stopped in time."""
    try:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
    finally:
        if database_url:
            asyncio.run(drop_database(database_url))
        shutil.rmtree(root, ignore_errors=True)
