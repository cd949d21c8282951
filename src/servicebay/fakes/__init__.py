"""Local fakes of the SaaS APIs the ready connectors call, speaking each vendor's wire format.

Tests run the connectors against them, and `bay demo` runs the connectors against them
so a fresh machine shows every connector working without an account anywhere. Each fake
is a real server on a loopback port: `FakeSlack().start()`, its `url` (and `base_url`, what
a connector uses in place of the vendor's address), `stop()`; or from a shell,
`python -m servicebay.fakes slack --port 8701`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["FAKES", "fake_class"]

FAKES: dict[str, str] = {
    "email": "servicebay.fakes.smtp:FakeSMTP",
    "github": "servicebay.fakes.github:FakeGitHub",
    "instagram": "servicebay.fakes.instagram:FakeInstagram",
    "salesforce": "servicebay.fakes.salesforce:FakeSalesforce",
    "slack": "servicebay.fakes.slack:FakeSlack",
}
"""Each fake by name, as `module:class`; loaded on demand."""


def fake_class(name: str) -> Any:
    """The class of the fake called `name`; a KeyError listing the fakes there are."""
    if name not in FAKES:
        raise KeyError(f"no fake called {name!r}; there are: {', '.join(sorted(FAKES))}")
    module, _, attribute = FAKES[name].partition(":")
    return getattr(import_module(module), attribute)
