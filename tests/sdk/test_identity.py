"""The signed X-Bay-Identity: what the gateway signs, a code service can verify, and
nothing else passes: not an altered header, an old one, or one signed for another service."""

from __future__ import annotations

import base64
import json

import pytest

from servicebay.sdk.identity import Identity, IdentityError, sign_identity, verify_identity

KEY = b"a-key-the-gateway-and-the-service-share"
NOW = 1_800_000_000


def signed(**changes: object) -> str:
    fields: dict[str, object] = {
        "user": "julius@nyknicks.com",
        "teams": ["marketing", "data_science"],
        "request_id": "req-1",
        "service": "salesforce",
        "now": NOW,
    }
    fields.update(changes)
    return sign_identity(KEY, **fields)  # type: ignore[arg-type]


def test_a_signed_identity_verifies_as_who_was_signed() -> None:
    identity = verify_identity(signed(), KEY, now=NOW + 1, service="salesforce")
    assert identity == Identity(
        user="julius@nyknicks.com",
        teams=("marketing", "data_science"),
        request_id="req-1",
        service="salesforce",
        issued_at=NOW,
        expires_at=NOW + 60,
    )


def test_the_header_is_versioned_and_carries_no_key() -> None:
    header = signed()
    version, payload, _signature = header.split(".")
    assert version == "v1"
    document = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert document["user"] == "julius@nyknicks.com"
    assert KEY.decode() not in header


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda h: h.replace("v1.", "v2.", 1), "malformed"),
        (lambda h: h + ".more", "malformed"),
        (lambda h: h[:-2] + ("AA" if not h.endswith("AA") else "BB"), "signature does not match"),
        (lambda h: h.rsplit(".", 1)[0] + ".!!!", "signature"),
        (lambda h: "", "no X-Bay-Identity"),
        (lambda h: "v1.é.x", "malformed"),
    ],
)
def test_an_altered_header_is_refused(tamper: object, reason: str) -> None:
    with pytest.raises(IdentityError, match=reason):
        verify_identity(tamper(signed()), KEY, now=NOW)  # type: ignore[operator]


@pytest.mark.parametrize(
    "respell",
    [
        lambda h: h[:-5] + "!!" + h[-5:],  # characters the decoder would skip
        lambda h: h + "=",  # padding, which the header never carries
        lambda h: h.replace(".", ".\n", 2),
    ],
)
def test_one_identity_has_one_spelling(respell: object) -> None:
    """A header that decodes to the same bytes but is written differently is refused, so
    a replay cache keyed on the header cannot be dodged."""
    with pytest.raises(IdentityError):
        verify_identity(respell(signed()), KEY, now=NOW, service="salesforce")  # type: ignore[operator]


def test_a_payload_changed_to_another_user_fails_the_signature() -> None:
    version, _payload, signature = signed().split(".")
    forged = dict(user="boss@corp.com", teams=[], request_id="r", service="salesforce",
                  issued_at=NOW, expires_at=NOW + 60)  # fmt: skip
    payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(IdentityError, match="signature does not match"):
        verify_identity(f"{version}.{payload}.{signature}", KEY, now=NOW)


def test_another_key_is_refused() -> None:
    with pytest.raises(IdentityError, match="BAY_IDENTITY_KEY"):
        verify_identity(signed(), b"another key", now=NOW)


def test_an_expired_identity_is_refused() -> None:
    header = signed(lifetime=60)
    verify_identity(header, KEY, now=NOW + 59)
    with pytest.raises(IdentityError, match="expired"):
        verify_identity(header, KEY, now=NOW + 60)


def test_an_identity_from_the_future_is_refused_beyond_clock_drift() -> None:
    header = signed()
    verify_identity(header, KEY, now=NOW - 30)
    with pytest.raises(IdentityError, match="future"):
        verify_identity(header, KEY, now=NOW - 31)


def test_an_identity_signed_for_another_service_is_refused() -> None:
    with pytest.raises(IdentityError, match="signed for service 'salesforce', not 'slack'"):
        verify_identity(signed(), KEY, now=NOW, service="slack")


def test_a_well_signed_payload_of_the_wrong_shape_is_refused() -> None:
    import hashlib
    import hmac

    payload = base64.urlsafe_b64encode(b'{"user": "a", "teams": "x"}').rstrip(b"=").decode()
    mac = hmac.new(KEY, f"v1.{payload}".encode(), hashlib.sha256).digest()
    signature = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    with pytest.raises(IdentityError, match="no valid 'teams'"):
        verify_identity(f"v1.{payload}.{signature}", KEY, now=NOW)


def test_an_empty_key_is_a_mistake_not_a_key() -> None:
    with pytest.raises(ValueError, match="non-empty bytes"):
        sign_identity(b"", user="a", teams=[], request_id="r", service="s")
    with pytest.raises(ValueError, match="non-empty bytes"):
        verify_identity(signed(), b"")
