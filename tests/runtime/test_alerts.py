"""Alerts: once per failure streak and once on recovery, by e-mail, Slack and a webhook.

E-mails go to a real SMTP server on loopback (aiosmtpd) and are parsed as a mail client
would; Slack and the webhook are a local HTTP server that records what it is sent and
answers as it is told. Deployments and runs are rows in a real metadata database, as the
worker leaves them when a run ends.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import json
import logging
import secrets
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from servicebay.core import identity, secret_store
from servicebay.core.crypto import generate_master_key
from servicebay.core.errors import ConfigurationError
from servicebay.core.instance import Instance
from servicebay.core.models import (
    Deployment,
    DeploymentVersion,
    Run,
    RunLogChunk,
    User,
    new_id,
    utcnow,
)
from servicebay.core.settings import Settings
from servicebay.fakes.tls import self_signed
from servicebay.runtime.alerts import (
    LOG_TAIL_LINES,
    SLACK_ALLOW_ENTRY,
    Alerter,
    Streak,
    settle_streaks,
)
from servicebay.runtime.config import CronConfig
from tests.conftest import free_port

PUBLIC_URL = "https://bay.example.com"
SLACK_SECRET = "SLACK_ALERTS_URL"
SLACK_PATH = "/services/T0AAAAAAA/B0BBBBBBB/" + "s" * 24
WEBHOOK_PATH = "/alerts/hook-" + "w" * 24
SMTP_USER = "bay-alerts"
SMTP_PASSWORD = "smtp-pass-" + "p" * 16
NAME = "weekly_report"


# --- local stand-ins for the third parties ----------------------------------------------------


@dataclass
class Delivered:
    recipients: list[str]
    message: EmailMessage


@dataclass
class Mailbox:
    """An aiosmtpd handler keeping every message it accepts."""

    messages: list[Delivered] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(Delivered(list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"

    def subjects(self) -> list[str]:
        return [str(delivered.message["Subject"]) for delivered in self.messages]


@dataclass
class Smtp:
    port: int
    mailbox: Mailbox


def _serve_smtp(**options: Any) -> Iterator[Smtp]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield Smtp(port, mailbox)
    finally:
        controller.stop()


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    """A plain SMTP server on loopback, as many internal relays are."""
    yield from _serve_smtp()


def _authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    good = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == SMTP_USER.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=good, handled=False)


def _trusted_server_context(folder: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A certificate for 127.0.0.1 that this process trusts (SSL_CERT_FILE), as a
    company's own CA would be."""
    certificate, key = self_signed(folder, days=1)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    return context


@pytest.fixture
def tls_smtp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Smtp]:
    """An SMTP server that requires STARTTLS and a login."""
    yield from _serve_smtp(
        tls_context=_trusted_server_context(tmp_path, monkeypatch),
        require_starttls=True,
        auth_required=True,
        authenticator=_authenticate,
    )


@pytest.fixture
def smtps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Smtp]:
    """An SMTP server speaking TLS from the first byte (port 465 style), with a login."""
    yield from _serve_smtp(
        ssl_context=_trusted_server_context(tmp_path, monkeypatch),
        auth_required=True,
        auth_require_tls=False,
        authenticator=_authenticate,
    )


@dataclass(frozen=True)
class Received:
    path: str
    body: dict[str, Any]


class _Answer(BaseHTTPRequestHandler):
    server: _ReceiverServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
        status, text = self.server.receiver.record(Received(self.path, body))
        payload = text.encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read what was received, not stderr."""


class _ReceiverServer(ThreadingHTTPServer):
    receiver: Receiver


class Receiver:
    """An HTTP server on loopback standing in for Slack and the alert webhook: it keeps
    every POST and answers each path with the answers it was given, then 200 "ok"."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._answers: dict[str, list[tuple[int, str]]] = {}
        self._lock = threading.Lock()
        self._server = _ReceiverServer(("127.0.0.1", 0), _Answer)
        self._server.receiver = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def record(self, received: Received) -> tuple[int, str]:
        with self._lock:
            self.received.append(received)
            queued = self._answers.get(received.path)
            return queued.pop(0) if queued else (200, "ok")

    def answer(self, path: str, *answers: tuple[int, str]) -> None:
        with self._lock:
            self._answers[path] = list(answers)

    def bodies(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return [received.body for received in self.received if received.path == path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


# --- an instance, its deployments and their runs --------------------------------------------


def settings_for(tmp_path: Path, smtp: Smtp, receiver: Receiver, **changes: Any) -> Settings:
    """An instance with all three channels: the SMTP server, Slack and the webhook."""
    values: dict[str, Any] = {
        "home": tmp_path,
        "database_url": f"sqlite:///{tmp_path / 'meta.db'}",
        "master_key": generate_master_key().encode(),
        "public_url": PUBLIC_URL,
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port,
        "smtp_from": "ServiceBay <bay@example.com>",
        "alert_slack_secret": SLACK_SECRET,
        "alert_webhook_url": receiver.url + WEBHOOK_PATH,
        "alert_retry_backoff_seconds": 0,
        "alert_timeout_seconds": 5,
        **changes,
    }
    return Settings(**values)


@asynccontextmanager
async def node(settings: Settings) -> AsyncIterator[tuple[Instance, Alerter]]:
    instance = await Instance.open(settings)
    alerter = Alerter(instance, registry=CollectorRegistry())
    try:
        yield instance, alerter
    finally:
        await alerter.stop()
        await instance.close()


async def keep_slack_url(
    instance: Instance, url: str, allow: tuple[str, ...] = (SLACK_ALLOW_ENTRY,)
) -> None:
    """The Slack incoming-webhook URL as a secret, allowed for `alerts` (or `allow`), as
    `bay secrets set SLACK_ALERTS_URL --allow alerts` stores it."""
    async with instance.sessions() as session, session.begin():
        await secret_store.put_secret(
            session, instance.master_key, name=SLACK_SECRET, value=url, allow=list(allow)
        )


async def deploy(
    instance: Instance,
    *,
    name: str = NAME,
    retries: int = 0,
    notify: dict[str, Any] | None = None,
) -> Deployment:
    """A cron deployment at version 1, owned by a new user, as a deploy leaves it."""
    config = CronConfig.model_validate(
        {
            "cron_frequency": "@daily",
            "script_to_run": "job.py",
            "retries": retries,
            "notify": notify or {},
        }
    ).model_dump(mode="json")
    async with instance.sessions() as session, session.begin():
        owner = await identity.create_user(
            session,
            email=f"owner-{secrets.token_hex(3)}@example.com",
            name="Owner",
            teams=[],
            admin=False,
        )
        deployment = Deployment(
            id=new_id("dep"), name=name, kind="cron", owner_id=owner.id, active_version=1
        )
        session.add(deployment)
        await session.flush()
        session.add(version_row(deployment, 1, config, created_by=owner.email, status="ready"))
    return deployment


def version_row(
    deployment: Deployment, number: int, config: dict[str, Any], *, created_by: str, status: str
) -> DeploymentVersion:
    return DeploymentVersion(
        id=new_id("ver"),
        deployment_id=deployment.id,
        version=number,
        config=config,
        bundle_digest="0" * 64,
        requirements_digest="0" * 64,
        status=status,
        build_log="",
        created_by=created_by,
        created_at=utcnow(),
    )


REASONS = {
    "succeeded": "exited with code 0",
    "failed": "exited with code 1",
    "timed_out": "timed out after 600 s",
    "cancelled": "cancelled (killed by SIGTERM)",
    "skipped": "the run before was still running",
}


async def ended_run(
    instance: Instance,
    deployment: Deployment,
    status: str,
    *,
    attempt: int = 1,
    trigger: str = "schedule",
    log_lines: list[str] | None = None,
) -> Run:
    """A run of version 1 as the worker records its end, with its log."""
    now = utcnow()
    run = Run(
        id=new_id("run"),
        deployment_id=deployment.id,
        version=1,
        trigger=trigger,
        attempt=attempt,
        status=status,
        reason=REASONS[status],
        exit_code={"succeeded": 0, "failed": 1}.get(status),
        created_at=now - dt.timedelta(seconds=10),
        started_at=now - dt.timedelta(seconds=9),
        finished_at=now,
        cancel_requested=False,
        log_bytes=0,
        log_truncated=False,
    )
    async with instance.sessions() as session, session.begin():
        session.add(run)
        await session.flush()
        if log_lines:
            session.add(RunLogChunk(run_id=run.id, text="".join(f"{line}\n" for line in log_lines)))
    return run


async def finish(
    instance: Instance, alerter: Alerter, deployment: Deployment, status: str, **options: Any
) -> Run:
    """A run ends and the alerter is told; returns once its alerts are sent."""
    run = await ended_run(instance, deployment, status, **options)
    await tell(instance, alerter, deployment, run)
    await alerter.drain()
    return run


async def tell(instance: Instance, alerter: Alerter, deployment: Deployment, run: Run) -> None:
    """What the worker does as a run ends: settle the streak in a transaction (the one that
    records the ending, for the worker), then announce a change, if there was one."""
    async with instance.sessions() as session, session.begin():
        config = await session.scalar(
            select(DeploymentVersion.config).where(
                DeploymentVersion.deployment_id == deployment.id,
                DeploymentVersion.version == run.version,
            )
        )
        [streak] = await settle_streaks(session, [(run, config or {})])
    if streak is not None:
        alerter.announce(deployment, run, streak)


async def is_failing(instance: Instance, deployment: Deployment) -> bool:
    async with instance.sessions() as session:
        failing = await session.scalar(
            select(Deployment.failing).where(Deployment.id == deployment.id)
        )
    assert failing is not None
    return failing


async def owner_of(instance: Instance, deployment: Deployment) -> str:
    async with instance.sessions() as session:
        owner = await session.get(User, deployment.owner_id)
    assert owner is not None
    return owner.email


def counted(alerter: Alerter, channel: str, outcome: str) -> float:
    value = alerter.metrics.alerts.labels(channel, outcome)._value.get()
    return float(value)


def our_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What this process logged, without the test SMTP server's own log (`mail.log`)."""
    return [record for record in caplog.records if not record.name.startswith("mail.")]


def logged(caplog: pytest.LogCaptureFixture, level: int = logging.DEBUG) -> str:
    return "\n".join(
        record.getMessage() for record in our_records(caplog) if record.levelno >= level
    )


# --- the failure streak -----------------------------------------------------------------------


def test_a_failure_streak_alerts_once_and_its_recovery_once(
    tmp_path: Path, smtp: Smtp, receiver: Receiver
) -> None:
    async def scenario() -> tuple[Run, Run, list[bool]]:
        async with node(settings_for(tmp_path, smtp, receiver)) as (instance, alerter):
            await keep_slack_url(instance, receiver.url + SLACK_PATH)
            deployment = await deploy(instance)
            states = []
            first = await finish(instance, alerter, deployment, "failed")
            states.append(await is_failing(instance, deployment))
            await finish(instance, alerter, deployment, "timed_out")
            await finish(instance, alerter, deployment, "failed")
            states.append(await is_failing(instance, deployment))
            recovery = await finish(instance, alerter, deployment, "succeeded")
            states.append(await is_failing(instance, deployment))
            await finish(instance, alerter, deployment, "succeeded")
            assert deployment.failing is False
            return first, recovery, states

    first, recovery, states = asyncio.run(scenario())

    assert states == [True, True, False]
    assert smtp.mailbox.subjects() == [
        f"[ServiceBay] {NAME} is failing: run {first.id} exited with code 1",
        f"[ServiceBay] {NAME} recovered: run {recovery.id} succeeded",
    ]
    assert [body["event"] for body in receiver.bodies(WEBHOOK_PATH)] == [
        "run.failing",
        "run.recovered",
    ]
    assert len(receiver.bodies(SLACK_PATH)) == 2


def test_a_success_told_with_the_deployment_as_read_before_the_failure_still_recovers(
    tmp_path: Path, smtp: Smtp, receiver: Receiver
) -> None:
    """Each run's Deployment is read when it is claimed: a success claimed before a
    failure ended still carries `failing=False`, and must end the streak all the same."""

    async def scenario() -> tuple[Run, bool]:
        async with node(settings_for(tmp_path, smtp, receiver)) as (instance, alerter):
            deployment = await deploy(instance)
            as_claimed = [await read_deployment(instance, deployment.id) for _ in range(2)]
            failed = await ended_run(instance, deployment, "failed")
            succeeded = await ended_run(instance, deployment, "succeeded")
            await tell(instance, alerter, as_claimed[0], failed)
            await tell(instance, alerter, as_claimed[1], succeeded)
            await alerter.drain()
            return succeeded, await is_failing(instance, deployment)

    succeeded, failing = asyncio.run(scenario())

    assert failing is False
    recovered = f"[ServiceBay] {NAME} recovered: run {succeeded.id} succeeded"
    assert recovered in smtp.mailbox.subjects()


async def read_deployment(instance: Instance, deployment_id: str) -> Deployment:
    async with instance.sessions() as session:
        found = await session.get(Deployment, deployment_id)
    assert found is not None
    return found


def test_a_plain_success_alerts_nobody(tmp_path: Path, smtp: Smtp, receiver: Receiver) -> None:
    async def scenario() -> bool:
        async with node(settings_for(tmp_path, smtp, receiver)) as (instance, alerter):
            deployment = await deploy(instance)
            await finish(instance, alerter, deployment, "succeeded")
            return await is_failing(instance, deployment)

    assert asyncio.run(scenario()) is False
    assert smtp.mailbox.messages == []
    assert receiver.received == []


def test_cancelled_and_skipped_runs_neither_start_nor_end_a_streak(
    tmp_path: Path, smtp: Smtp, receiver: Receiver
) -> None:
    async def scenario() -> list[bool]:
        async with node(settings_for(tmp_path, smtp, receiver)) as (instance, alerter):
            deployment = await deploy(instance)
            states = []
            for status in ("cancelled", "skipped", "failed", "cancelled", "skipped"):
                await finish(instance, alerter, deployment, status)
                states.append(await is_failing(instance, deployment))
            return states

    assert asyncio.run(scenario()) == [False, False, True, True, True]
    assert len(smtp.mailbox.messages) == 1
    assert [body["event"] for body in receiver.bodies(WEBHOOK_PATH)] == ["run.failing"]


def test_a_failure_the_worker_will_retry_is_not_alerted_yet(
    tmp_path: Path, smtp: Smtp, receiver: Receiver
) -> None:
    async def scenario() -> tuple[Run, list[bool]]:
        async with node(settings_for(tmp_path, smtp, receiver)) as (instance, alerter):
            healed = await deploy(instance, name="healed", retries=2)
            await finish(instance, alerter, healed, "failed", attempt=1)
            await finish(instance, alerter, healed, "succeeded", attempt=2, trigger="retry")
            broken = await deploy(instance, name="broken", retries=2)
            states = []
            for attempt in (1, 2):
                await finish(instance, alerter, broken, "timed_out", attempt=attempt)
                states.append(await is_failing(instance, broken))
            last = await finish(instance, alerter, broken, "failed", attempt=3, trigger="retry")
            states.append(await is_failing(instance, broken))
            return last, states

    last, states = asyncio.run(scenario())

    assert states == [False, False, True]
    assert smtp.mailbox.subjects() == [
        f"[ServiceBay] broken is failing: run {last.id} exited with code 1"
    ]


def test_endings_settled_together_flip_the_streak_as_they_would_one_by_one(
    tmp_path: Path, smtp: Smtp, receiver: Receiver, database_url: str
) -> None:
    """The worker settles a batch of endings in one transaction: each deployment's streak
    changes as if its runs had ended one after the other, in the batch's order."""
    settings = settings_for(tmp_path, smtp, receiver, database_url=database_url)

    async def scenario() -> tuple[list[Streak | None], list[Streak | None], bool, bool]:
        async with node(settings) as (instance, _):
            steady = await deploy(instance, name="steady", retries=1)
            flaky = await deploy(instance, name="flaky")
            batch = [
                (steady, "failed", 1),  # retried: tells nothing
                (flaky, "failed", 1),
                (steady, "succeeded", 2),
                (flaky, "succeeded", 1),
                (flaky, "timed_out", 1),
                (flaky, "cancelled", 1),
            ]
            ended = [
                await ended_run(instance, deployment, status, attempt=attempt)
                for deployment, status, attempt in batch
            ]
            configs = {steady.id: {"retries": 1}, flaky.id: {}}
            async with instance.sessions() as session, session.begin():
                first = await settle_streaks(
                    session, [(run, configs[run.deployment_id]) for run in ended]
                )
            async with instance.sessions() as session, session.begin():
                again = await settle_streaks(
                    session, [(run, configs[run.deployment_id]) for run in ended[1:]]
                )
            return (
                first,
                again,
                await is_failing(instance, steady),
                await is_failing(instance, flaky),
            )

    first, again, steady_failing, flaky_failing = asyncio.run(scenario())

    assert first == [None, "run.failing", None, "run.recovered", "run.failing", None]
    assert again == [None, None, "run.recovered", "run.failing", None]  # flaky was failing
    assert (steady_failing, flaky_failing) == (False, True)


def test_a_batch_of_endings_waits_for_another_nodes_and_sees_what_it_left(
    tmp_path: Path, smtp: Smtp, receiver: Receiver, postgres_url: str
) -> None:
    """Node A's failure is being recorded; node B settles a failure and then a success of
    the same deployment meanwhile. B waits for A's transaction, so its failure continues
    A's streak and its success ends it: as if the endings had come one after another."""
    settings = settings_for(tmp_path, smtp, receiver, database_url=postgres_url)

    async def scenario() -> tuple[list[Streak | None], list[Streak | None], bool, bool]:
        async with node(settings) as (first, _), node(settings) as (second, _):
            deployment = await deploy(first)
            failed = await ended_run(first, deployment, "failed")
            later = [await ended_run(first, deployment, s) for s in ("failed", "succeeded")]
            async with first.sessions() as a, second.sessions() as b:
                await a.begin()
                mine = await settle_streaks(a, [(failed, {})])
                await b.begin()
                theirs = asyncio.create_task(settle_streaks(b, [(run, {}) for run in later]))
                await asyncio.sleep(0.5)
                waited = not theirs.done()
                await a.commit()
                told = await theirs
                await b.commit()
            return mine, told, waited, await is_failing(first, deployment)

    mine, told, waited, failing = asyncio.run(scenario())

    assert waited
    assert mine == ["run.failing"]
    assert told == [None, "run.recovered"]
    assert failing is False


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def test_two_nodes_ending_runs_of_one_deployment_at_once_send_one_alert(
    tmp_path: Path, smtp: Smtp, receiver: Receiver, database_url: str
) -> None:
    settings = settings_for(tmp_path, smtp, receiver, database_url=database_url)
    names = [f"job-{number}" for number in range(5)]

    async def both(
        one: tuple[Instance, Alerter], other: tuple[Instance, Alerter], deployment: Deployment,
        status: str,
    ) -> None:  # fmt: skip
        runs = [await ended_run(instance, deployment, status) for instance, _ in (one, other)]
        await asyncio.gather(tell(*one, deployment, runs[0]), tell(*other, deployment, runs[1]))
        await asyncio.gather(one[1].drain(), other[1].drain())

    async def scenario() -> None:
        async with node(settings) as first, node(settings) as second:
            deployments = [await deploy(first[0], name=name) for name in names]
            for status in ("failed", "succeeded"):
                await asyncio.gather(
                    *(both(first, second, deployment, status) for deployment in deployments)
                )

    asyncio.run(scenario())

    subjects = smtp.mailbox.subjects()
    for name in names:
        assert len([s for s in subjects if s.startswith(f"[ServiceBay] {name} is failing")]) == 1
        assert len([s for s in subjects if s.startswith(f"[ServiceBay] {name} recovered")]) == 1
    assert len(subjects) == 2 * len(names)
    assert len(receiver.bodies(WEBHOOK_PATH)) == 2 * len(names)


# --- what the alerts say ----------------------------------------------------------------------


def test_the_failure_email_says_what_failed_and_links_to_the_run(
    tmp_path: Path, smtp: Smtp, receiver: Receiver
) -> None:
    lines = [f"2026-11-29T09:00:{n % 60:02d}.000Z stdout line {n:03d}" for n in range(1, 101)]

    async def scenario() -> tuple[Run, str]:
        async with node(settings_for(tmp_path, smtp, receiver)) as (instance, alerter):
            deployment = await deploy(
                instance, notify={"email": ["data-team@example.com"], "slack": False}
            )
            run = await finish(instance, alerter, deployment, "timed_out", log_lines=lines)
            return run, await owner_of(instance, deployment)

    run, owner = asyncio.run(scenario())

    [delivered] = smtp.mailbox.messages
    message = delivered.message
    assert (
        message["Subject"] == f"[ServiceBay] {NAME} is failing: run {run.id} timed out after 600 s"
    )
    assert delivered.recipients == [owner, "data-team@example.com"]
    assert message["To"] == f"{owner}, data-team@example.com"
    assert message["From"] == "ServiceBay <bay@example.com>"
    assert message["Auto-Submitted"] == "auto-generated"
    body = message.get_content()
    assert f"{PUBLIC_URL}/api/v1/runs/{run.id}" in body
    for label, value in (
        ("Deployment", f"{NAME} (cron)"),
        ("Version", "1"),
        ("Trigger", "schedule"),
        ("Status", "timed_out"),
        ("Reason", "timed out after 600 s"),
        ("Owner", owner),
    ):
        assert any(line.startswith(label) and line.endswith(value) for line in body.splitlines()), (
            label,
            body,
        )
    first_kept = 100 - LOG_TAIL_LINES + 1
    assert f"line {first_kept:03d}" in body
    assert "line 100" in body
    assert f"line {first_kept - 1:03d}" not in body


def test_slack_gets_the_summary_the_log_and_a_link(
    tmp_path: Path, smtp: Smtp, receiver: Receiver
) -> None:
    async def scenario() -> Run:
        async with node(settings_for(tmp_path, smtp, receiver)) as (instance, alerter):
            await keep_slack_url(instance, receiver.url + SLACK_PATH)
            deployment = await deploy(instance)
            log_lines = ["stderr Traceback (most recent call last):", "stderr KeyError: 'x' <&>"]
            return await finish(instance, alerter, deployment, "failed", log_lines=log_lines)

    run = asyncio.run(scenario())

    [message] = receiver.bodies(SLACK_PATH)
    text = message["text"]
    assert f"{NAME} is failing: run {run.id} exited with code 1" in text
    assert f"<{PUBLIC_URL}/api/v1/runs/{run.id}|" in text
    assert "KeyError: 'x' &lt;&amp;&gt;" in text


def test_the_webhook_gets_the_event_the_run_and_a_link(
    tmp_path: Path, smtp: Smtp, receiver: Receiver
) -> None:
    async def scenario() -> tuple[Run, Run]:
        async with node(settings_for(tmp_path, smtp, receiver)) as (instance, alerter):
            deployment = await deploy(instance)
            failed = await finish(
                instance, alerter, deployment, "failed", trigger="manual", log_lines=["stderr boom"]
            )
            recovered = await finish(instance, alerter, deployment, "succeeded")
            return failed, recovered

    failed, recovered = asyncio.run(scenario())

    failing, recovery = receiver.bodies(WEBHOOK_PATH)
    assert failing["event"] == "run.failing"
    assert failing["summary"] == f"{NAME} is failing: run {failed.id} exited with code 1"
    assert failing["deployment"]["name"] == NAME
    assert failing["deployment"]["kind"] == "cron"
    assert failing["run"]["id"] == failed.id
    assert failing["run"]["status"] == "failed"
    assert failing["run"]["trigger"] == "manual"
    assert failing["run"]["exit_code"] == 1
    assert failing["log_tail"] == ["stderr boom"]
    assert failing["link"] == f"{PUBLIC_URL}/api/v1/runs/{failed.id}"
    assert recovery["event"] == "run.recovered"
    assert recovery["run"]["id"] == recovered.id
    assert recovery["link"] == f"{PUBLIC_URL}/api/v1/runs/{recovered.id}"


def test_notify_turns_the_instance_channels_off_for_a_deployment(
    tmp_path: Path, smtp: Smtp, receiver: Receiver
) -> None:
    async def scenario() -> None:
        async with node(settings_for(tmp_path, smtp, receiver)) as (instance, alerter):
            await keep_slack_url(instance, receiver.url + SLACK_PATH)
            deployment = await deploy(instance, notify={"slack": False, "webhook": False})
            await finish(instance, alerter, deployment, "failed")

    asyncio.run(scenario())

    assert len(smtp.mailbox.messages) == 1
    assert receiver.received == []


def test_a_failed_build_alerts_the_owner_and_whoever_deployed_it(
    tmp_path: Path, smtp: Smtp, receiver: Receiver
) -> None:
    build_log = "\n".join(
        [*(f"Collecting package{n}" for n in range(50)), "ERROR: No matching distribution found"]
    )

    async def scenario() -> tuple[str, bool]:
        async with node(settings_for(tmp_path, smtp, receiver)) as (instance, alerter):
            deployment = await deploy(instance, notify={"email": ["data-team@example.com"]})
            async with instance.sessions() as session, session.begin():
                config = await session.scalar(select(DeploymentVersion.config))
                version = version_row(
                    deployment, 2, config, created_by="deployer@example.com", status="failed"
                )
                session.add(version)
            await alerter.build_failed(deployment, version, build_log)
            await alerter.drain()
            return await owner_of(instance, deployment), await is_failing(instance, deployment)

    owner, failing = asyncio.run(scenario())

    assert failing is False
    [delivered] = smtp.mailbox.messages
    assert delivered.message["Subject"] == f"[ServiceBay] {NAME} version 2 failed to build"
    assert delivered.recipients == [owner, "deployer@example.com", "data-team@example.com"]
    body = delivered.message.get_content()
    assert "ERROR: No matching distribution found" in body
    assert "Collecting package0\n" not in body
    assert f"{PUBLIC_URL}/api/v1/deployments/{NAME}" in body
    [hook] = receiver.bodies(WEBHOOK_PATH)
    assert hook["event"] == "build.failed"
    assert hook["version"]["version"] == 2
    assert hook["version"]["created_by"] == "deployer@example.com"
    assert hook["log_tail"][-1] == "ERROR: No matching distribution found"


# --- channels that fail -----------------------------------------------------------------------


def test_a_channel_answering_errors_is_retried_until_delivered(
    tmp_path: Path, smtp: Smtp, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    receiver.answer(WEBHOOK_PATH, (500, "busy"), (503, "still busy"))

    async def scenario() -> tuple[float, float]:
        async with node(settings_for(tmp_path, smtp, receiver)) as (instance, alerter):
            deployment = await deploy(instance)
            await finish(instance, alerter, deployment, "failed")
            return counted(alerter, "webhook", "sent"), counted(alerter, "webhook", "failed")

    sent, failed = asyncio.run(scenario())

    assert len(receiver.bodies(WEBHOOK_PATH)) == 3
    assert (sent, failed) == (1, 0)
    warnings = logged(caplog, logging.WARNING)
    assert "by webhook: try 1 of 3 failed (RuntimeError: answered HTTP 500 busy)" in warnings
    assert "by webhook: try 2 of 3 failed (RuntimeError: answered HTTP 503 still busy)" in warnings


def test_a_channel_that_is_down_is_logged_and_the_others_still_deliver(
    tmp_path: Path, smtp: Smtp, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    nobody = f"http://127.0.0.1:{free_port()}/hook"

    async def scenario() -> dict[str, float]:
        settings = settings_for(tmp_path, smtp, receiver, alert_webhook_url=nobody)
        async with node(settings) as (instance, alerter):
            await keep_slack_url(instance, receiver.url + SLACK_PATH)
            deployment = await deploy(instance)
            await finish(instance, alerter, deployment, "failed")
            return {
                f"{channel} {outcome}": counted(alerter, channel, outcome)
                for channel in ("email", "slack", "webhook")
                for outcome in ("sent", "failed")
            }

    counts = asyncio.run(scenario())

    assert len(smtp.mailbox.messages) == 1
    assert len(receiver.bodies(SLACK_PATH)) == 1
    assert counts == {
        "email sent": 1, "email failed": 0, "slack sent": 1, "slack failed": 0,
        "webhook sent": 0, "webhook failed": 1,
    }  # fmt: skip
    errors = logged(caplog, logging.ERROR)
    assert f"alert run.failing of {NAME} could not be sent by webhook: ConnectError" in errors
    assert logged(caplog, logging.WARNING).count("by webhook: try") == 2


def test_a_refusal_is_not_retried(
    tmp_path: Path, smtp: Smtp, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.answer(SLACK_PATH, (404, "no_service"))

    async def scenario() -> None:
        async with node(settings_for(tmp_path, smtp, receiver)) as (instance, alerter):
            await keep_slack_url(instance, receiver.url + SLACK_PATH)
            deployment = await deploy(instance)
            await finish(instance, alerter, deployment, "failed")

    asyncio.run(scenario())

    assert len(receiver.bodies(SLACK_PATH)) == 1
    assert "could not be sent by slack: refused with HTTP 404 no_service" in logged(caplog)
    assert len(smtp.mailbox.messages) == 1


def test_slack_is_not_told_when_its_secret_does_not_allow_alerts(
    tmp_path: Path, smtp: Smtp, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with node(settings_for(tmp_path, smtp, receiver)) as (instance, alerter):
            await keep_slack_url(instance, receiver.url + SLACK_PATH, allow=(f"deployment:{NAME}",))
            deployment = await deploy(instance)
            await finish(instance, alerter, deployment, "failed")

    asyncio.run(scenario())

    assert receiver.bodies(SLACK_PATH) == []
    errors = logged(caplog, logging.ERROR)
    assert f"secret {SLACK_SECRET} is not allowed for alerts" in errors
    assert f"bay secrets allow {SLACK_SECRET} alerts" in errors
    assert len(receiver.bodies(WEBHOOK_PATH)) == 1


# --- SMTP with TLS and a login, and secrets ---------------------------------------------------


def test_email_over_starttls_with_a_login(
    tmp_path: Path, tls_smtp: Smtp, receiver: Receiver
) -> None:
    settings = settings_for(
        tmp_path, tls_smtp, receiver,
        smtp_starttls=True, smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD,
    )  # fmt: skip

    async def scenario() -> None:
        async with node(settings) as (instance, alerter):
            deployment = await deploy(instance)
            await finish(instance, alerter, deployment, "failed")

    asyncio.run(scenario())

    assert len(tls_smtp.mailbox.messages) == 1


# aiosmtpd's AUTH-without-STARTTLS warning does not know that the whole connection is TLS.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_email_over_ssl_with_a_login(tmp_path: Path, smtps: Smtp, receiver: Receiver) -> None:
    settings = settings_for(
        tmp_path, smtps, receiver,
        smtp_ssl=True, smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD,
    )  # fmt: skip

    async def scenario() -> None:
        async with node(settings) as (instance, alerter):
            deployment = await deploy(instance)
            await finish(instance, alerter, deployment, "failed")

    asyncio.run(scenario())

    assert len(smtps.mailbox.messages) == 1


def test_secrets_never_reach_the_logs(
    tmp_path: Path, tls_smtp: Smtp, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_password = SMTP_PASSWORD + "-old"
    receiver.answer(SLACK_PATH, (500, "slack is down"))
    receiver.answer(WEBHOOK_PATH, (503, "later"))
    settings = settings_for(
        tmp_path, tls_smtp, receiver,
        smtp_starttls=True, smtp_username=SMTP_USER, smtp_password=wrong_password,
    )  # fmt: skip

    async def scenario() -> None:
        async with node(settings) as (instance, alerter):
            await keep_slack_url(instance, receiver.url + SLACK_PATH)
            deployment = await deploy(instance)
            await finish(instance, alerter, deployment, "failed")

    asyncio.run(scenario())

    assert len(receiver.bodies(SLACK_PATH)) == 2
    assert len(receiver.bodies(WEBHOOK_PATH)) == 2
    everything = "\n".join(
        [*(record.getMessage() for record in our_records(caplog)), caplog.text, repr(settings)]
    )
    assert "could not be sent by email: the SMTP server answered 535" in everything
    assert "127.0.0.1/[redacted]" in everything  # httpx's request log, with our URLs hidden
    for secret in (wrong_password, SLACK_PATH.rsplit("/", 1)[1], WEBHOOK_PATH.rsplit("-", 1)[1]):
        assert secret not in everything


def test_ssl_and_starttls_together_are_refused(
    tmp_path: Path, smtp: Smtp, receiver: Receiver
) -> None:
    settings = settings_for(tmp_path, smtp, receiver, smtp_ssl=True, smtp_starttls=True)

    async def scenario() -> None:
        instance = await Instance.open(settings)
        try:
            with pytest.raises(ConfigurationError, match="not both"):
                Alerter(instance)
        finally:
            await instance.close()

    asyncio.run(scenario())
