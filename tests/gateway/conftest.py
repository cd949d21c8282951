"""Fixtures of the HTTP test suite: servers of a test's own, and plain members.

The root conftest's `start_server` is reached through pytest's plugin manager: every
conftest outside a package is the module `conftest`, so importing it by name would find
whichever directory's conftest was loaded last.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Server

ROOT_CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"

StartServer = Callable[..., "Server"]


@pytest.fixture(scope="session")
def launch(pytestconfig: pytest.Config) -> StartServer:
    """The root conftest's `start_server(home, *, database_url, settings, init, master_key)`."""
    for plugin in pytestconfig.pluginmanager.get_plugins():
        origin = getattr(plugin, "__file__", None)
        if origin and Path(origin).resolve() == ROOT_CONFTEST:
            start: StartServer = plugin.start_server
            return start
    raise RuntimeError(f"{ROOT_CONFTEST} is not loaded")


@pytest.fixture
def start_server(launch: StartServer) -> Iterator[StartServer]:
    """Start `bay serve` processes for one test; all are stopped when it ends."""
    started: list[Server] = []

    def start(home: Path, **options: Any) -> Server:
        node = launch(home, **options)
        started.append(node)
        return node

    yield start
    for node in reversed(started):
        node.stop()


@pytest.fixture
def member(server: Server) -> tuple[str, str]:
    """A fresh user without admin rights, teams or grants: (email, key)."""
    return server.new_user()
