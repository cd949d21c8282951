"""The signed `X-Bay-Identity` header: who the gateway let through to a code service.

The gateway strips the caller's key before proxying, so a code service cannot check a key
itself; instead the gateway signs a short-lived statement of who is calling, and the
service verifies it with a key the two share (`BAY_IDENTITY_KEY` in the service's
environment). A plain `X-Bay-User` header proves nothing to a service that anyone on its
network could reach; the signature does.

Signing and verifying live together here, in the standard-library SDK, so that both
sides share one definition of the format:

    v1.<base64url(JSON payload)>.<base64url(HMAC-SHA256 over "v1.<payload>")>

The payload is `{"user", "teams", "request_id", "service", "issued_at", "expires_at"}`,
times in whole seconds since the epoch; base64url without padding.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any

__all__ = [
    "HEADER",
    "KEY_VARIABLE",
    "Identity",
    "IdentityError",
    "identity_key_from_environment",
    "sign_identity",
    "verify_identity",
]

HEADER = "X-Bay-Identity"
KEY_VARIABLE = "BAY_IDENTITY_KEY"
"""The environment variable that hands a code service the key to verify identities with."""

VERSION = "v1"
DEFAULT_LIFETIME = 60
"""Seconds a signed identity stays valid: long enough for a proxied hop, too short to replay."""
CLOCK_LEEWAY = 30
"""Seconds an identity may seem issued in the future (clocks of two machines drift)."""
_MAX_HEADER = 8192


class IdentityError(ValueError):
    """An `X-Bay-Identity` header that does not prove who is calling; the message says why."""


@dataclass(frozen=True)
class Identity:
    """The caller of a code service, as the gateway vouched for it."""

    user: str
    """The caller's e-mail."""
    teams: tuple[str, ...]
    request_id: str
    """The gateway's request id: quote it in logs so an admin can find the call."""
    service: str
    """The service the identity was signed for; a service refuses one signed for another."""
    issued_at: int
    expires_at: int


def sign_identity(
    key: bytes,
    *,
    user: str,
    teams: list[str] | tuple[str, ...],
    request_id: str,
    service: str,
    now: float | None = None,
    lifetime: int = DEFAULT_LIFETIME,
) -> str:
    """The `X-Bay-Identity` value for `user` calling `service`, valid for `lifetime` seconds."""
    _check_key(key)
    if not user:
        raise ValueError("an identity needs a user")
    if lifetime <= 0:
        raise ValueError(f"lifetime must be a positive number of seconds, not {lifetime!r}")
    issued = int(time.time() if now is None else now)
    payload = {
        "user": user,
        "teams": list(teams),
        "request_id": request_id,
        "service": service,
        "issued_at": issued,
        "expires_at": issued + lifetime,
    }
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=True, sort_keys=True)
    signed = f"{VERSION}.{_encode(text.encode())}"
    return f"{signed}.{_encode(_mac(key, signed))}"


def verify_identity(
    header: str,
    key: bytes,
    *,
    now: float | None = None,
    service: str | None = None,
) -> Identity:
    """The identity `header` states, if `key` signed it, it has not expired, and (when
    `service` is given) it was signed for that service; `IdentityError` otherwise."""
    _check_key(key)
    if not isinstance(header, str) or not header:
        raise IdentityError(f"no {HEADER} header: the call did not come through the gateway")
    if len(header) > _MAX_HEADER:
        raise IdentityError(f"the {HEADER} header is too long to be one the gateway signed")
    parts = header.split(".")
    if not header.isascii() or len(parts) != 3 or parts[0] != VERSION:
        raise IdentityError(
            f"the {HEADER} header is malformed: expected {VERSION}.<payload>.<signature>"
        )
    try:
        signature = _decode(parts[2])
    except ValueError:
        raise IdentityError(f"the {HEADER} header's signature is not base64url") from None
    # Compare before reading the payload: nothing unsigned is parsed.
    if not hmac.compare_digest(signature, _mac(key, f"{parts[0]}.{parts[1]}")):
        raise IdentityError(
            f"the {HEADER} header's signature does not match: not signed with this "
            f"service's {KEY_VARIABLE}, or altered on the way"
        )
    identity = _payload(parts[1])
    moment = time.time() if now is None else now
    if moment >= identity.expires_at:
        raise IdentityError(
            f"the {HEADER} header expired {int(moment - identity.expires_at)} s ago "
            f"(request {identity.request_id})"
        )
    if identity.issued_at > moment + CLOCK_LEEWAY:
        raise IdentityError(
            f"the {HEADER} header was issued {int(identity.issued_at - moment)} s in the "
            "future: check the clocks of the gateway and this machine"
        )
    if service is not None and identity.service != service:
        raise IdentityError(
            f"the {HEADER} header was signed for service {identity.service!r}, not {service!r}"
        )
    return identity


def identity_key_from_environment() -> bytes | None:
    """The key in `BAY_IDENTITY_KEY` (its text, UTF-8 encoded), or None when it is unset."""
    value = os.environ.get(KEY_VARIABLE)
    return value.encode() if value else None


def _payload(encoded: str) -> Identity:
    try:
        document: Any = json.loads(_decode(encoded))
    except ValueError:
        raise IdentityError(f"the {HEADER} header's payload is not base64url JSON") from None
    if not isinstance(document, dict):
        raise IdentityError(f"the {HEADER} header's payload is not a JSON object")
    fields = {
        "user": str,
        "teams": list,
        "request_id": str,
        "service": str,
        "issued_at": int,
        "expires_at": int,
    }
    for name, kind in fields.items():
        value = document.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise IdentityError(f"the {HEADER} header's payload has no valid {name!r}")
    teams = document["teams"]
    if not all(isinstance(team, str) for team in teams):
        raise IdentityError(f"the {HEADER} header's payload has a team that is not a string")
    return Identity(
        user=document["user"],
        teams=tuple(teams),
        request_id=document["request_id"],
        service=document["service"],
        issued_at=document["issued_at"],
        expires_at=document["expires_at"],
    )


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or not key:
        raise ValueError(f"the identity key must be non-empty bytes (see {KEY_VARIABLE})")


def _mac(key: bytes, signed: str) -> bytes:
    return hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()


_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    """Strict and canonical: the decoder would skip stray characters, which would let one
    identity travel as many different headers."""
    if not _BASE64URL.fullmatch(text):
        raise ValueError("not base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if _encode(raw) != text:
        raise ValueError("not canonical base64url")
    return raw
