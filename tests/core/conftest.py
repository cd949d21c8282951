"""Fixtures for the core tests: real metadata databases, SQLite files and PostgreSQL, and
`bay serve` processes of a test's own."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    pass


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
