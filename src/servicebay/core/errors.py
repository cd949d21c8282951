"""Domain errors: what went wrong, in words a caller can act on.

The gateway maps each to an HTTP problem; the CLI prints its message.
"""

from __future__ import annotations

from typing import Any


class ServiceBayError(Exception):
    """Base of every expected failure; `message` is safe to show to the caller."""

    status = 400
    title = "Bad Request"

    def __init__(self, message: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors

    def headers(self) -> dict[str, str]:
        """Response headers that belong with this error over HTTP."""
        return {}


class InvalidInput(ServiceBayError):
    status = 400
    title = "Invalid input"


class NotAuthenticated(ServiceBayError):
    status = 401
    title = "Unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="servicebay"'}


class Forbidden(ServiceBayError):
    status = 403
    title = "Forbidden"


class NotFound(ServiceBayError):
    status = 404
    title = "Not Found"


class Conflict(ServiceBayError):
    status = 409
    title = "Conflict"


class ServiceUnavailable(ServiceBayError):
    """A service's data source cannot be reached now; the caller may retry."""

    status = 503
    title = "Service Unavailable"


class ConfigurationError(ServiceBayError):
    """The instance is misconfigured (missing master key, wrong database...)."""

    status = 500
    title = "Configuration error"


class MethodNotAllowed(ServiceBayError):
    status = 405
    title = "Method Not Allowed"

    def __init__(self, message: str, *, allow: list[str]) -> None:
        super().__init__(message)
        self.allow = allow

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allow)}


class BadGateway(ServiceBayError):
    """An upstream the gateway forwards to failed: refused, broke off, or answered 5xx."""

    status = 502
    title = "Bad Gateway"


class GatewayTimeout(ServiceBayError):
    """An upstream the gateway forwards to did not answer in time."""

    status = 504
    title = "Gateway Timeout"
