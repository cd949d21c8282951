"""The ready connectors: code services shipped with ServiceBay, one deployment folder each.

Each folder (`slack/`, `salesforce/`, ...) is what `bay deploy` takes: a `service.json` of
kind `code`, a `service.py` written with the SDK's service framework, a `README.md` and a
`requirements.txt`. Their programs import only the SDK (staged next to every deployment)
and what their requirements list, never the rest of this package.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONNECTORS", "folder"]

HERE = Path(__file__).resolve().parent
CONNECTORS = tuple(sorted(path.parent.name for path in HERE.glob("*/service.json")))
"""Every connector shipped: each folder here with a `service.json`."""


def folder(name: str) -> Path:
    """The deployment folder of the connector `name`."""
    if name not in CONNECTORS:
        raise KeyError(f"no connector called {name!r}; there are: {', '.join(CONNECTORS)}")
    return HERE / name
