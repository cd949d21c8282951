"""The SDK that scripts and code services import: a client for ServiceBay's services and
API, the service framework, and the signed caller identity.

Standard library only, and nothing of the server: deployed scripts run in virtual
environments that hold only their own requirements (`runtime/sdk_stage.py` copies
these files next to them). The framework and identity names load on first use, so a
script that only wants `Client` does not import `http.server`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from servicebay.sdk.client import Client
from servicebay.sdk.errors import ApiError, ApiUnavailable, ConfigurationError

if TYPE_CHECKING:
    from servicebay.sdk.identity import Identity, IdentityError, sign_identity, verify_identity
    from servicebay.sdk.service import HttpError, Service, ServiceDefinitionError

__all__ = [
    "ApiError",
    "ApiUnavailable",
    "Client",
    "ConfigurationError",
    "HttpError",
    "Identity",
    "IdentityError",
    "Service",
    "ServiceDefinitionError",
    "sign_identity",
    "verify_identity",
]

_LAZY = {
    "Identity": "identity",
    "IdentityError": "identity",
    "sign_identity": "identity",
    "verify_identity": "identity",
    "HttpError": "service",
    "Service": "service",
    "ServiceDefinitionError": "service",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"servicebay.sdk.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'servicebay.sdk' has no attribute {name!r}")
