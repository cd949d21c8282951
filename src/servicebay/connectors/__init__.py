"""The ready connectors: code services shipped with ServiceBay, one deployment folder each.

Each folder (`slack/`, `salesforce/`, ...) is what `bay deploy` takes: a `service.json` of
kind `code`, a `service.py` written with the SDK's service framework, a `README.md` and a
`requirements.txt`. Their programs import only the SDK (staged next to every deployment)
and what their requirements list, never the rest of this package.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from servicebay.core import jsonc

__all__ = ["CONNECTORS", "configured", "folder"]

HERE = Path(__file__).resolve().parent
CONNECTORS = tuple(sorted(path.parent.name for path in HERE.glob("*/service.json")))
"""Every connector shipped: each folder here with a `service.json`."""


def folder(name: str) -> Path:
    """The deployment folder of the connector `name`."""
    if name not in CONNECTORS:
        raise KeyError(f"no connector called {name!r}; there are: {', '.join(CONNECTORS)}")
    return HERE / name


def configured(name: str, env: dict[str, str], into: Path) -> Path:
    """A copy of the connector `name`'s folder, at `into/name`, whose `service.json` adds
    (or replaces) the settings `env`: how an instance points a connector at another address
    (a fake, a proxy) without editing the shipped folder. An older copy is replaced."""
    copy = into / name
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(folder(name), copy)
    config = jsonc.load(copy / "service.json")  # comments allowed, as in any service.json
    config["env"] = {**config.get("env", {}), **env}
    (copy / "service.json").write_text(json.dumps(config, indent=2) + "\n")
    return copy
