"""Keep credentials out of logs and audit records."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode

SENSITIVE_PARAMETERS = frozenset(
    {"api_key", "apikey", "key", "token", "access_token", "password", "secret"}
)
REDACTED = "[REDACTED]"
# Whatever looks like an API key (`bay_` and a long token), wherever a caller put it: in
# a path, another parameter, a field of a bad request. Shown key prefixes are shorter.
API_KEY_LIKE = re.compile(r"bay_[A-Za-z0-9_-]{16,}")
REDACTED_KEY = "bay_[REDACTED]"


def redact_keys(text: str) -> str:
    """`text` with everything shaped like an API key replaced."""
    return API_KEY_LIKE.sub(REDACTED_KEY, text)


def redact_query(query: str) -> str:
    """The query string with every credential-like parameter's value replaced."""
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode(
        [
            (
                redact_keys(name),
                REDACTED if name.lower() in SENSITIVE_PARAMETERS else redact_keys(value),
            )
            for name, value in pairs
        ],
        safe="[]",
    )


def redact_target(path: str, query: str) -> str:
    redacted, path = redact_query(query), redact_keys(path)
    return f"{path}?{redacted}" if redacted else path
