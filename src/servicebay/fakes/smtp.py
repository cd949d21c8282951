"""A real SMTP server on loopback (aiosmtpd) standing in for the company's mail server.

It speaks ESMTP as a submission server does: AUTH PLAIN/LOGIN with one login, STARTTLS
(required before AUTH) with a self-signed certificate it makes for 127.0.0.1 when
`tls=True` (clients trust it through `SSL_CERT_FILE=<certificate_path>`), and 550 for
the recipients it is told to refuse. Every message it accepts is kept, parsed, in
`messages`.
"""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from servicebay.fakes.tls import self_signed, server_context

DEMO_USER = "reports@example.com"
DEMO_PASSWORD = "servicebay-demo-smtp-password"  # noqa: S105 (the fake's own, printed for the demo)


@dataclass(frozen=True)
class Delivered:
    sender: str
    recipients: list[str]
    message: EmailMessage
    login: str | None
    """Who authenticated for it; None on a connection without AUTH."""


class FakeSMTP:
    """`start()` listens on `port` (0: a free one), `stop()` ends it; a context manager."""

    name = "email"

    def __init__(
        self,
        *,
        user: str | None = DEMO_USER,
        password: str = DEMO_PASSWORD,
        tls: bool = True,
        refuse: frozenset[str] = frozenset(),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.user = user
        self.password = password
        self.refuse = refuse
        self.host = host
        self.port = port
        self.messages: list[Delivered] = []
        self.certificate_path: Path | None = None
        self._tls = tls
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def start(self) -> Self:
        if self.port == 0:
            with socket.socket() as probe:  # aiosmtpd needs the port before it binds
                probe.bind((self.host, 0))
                self.port = int(probe.getsockname()[1])
        options: dict[str, Any] = {}
        if self.user is not None:
            options.update(
                auth_required=True, authenticator=self._authenticate, auth_require_tls=self._tls
            )
        if self._tls:
            options.update(tls_context=self._context(), require_starttls=True)
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port, **options)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> str:
        settings = (
            f"SMTP_HOST={self.host} SMTP_PORT={self.port} SMTP_STARTTLS={str(self._tls).lower()}"
        )
        if self.user is not None:
            settings += f" SMTP_USER={self.user} SMTP_PASSWORD={self.password}"
        if self.certificate_path is not None:
            settings += f" SSL_CERT_FILE={self.certificate_path}"
        return f"SMTP fake: {settings}"

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        good = (
            isinstance(data, LoginPassword)
            and self.user is not None
            and data.login == self.user.encode()
            and data.password == self.password.encode()
        )
        return AuthResult(success=good, handled=False, auth_data=data.login if good else None)

    def _context(self) -> ssl.SSLContext:
        """A certificate for the host, made now, that clients can be told to trust."""
        folder = Path(tempfile.mkdtemp(prefix="servicebay-smtp-fake-"))
        self.certificate_path, key_path = self_signed(folder, self.host)
        return server_context(self.certificate_path, key_path)


class _Handler:
    def __init__(self, fake: FakeSMTP) -> None:
        self.fake = fake

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.lower() in self.fake.refuse:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        login = session.auth_data.decode() if isinstance(session.auth_data, bytes) else None
        delivered = Delivered(str(envelope.mail_from), list(envelope.rcpt_tos), message, login)
        with self.fake._lock:
            self.fake.messages.append(delivered)
        return "250 2.0.0 Ok: queued"
