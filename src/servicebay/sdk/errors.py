"""What the SDK raises: an answer that is an error, no answer at all, or a missing setting.

Scripts catch `ApiError` for anything that went wrong talking to ServiceBay; its
`status`, `detail` and `request_id` are what an admin needs to look the call up.
"""

from __future__ import annotations

from typing import Any


class ConfigurationError(RuntimeError):
    """The client cannot be set up: no URL, no key, or a malformed one."""


class ApiError(Exception):
    """An answer with status >= 400, with the fields of its RFC 9457 problem body.

    `status` is None only for `ApiUnavailable` (no answer arrived). For an answer that is
    not problem JSON, `title` is the status phrase and `detail` the start of its text.
    """

    def __init__(
        self,
        *,
        status: int | None,
        title: str,
        detail: str,
        method: str,
        url: str,
        type: str | None = None,
        errors: list[Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.method = method
        self.url = url
        """Where the call went, without its query string."""
        self.type = type
        self.errors = errors or []
        self.request_id = request_id
        super().__init__(self._message())

    def _message(self) -> str:
        head = f"{self.status} {self.title}" if self.status is not None else self.title
        text = f"{head}: {self.detail}" if self.detail else head
        if self.errors:
            text += " [" + "; ".join(_field_problem(error) for error in self.errors) + "]"
        where = f"{self.method} {self.url}"
        if self.request_id:
            where += f", request {self.request_id}"
        return f"{text} ({where})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments: rebuild from the fields so that the error survives
        # pickling (a multiprocessing pool sends a worker's exception back this way).
        return (_rebuild, (type(self), self._fields()))

    def _fields(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "title": self.title,
            "detail": self.detail,
            "method": self.method,
            "url": self.url,
            "type": self.type,
            "errors": self.errors,
            "request_id": self.request_id,
        }


class ApiUnavailable(ApiError):
    """No answer: the connection was refused or dropped, TLS failed, or time ran out."""

    def __init__(self, *, detail: str, method: str, url: str, **_: Any) -> None:
        super().__init__(
            status=None, title="ServiceBay unavailable", detail=detail, method=method, url=url
        )


def _rebuild(cls: type[ApiError], fields: dict[str, Any]) -> ApiError:
    return cls(**fields)


def _field_problem(error: Any) -> str:
    """`body.email: field required` from a `{"loc": [...], "msg": ...}` item, else its text."""
    if isinstance(error, dict):
        location = error.get("loc") or error.get("field")
        message = error.get("msg") or error.get("message") or error.get("detail")
        if isinstance(location, list):
            location = ".".join(str(part) for part in location)
        if location and message:
            return f"{location}: {message}"
        if message:
            return str(message)
    return str(error)
