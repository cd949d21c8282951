"""Webhook signatures: what GitHub, Stripe and generic senders put on a call verifies, and
every way a call can be mis-signed is refused with a reason that reveals nothing."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from servicebay.gateway.signatures import BadSignature, sign, verify

SECRET = "whsec_test_0123456789"
BODY = b'{"action": "opened", "number": 7}'
NOW = 1_800_000_000


def hex_hmac(message: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def stripe_header(timestamp: int, body: bytes = BODY, secret: str = SECRET) -> str:
    return f"t={timestamp},v1={hex_hmac(f'{timestamp}.'.encode() + body, secret)}"


def test_a_github_signature_verifies() -> None:
    headers = {"x-hub-signature-256": f"sha256={hex_hmac(BODY)}"}
    assert verify(SECRET, BODY, headers) == "github"


def test_sign_writes_what_github_sends() -> None:
    assert sign(SECRET, BODY) == f"sha256={hex_hmac(BODY)}"
    assert verify(SECRET, BODY, {"x-hub-signature-256": sign(SECRET, BODY)}) == "github"


def test_upper_case_hex_is_accepted() -> None:
    headers = {"x-hub-signature-256": f"sha256={hex_hmac(BODY).upper()}"}
    assert verify(SECRET, BODY, headers) == "github"


def test_a_stripe_signature_verifies_within_its_tolerance() -> None:
    headers = {"stripe-signature": stripe_header(NOW - 200)}
    assert verify(SECRET, BODY, headers, now=NOW) == "stripe"


def test_stripe_may_send_several_signatures_during_a_secret_rotation() -> None:
    old = hex_hmac(f"{NOW}.".encode() + BODY, "whsec_old")
    header = f"t={NOW},v1={old},{stripe_header(NOW).split(',')[1]}"
    assert verify(SECRET, BODY, {"stripe-signature": header}, now=NOW) == "stripe"


def test_a_generic_signature_verifies_with_or_without_its_prefix() -> None:
    assert verify(SECRET, BODY, {"x-signature-256": hex_hmac(BODY)}) == "generic"
    assert verify(SECRET, BODY, {"x-signature-256": f"sha256={hex_hmac(BODY)}"}) == "generic"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "needs a signed call"),
        ({"x-hub-signature-256": hex_hmac(BODY)}, "must read `sha256=<hex digest>`"),
        ({"x-hub-signature-256": "sha1=abc"}, "must read `sha256=<hex digest>`"),
        ({"x-hub-signature-256": "sha256="}, "must read `sha256=<hex digest>`"),
        ({"x-hub-signature-256": f"sha256={hex_hmac(BODY + b' ')}"}, "does not match"),
        ({"x-hub-signature-256": f"sha256={hex_hmac(BODY, 'other')}"}, "does not match"),
        ({"x-signature-256": "not hex at all"}, "does not match"),
        ({"stripe-signature": "v1=abc"}, "must read `t=<unix time>"),
        ({"stripe-signature": f"t={NOW}"}, "must read `t=<unix time>"),
        ({"stripe-signature": f"t=soon,v1={hex_hmac(BODY)}"}, "must read `t=<unix time>"),
        ({"stripe-signature": stripe_header(NOW - 301)}, "more than 300 s from now"),
        ({"stripe-signature": stripe_header(NOW + 301)}, "more than 300 s from now"),
        ({"stripe-signature": stripe_header(NOW, BODY + b"x")}, "does not match"),
    ],
)
def test_a_mis_signed_call_is_refused_with_a_reason(headers: dict[str, str], reason: str) -> None:
    with pytest.raises(BadSignature, match=reason) as refused:
        verify(SECRET, BODY, headers, now=NOW)
    assert hex_hmac(BODY) not in str(refused.value)
    assert SECRET not in str(refused.value)


def test_the_signed_body_is_the_exact_bytes_received() -> None:
    reformatted = b'{"action":"opened","number":7}'
    with pytest.raises(BadSignature):
        verify(SECRET, reformatted, {"x-hub-signature-256": sign(SECRET, BODY)})
