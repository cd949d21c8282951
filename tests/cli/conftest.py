"""Fixtures for the CLI tests: `bay` runs against the real server of `tests/conftest.py`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cli.cli_support import Bay


@pytest.fixture
def config_home(tmp_path: Path) -> Path:
    return tmp_path / "config"


@pytest.fixture
def bay(server: Any, config_home: Path) -> Bay:
    return Bay(server.url, server.admin_key, config_home)
