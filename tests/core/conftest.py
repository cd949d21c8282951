"""Fixtures for the core tests: real metadata databases, SQLite files and PostgreSQL, and
`bay serve` processes of a test's own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Server

# Every conftest outside a package is the module `conftest`: the root one is found through
# pytest's plugin manager, not imported by name.
ROOT_CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite metadata database in a file of its own (created on first connection)."""
    return f"sqlite:///{tmp_path / 'meta.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on both metadata backends: a fresh SQLite file, a fresh PostgreSQL
    database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def serve(pytestconfig: pytest.Config) -> Iterator[Callable[..., Server]]:
    """The root conftest's `start_server(home, ...)`; every server started is stopped."""
    for plugin in pytestconfig.pluginmanager.get_plugins():
        origin = getattr(plugin, "__file__", None)
        if origin and Path(origin).resolve() == ROOT_CONFTEST:
            launch = plugin.start_server
            break
    else:
        raise RuntimeError(f"{ROOT_CONFTEST} is not loaded")
    started: list[Server] = []

    def start(home: Path, **options: Any) -> Server:
        server: Server = launch(home, **options)
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()
