"""What the gateway learns about a request while handling it, for its audit event.

The envelope middleware creates it; authentication fills in who, handlers say what
they changed. It lives in the ASGI scope's `state`, shared by middleware and routes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.types import Scope

STATE_KEY = "servicebay.context"


@dataclass
class RequestContext:
    request_id: str
    actor: str | None = None
    key_id: str | None = None
    action: str | None = None
    resource: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def record(self, action: str, resource: str, **detail: Any) -> None:
        """Name the administrative change this request made, for its audit event."""
        self.action, self.resource = action, resource
        self.detail.update(detail)

    def note_refusal(self, reason: str) -> None:
        self.detail["reason"] = reason


def request_context(scope: Scope) -> RequestContext:
    context = scope.setdefault("state", {}).get(STATE_KEY)
    if context is None:
        # Only reached for requests the envelope does not see (never in the served app).
        context = RequestContext(request_id="-")
        scope["state"][STATE_KEY] = context
    assert isinstance(context, RequestContext)
    return context
