"""The e-mail connector sends over SMTP with STARTTLS and a login, to a real SMTP server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from servicebay.fakes.smtp import FakeSMTP
from tests.connectors.conftest import (
    Connector,
    RunConnector,
    assert_documented,
    assert_identity_required,
    assert_problem,
)

USER = "reports@corp.com"
PASSWORD = "smtp-connector-test-password-123"
SENDER = "Corp Reports <reports@corp.com>"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeSMTP]:
    with FakeSMTP(
        user=USER, password=PASSWORD, tls=True, refuse=frozenset({"gone@corp.com"})
    ) as fake:
        yield fake


def settings(fake: FakeSMTP, **changes: str) -> dict[str, str]:
    return {
        "SMTP_HOST": fake.host,
        "SMTP_PORT": str(fake.port),
        "SMTP_USER": USER,
        "SMTP_PASSWORD": PASSWORD,
        "EMAIL_FROM": SENDER,
        "SSL_CERT_FILE": str(fake.certificate_path),
        **changes,
    }


@pytest.fixture(scope="module")
def mailer(fake: FakeSMTP, run_connector: RunConnector) -> Connector:
    return run_connector("email", settings(fake))


@pytest.fixture(autouse=True)
def fresh(fake: FakeSMTP) -> None:
    fake.clear()


def send(connector: Connector, message: dict[str, Any]) -> Any:
    return connector.call("POST", "/send_email", json=message)


def test_a_message_is_sent_after_starttls_and_login(mailer: Connector, fake: FakeSMTP) -> None:
    answer = send(
        mailer,
        {
            "to": ["ana@corp.com", "Bo <bo@corp.com>"],
            "cc": "cy@corp.com",
            "bcc": ["dee@corp.com"],
            "reply_to": "Analytics <analytics@corp.com>",
            "subject": "Weekly report",
            "text": "Followers: 7100",
            "html": "<p>Followers: <b>7100</b></p>",
        },
    )
    assert answer.status_code == 200, answer.text
    sent = answer.json()
    assert sent["accepted"] == ["ana@corp.com", "bo@corp.com", "cy@corp.com", "dee@corp.com"]
    assert sent["refused"] == {}
    (delivered,) = fake.messages
    assert delivered.login == USER
    assert delivered.sender == "reports@corp.com"
    assert delivered.recipients == sent["accepted"]
    message = delivered.message
    assert message["From"] == SENDER
    assert message["To"] == "ana@corp.com, bo@corp.com"
    assert message["Cc"] == "cy@corp.com"
    assert message["Bcc"] is None
    assert message["Reply-To"] == "Analytics <analytics@corp.com>"
    assert message["Subject"] == "Weekly report"
    assert message["Message-ID"] == sent["message_id"]
    assert sent["message_id"].endswith("@corp.com>")
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert text.get_content().strip() == "Followers: 7100"
    assert html is not None
    assert "<b>7100</b>" in html.get_content()


def test_every_wrong_field_is_listed_and_nothing_is_sent(mailer: Connector, fake: FakeSMTP) -> None:
    answer = send(
        mailer,
        {"to": ["not an address"], "cc": 7, "subject": "Hi\r\nBcc: x@evil.com", "attachment": "x"},
    )
    problem = assert_problem(
        answer, 400, "body.attachment", "body.to", "body.cc", "body.subject", "body.text"
    )
    messages = {error["loc"][1]: error["msg"] for error in problem["errors"]}
    assert messages["to"] == "'not an address' is not an e-mail address"
    assert messages["subject"] == "is one line: no line breaks"
    assert fake.messages == []


@pytest.mark.parametrize("a_break", ["\x0b", "\x85", "\u2028", "\r\n"])
def test_a_line_break_of_any_kind_in_a_subject_or_address_is_a_400(
    mailer: Connector, fake: FakeSMTP, a_break: str
) -> None:
    """Any of them could start another header (`Bcc:`) if it got through."""
    answer = send(
        mailer,
        {
            "to": "ana@corp.com",
            "reply_to": f"Eve{a_break}Bcc: x@evil.com <e@x.com>",
            "subject": f"hi{a_break}Bcc: x@evil.com",
            "text": "t",
        },
    )
    problem = assert_problem(answer, 400, "body.subject", "body.reply_to")
    messages = {error["loc"][1]: error["msg"] for error in problem["errors"]}
    assert messages["subject"] == "is one line: no line breaks"
    assert messages["reply_to"].endswith("has a line break in it")
    assert fake.messages == []


@pytest.mark.parametrize(
    ("field", "item", "words"),
    [
        ("to", "ana@corp.com, eve@evil.com", "more than one address"),
        ("cc", "ana@corp.com eve@evil.com", "address"),
        ("bcc", "jös@corp.com", "SMTPUTF8"),
        ("to", "Jös <jös@corp.com>", "SMTPUTF8"),
    ],
)
def test_each_item_is_exactly_one_ascii_address(
    mailer: Connector, fake: FakeSMTP, field: str, item: str, words: str
) -> None:
    """`parseaddr` would keep the first of two addresses and silently drop the other."""
    answer = send(mailer, {"to": "ana@corp.com", field: item, "subject": "s", "text": "t"})
    problem = assert_problem(answer, 400, f"body.{field}")
    assert words in problem["errors"][0]["msg"]
    assert fake.messages == []


def test_a_refused_recipient_is_named_and_the_others_still_get_it(
    mailer: Connector, fake: FakeSMTP
) -> None:
    answer = send(mailer, {"to": ["ana@corp.com", "gone@corp.com"], "subject": "s", "text": "t"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == ["ana@corp.com"]
    assert answer.json()["refused"]["gone@corp.com"].startswith("550 5.1.1")
    assert fake.messages[0].recipients == ["ana@corp.com"]
    everyone = send(mailer, {"to": "gone@corp.com", "subject": "s", "text": "t"})
    assert_problem(everyone, 400, "refused every recipient", "gone@corp.com", "User unknown")


def test_a_wrong_password_is_a_502_for_the_admin_that_never_shows_it(
    fake: FakeSMTP, run_connector: RunConnector
) -> None:
    wrong = run_connector("email", settings(fake, SMTP_PASSWORD="wrong-password-456"))
    answer = send(wrong, {"to": "ana@corp.com", "subject": "s", "text": "t"})
    assert_problem(answer, 502, "refused the connector's login", "535", "SMTP_PASSWORD")
    assert "wrong-password-456" not in answer.text
    assert "wrong-password-456" not in wrong.log_text()
    assert fake.messages == []


def test_a_certificate_the_connector_does_not_trust_is_a_502(
    fake: FakeSMTP, run_connector: RunConnector
) -> None:
    untrusting = {name: value for name, value in settings(fake).items() if name != "SSL_CERT_FILE"}
    answer = send(
        run_connector("email", untrusting), {"to": "a@corp.com", "subject": "s", "text": "t"}
    )
    assert_problem(answer, 502, "TLS handshake", "CERTIFICATE_VERIFY_FAILED")
    assert fake.messages == []


def test_an_unreachable_mail_server_is_a_502(run_connector: RunConnector) -> None:
    closed = FakeSMTP().start()
    closed.stop()
    offline = run_connector(
        "email",
        {
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(closed.port),
            "SMTP_USER": USER,
            "SMTP_PASSWORD": PASSWORD,
            "EMAIL_FROM": SENDER,
        },
    )
    answer = send(offline, {"to": "a@corp.com", "subject": "s", "text": "t"})
    assert_problem(answer, 502, f"127.0.0.1:{closed.port} could not be reached")


def test_calls_without_the_gateways_identity_are_401s(mailer: Connector, fake: FakeSMTP) -> None:
    assert_identity_required(mailer, "POST", "/send_email")
    assert fake.messages == []


def test_the_endpoint_is_documented_and_the_password_is_in_no_log_line(mailer: Connector) -> None:
    """After the error paths too: a wrong message (the password as its subject: no body is
    logged), every recipient refused."""
    assert_documented(mailer, {("POST", "/send_email")})
    assert send(mailer, {"to": "x", "subject": PASSWORD}).status_code == 400
    assert send(mailer, {"to": "gone@corp.com", "subject": "s", "text": "t"}).status_code == 400
    assert PASSWORD not in mailer.log_text()
