"""Keep credentials out of logs and audit records."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

SENSITIVE_PARAMETERS = frozenset(
    {"api_key", "apikey", "key", "token", "access_token", "password", "secret"}
)
REDACTED = "[REDACTED]"


def redact_query(query: str) -> str:
    """The query string with every credential-like parameter's value replaced."""
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode(
        [
            (name, REDACTED if name.lower() in SENSITIVE_PARAMETERS else value)
            for name, value in pairs
        ],
        safe="[]",
    )


def redact_target(path: str, query: str) -> str:
    redacted = redact_query(query)
    return f"{path}?{redacted}" if redacted else path
