"""HMAC-SHA256 signatures of incoming webhook calls, as the senders people use write them.

- GitHub (and most others): `X-Hub-Signature-256: sha256=<hex of HMAC(secret, body)>`.
- Stripe: `Stripe-Signature: t=<unix time>,v1=<hex of HMAC(secret, "<t>.<body>")>[,v1=...]`,
  refused when `t` is further than `tolerance` from now, so a captured call cannot be
  replayed later.
- Anything else: `X-Signature-256: [sha256=]<hex of HMAC(secret, body)>`.

Comparisons are constant-time. A refusal says which header was wrong and how, never
what the expected signature was.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

STRIPE_TOLERANCE_SECONDS = 300
SIGNATURE_HEADERS = ("x-hub-signature-256", "stripe-signature", "x-signature-256")


class BadSignature(Exception):
    """Why a call's signature does not hold, in words safe to send back to the caller."""


def verify(
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: float | None = None,
    tolerance: int = STRIPE_TOLERANCE_SECONDS,
) -> str:
    """Check the call's signature; returns the style that matched (`github`, `stripe`,
    `generic`), raises BadSignature otherwise. `headers` has lower-case names."""
    key = secret.encode()
    if (github := headers.get("x-hub-signature-256")) is not None:
        _expect(_hex_after_prefix(github, "X-Hub-Signature-256"), _sign(key, body),
                "X-Hub-Signature-256")  # fmt: skip
        return "github"
    if (stripe := headers.get("stripe-signature")) is not None:
        _verify_stripe(key, body, stripe, time.time() if now is None else now, tolerance)
        return "stripe"
    if (generic := headers.get("x-signature-256")) is not None:
        given = generic.removeprefix("sha256=").strip()
        _expect(given, _sign(key, body), "X-Signature-256")
        return "generic"
    raise BadSignature(
        "this webhook needs a signed call: send `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 "
        "of the body>` (or Stripe's `Stripe-Signature`, or `X-Signature-256`)"
    )


def sign(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value for `body`: what a sender (or a test) puts on a call."""
    return f"sha256={_sign(secret.encode(), body)}"


def _sign(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _hex_after_prefix(value: str, header: str) -> str:
    scheme, _, digest = value.strip().partition("=")
    if scheme != "sha256" or not digest:
        raise BadSignature(f"{header} must read `sha256=<hex digest>`")
    return digest


def _expect(given: str, expected: str, header: str) -> None:
    if not hmac.compare_digest(given.lower().encode(), expected.encode()):
        raise BadSignature(f"{header} does not match the body signed with this webhook's secret")


def _verify_stripe(key: bytes, body: bytes, header: str, now: float, tolerance: int) -> None:
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    stamps, signatures = parts.get("t", []), parts.get("v1", [])
    if len(stamps) != 1 or not stamps[0].isdigit() or not signatures:
        raise BadSignature("Stripe-Signature must read `t=<unix time>,v1=<hex digest>`")
    if abs(now - int(stamps[0])) > tolerance:
        raise BadSignature(
            f"Stripe-Signature's timestamp is more than {tolerance} s from now (a replay?)"
        )
    expected = _sign(key, stamps[0].encode() + b"." + body).encode()
    if not any(hmac.compare_digest(given.lower().encode(), expected) for given in signatures):
        raise BadSignature("Stripe-Signature does not match the body signed with this secret")
