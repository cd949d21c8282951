"""E-mail: send a message from the company's address through its mail server, over SMTP
with STARTTLS and a login (the standard library's smtplib).

Settings: `SMTP_HOST`, `SMTP_USER`, `SMTP_PASSWORD`, `EMAIL_FROM` (secrets: the
instance's own server, login and sender), `SMTP_PORT` (default 587), `SMTP_STARTTLS`
(default true; false only for a relay on a trusted network).
"""

from __future__ import annotations

import os
import re
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, getaddresses, make_msgid, parseaddr
from functools import cache
from typing import Any

from servicebay.sdk import HttpError, Service
from servicebay.sdk.service import field_error, invalid
from servicebay.sdk.upstream import problem, setting

app = Service(
    "email", description="Send e-mail from the company's address through its mail server (SMTP)."
)

ADDRESS = re.compile(r"[^@\s<>\"(),;:]+@[^@\s<>\"(),;:.]+(\.[^@\s<>\"(),;:.]+)+")
LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
"""What `str.splitlines` splits on."""
MAX_RECIPIENTS = 50
FIELDS = {"to", "cc", "bcc", "subject", "text", "html", "reply_to"}
TIMEOUT = 30.0


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    starttls: bool
    user: str | None
    password: str | None
    sender: str


@cache
def server() -> Server:
    port = setting("SMTP_PORT", "587")
    starttls = setting("SMTP_STARTTLS", "true").lower()
    if not port.isdigit() or starttls not in ("true", "false"):
        raise RuntimeError("SMTP_PORT is a port number and SMTP_STARTTLS true or false")
    user = os.environ.get("SMTP_USER") or None
    sender = setting("EMAIL_FROM")
    if not ADDRESS.fullmatch(parseaddr(sender)[1]):
        raise RuntimeError(f"EMAIL_FROM {sender!r} is not an e-mail address")
    return Server(
        host=setting("SMTP_HOST"),
        port=int(port),
        starttls=starttls == "true",
        user=user,
        password=setting("SMTP_PASSWORD") if user else None,
        sender=sender,
    )


@app.post("/send_email")
def send_email(message: dict[str, Any]) -> dict[str, Any]:
    """Send an e-mail from the company's address: a JSON object with `to` (an address or
    a list), optional `cc`, `bcc` and `reply_to`, a `subject`, and `text` and/or `html`.

    Answers the `message_id` and the recipients the server accepted; a recipient it
    refused is listed in `refused` (all of them refused is a 400).
    """
    built, recipients = _message(message, server())
    refused = _send(built, recipients, server())
    if len(refused) == len(recipients):
        raise HttpError(400, f"the mail server refused every recipient: {_named(refused)}")
    return {
        "message_id": built["Message-ID"],
        "accepted": [address for address in recipients if address not in refused],
        "refused": refused,
    }


def _message(fields: dict[str, Any], settings: Server) -> tuple[EmailMessage, list[str]]:
    """The message to send and all its recipients, or a 400 listing each wrong field."""
    errors: list[dict[str, Any]] = [
        _error(name, "is not a field of a message; use " + ", ".join(sorted(FIELDS)), "unknown")
        for name in fields
        if name not in FIELDS
    ]
    lists = {name: _addresses(fields, name, errors) for name in ("to", "cc", "bcc", "reply_to")}
    recipients = lists["to"] + lists["cc"] + lists["bcc"]
    if "to" in fields and not lists["to"] and not any(e["loc"][1] == "to" for e in errors):
        errors.append(_error("to", "names no recipient", "missing"))
    if "to" not in fields:
        errors.append(_error("to", "is required", "missing"))
    if len(recipients) > MAX_RECIPIENTS:
        errors.append(_error("to", f"more than {MAX_RECIPIENTS} recipients in all", "too_many"))
    subject = fields.get("subject")
    if not isinstance(subject, str) or not subject.strip():
        errors.append(_error("subject", "is required, as text", "missing"))
    elif _breaks_lines(subject):
        errors.append(_error("subject", "is one line: no line breaks", "header"))
    bodies = {name: fields.get(name) for name in ("text", "html") if fields.get(name) is not None}
    for name, body in bodies.items():
        if not isinstance(body, str):
            errors.append(_error(name, "should be text", "type"))
    if not bodies:
        errors.append(_error("text", "give `text`, `html` or both", "missing"))
    if errors:
        raise invalid(errors)
    built = EmailMessage()
    built["From"] = settings.sender
    built["To"] = ", ".join(lists["to"])
    if lists["cc"]:
        built["Cc"] = ", ".join(lists["cc"])
    if lists["reply_to"]:
        built["Reply-To"] = ", ".join(lists["reply_to"])
    built["Subject"] = str(subject).strip()
    built["Message-ID"] = make_msgid(domain=parseaddr(settings.sender)[1].rpartition("@")[2])
    built.set_content(str(bodies.get("text") or "This message is in HTML."))
    if "html" in bodies:
        built.add_alternative(str(bodies["html"]), subtype="html")
    return built, recipients


def _addresses(fields: dict[str, Any], name: str, errors: list[dict[str, Any]]) -> list[str]:
    value = fields.get(name)
    given = [value] if isinstance(value, str) else value if value is not None else []
    if not isinstance(given, list) or not all(isinstance(item, str) for item in given):
        errors.append(_error(name, "should be an address or a list of addresses", "type"))
        return []
    addresses = []
    for item in given:
        wrong = _wrong_address(item)
        if wrong:
            errors.append(_error(name, f"{item!r} {wrong}", "email"))
        else:
            display, address = parseaddr(item)
            addresses.append(formataddr((display, address)) if name == "reply_to" else address)
    return addresses


def _wrong_address(item: str) -> str | None:
    """What is wrong with `item` as one address (`a@b.com` or `Ann <a@b.com>`), or None.

    It must parse as exactly one address that formats back to itself: `parseaddr` keeps
    the first of "a@b.com, c@b.com" and drops the rest without a word, and would pass a
    display name with a line break in it into the header.
    """
    if _breaks_lines(item):
        return "has a line break in it"
    found = getaddresses([item])
    if len(found) != 1:
        return "is more than one address: give a list, one address an item"
    display, address = found[0]
    if not address.isascii():
        return "is not ASCII: such addresses need SMTPUTF8, which the connector does not use"
    if not ADDRESS.fullmatch(address) or parseaddr(formataddr((display, address))) != found[0]:
        return "is not an e-mail address"
    return None


def _breaks_lines(text: str) -> bool:
    """Whether `text` has any of the line breaks `str.splitlines` knows (\\v, \\x85 and
    \\u2028 too, not only CR and LF): the e-mail library refuses each in a header."""
    return not LINE_BREAKS.isdisjoint(text)


def _send(message: EmailMessage, recipients: list[str], settings: Server) -> dict[str, str]:
    """Send to `recipients` (Bcc ones are in no header); the refused ones with the server's
    reply. Failures become problems naming the mail server's answer, never its password."""
    secrets = [settings.password] if settings.password else []
    where = f"{settings.host}:{settings.port}"
    try:
        with smtplib.SMTP(settings.host, settings.port, timeout=TIMEOUT) as connection:
            if settings.starttls:
                connection.starttls(context=ssl.create_default_context())
            if settings.user:
                connection.login(settings.user, settings.password or "")
            refused = connection.send_message(message, to_addrs=recipients)
    except smtplib.SMTPRecipientsRefused as error:
        return {address: _reply(*answer) for address, answer in error.recipients.items()}
    except smtplib.SMTPAuthenticationError as error:
        raise problem(
            "The mail server",
            f"at {where} refused the connector's login "
            f"({_reply(error.smtp_code, error.smtp_error)}): an admin should check "
            "SMTP_USER and SMTP_PASSWORD",
            secrets=secrets,
        ) from None
    except smtplib.SMTPNotSupportedError as error:
        raise problem(
            "The mail server",
            f"at {where} does not offer what the connector needs "
            f"({error}); STARTTLS and AUTH are expected on a submission port",
            secrets=secrets,
        ) from None
    except smtplib.SMTPSenderRefused as error:
        raise problem(
            "The mail server",
            f"at {where} refused the sender {error.sender} "
            f"({_reply(error.smtp_code, error.smtp_error)}): an admin should check "
            "EMAIL_FROM",
            secrets=secrets,
        ) from None
    except smtplib.SMTPResponseException as error:
        raise problem(
            "The mail server",
            f"at {where} answered {_reply(error.smtp_code, error.smtp_error)}",
            secrets=secrets,
        ) from None
    except TimeoutError:
        raise problem(
            "The mail server", f"at {where} did not answer within {TIMEOUT:g} s", status=504
        ) from None
    except ssl.SSLError as error:
        raise problem(
            "The mail server",
            f"at {where} failed the TLS handshake: {error.reason or error}",
            secrets=secrets,
        ) from None
    except (OSError, smtplib.SMTPException) as error:
        raise problem(
            "The mail server", f"at {where} could not be reached: {error}", secrets=secrets
        ) from None
    return {address: _reply(*answer) for address, answer in refused.items()}


def _reply(code: int, text: bytes | str) -> str:
    words = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {words}"


def _named(refused: dict[str, str]) -> str:
    return "; ".join(f"{address} ({answer})" for address, answer in refused.items())


def _error(name: str, message: str, kind: str) -> dict[str, Any]:
    """A wrong field of the message, the body."""
    return field_error(name, message, kind, "body")


if __name__ == "__main__":
    server()  # a missing or wrong setting stops the start, with its name
    app.run()
