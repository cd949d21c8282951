"""Run `bay` as a user would: a real process with its own environment and config folder.

The environment keeps no BAY_* variable the test did not set, and XDG_CONFIG_HOME points
at the test's folder, so `bay login` never touches the developer's own file.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

BAY = str(Path(sys.executable).with_name("bay"))


class Bay:
    """Calls `bay ARGS...` with the server's URL and, unless told otherwise, the admin key."""

    def __init__(self, url: str, key: str | None, config_home: Path) -> None:
        inherited = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("BAY_")
            and name not in {"INTERNAL_API_KEY", "COLUMNS", "LINES", "XDG_CONFIG_HOME"}
        }
        self.env = {**inherited, "BAY_URL": url, "XDG_CONFIG_HOME": str(config_home)}
        if key:
            self.env["BAY_API_KEY"] = key

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        env: dict[str, str | None] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`env` adds variables, or removes those whose value is None."""
        merged = {**self.env, **(env or {})}
        final = {name: value for name, value in merged.items() if value is not None}
        return subprocess.run(
            [BAY, *args],
            env=final,
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def as_(self, key: str) -> Bay:
        """The same server and config folder, another caller."""
        return Bay(self.env["BAY_URL"], key, Path(self.env["XDG_CONFIG_HOME"]))


def unique_email(prefix: str = "cli") -> str:
    return f"{prefix}-{secrets.token_hex(4)}@example.com"


def assert_clean_failure(result: subprocess.CompletedProcess[str], code: int = 2) -> None:
    """An expected failure: the right exit code, a message on stderr, no traceback."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stderr.startswith("Error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
