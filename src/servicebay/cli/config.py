"""The login file (`bay login`) and private files in general.

The file holds an API key, so it is created with mode 0600 from the start (never
written first and narrowed afterwards) and replaced atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from servicebay.cli.output import fail


def login_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "servicebay" / "config.json"


def read_private(path: Path) -> dict[str, Any] | None:
    """A JSON object we wrote earlier, or None when the file does not exist."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        fail(f"cannot read {path}: {exc}", "Fix or delete the file, then try again.")
    if not isinstance(data, dict):
        fail(f"{path} does not hold a JSON object", "Fix or delete the file, then try again.")
    return data


def write_private(path: Path, data: dict[str, Any]) -> None:
    """Write JSON readable by its owner only, atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2)
        out.write("\n")
    os.replace(partial, path)


def load_login() -> dict[str, Any]:
    return read_private(login_path()) or {}


def save_login(url: str, key: str) -> Path:
    path = login_path()
    write_private(path, {"url": url, "key": key})
    return path


def forget_login() -> Path | None:
    """Delete the login file; the path it had, or None if there was none."""
    path = login_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    return path
