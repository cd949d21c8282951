"""ServiceBay: every data source a permissioned REST service, one-command deploys.

`from servicebay import Client, ApiError` is what scripts write. Those names load the
SDK on first use, so the many modules that only want `__version__` (the server, the CLI)
import nothing more, and a script's SDK copy needs only the standard library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from servicebay.sdk import ApiError, ApiUnavailable, Client

__version__ = "0.1.0"
__all__ = ["ApiError", "ApiUnavailable", "Client", "__version__"]

_SDK_NAMES = frozenset({"ApiError", "ApiUnavailable", "Client"})


def __getattr__(name: str) -> Any:
    if name in _SDK_NAMES:
        from servicebay import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'servicebay' has no attribute {name!r}")
