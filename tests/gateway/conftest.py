"""Fixtures of the HTTP test suite."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.conftest import Server


@pytest.fixture
def member(server: Server) -> tuple[str, str]:
    """A fresh user without admin rights, teams or grants: (email, key)."""
    return server.new_user()
