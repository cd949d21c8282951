"""Alerts: a deployment's owner hears of a failure once per streak, and again on recovery.

A run that failed or timed out starts a failure streak unless the worker will retry it
(its attempt is within the config's `retries`): the owner is alerted ("failing") and
`deployment.failing` is set. Further failures say nothing. The next success ends the
streak with a "recovered" alert; a plain success, a cancelled run and a skipped run change
nothing. The worker settles the streak in the transaction that records the run's ending
(`settle_streaks`), so streaks follow the order in which endings commit; the flags are
read locked (`FOR UPDATE`) before they change, so when two nodes end runs of one
deployment at once, the second sees what the first left and exactly one of them flips
it. The worker then hands the change to the `Alerter` (`announce`); the builder tells it
about every failed build (`build_failed`). A failed build is alerted every time: each
is somebody's deploy, and the version stays inactive, so it is no part of the run streak.
A server that crash-loops is alerted once per loop (the supervisor stops retrying, so
there is one loop per version until another is deployed).

An alert goes to every channel the instance has and the config's `notify` allows:

- **e-mail** over the instance's SMTP server (`smtp_*` settings) to the owner and
  `notify.email` (and, for a build, whoever deployed it), with the standard library's
  `smtplib` in a thread: alerts are rare, and its timeout bounds every socket operation;
- **Slack**: `{"text": ...}` POSTed to the incoming-webhook URL kept in the secret named by
  `alert_slack_secret`, which must allow `alerts` (`SLACK_ALLOW_ENTRY`);
- **a generic webhook**: JSON POSTed to `alert_webhook_url`.

Channels are independent. Each is tried `alert_retry_attempts` times, with a backoff from
`alert_retry_backoff_seconds` doubled after each try, each try bounded by
`alert_timeout_seconds`; an answer that retrying cannot change (an HTTP 4xx other than 408
and 429, an SMTP 5xx, a missing secret) stops at once. A channel that gives up is logged
with its reason and counted, never raised: an alert must not fail a run. Neither the
Slack URL, the webhook URL (it may carry a token) nor the SMTP password is ever logged,
including by httpx's own request log.

Sending happens in background tasks so that the worker moves on at once; `drain()` waits
for them (tests, and `stop()` when the node stops).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import logging
import smtplib
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Literal

import httpx
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from servicebay.core import secret_store
from servicebay.core.db import holds_write_lock
from servicebay.core.errors import ConfigurationError, Forbidden, NotFound
from servicebay.core.instance import Instance
from servicebay.core.models import Deployment, DeploymentVersion, Run, RunLogChunk, User, utcnow
from servicebay.runtime.config import Notify

log = logging.getLogger(__name__)

Streak = Literal["run.failing", "run.recovered"]
"""A change of a deployment's failure streak, which a run's ending made."""
Event = Literal[Streak, "build.failed", "server.crash_looping"]
Channel = Literal["email", "slack", "webhook"]

SLACK_ALLOW_ENTRY = "alerts"
"""What the Slack secret's allow-list must name for alerts to reveal it."""
FAILURES = frozenset({"failed", "timed_out"})
SUBJECT_PREFIX = "[ServiceBay] "
SUBJECT_MAX_CHARS = 200
LOG_TAIL_LINES = 20
LOG_TAIL_LINE_CHARS = 300
LOG_TAIL_CHARS = 3000
"""An alert quotes at most this much of the log: enough to see the error, not the run."""
LOG_TAIL_CHUNKS = 4
"""Chunks read from the end of a run's log to find its last lines."""
ERROR_BODY_CHARS = 200
STOP_WAIT_SECONDS = 30.0
"""How long a stopping node waits for alerts still being sent."""
RETRYABLE_HTTP = frozenset({408, 429})
MAIL_POLICY = email.policy.default.clone(max_line_length=998)
"""RFC 5322's hard limit: the default 78 makes Python fold a long subject onto a line of
its own, which some readers show with a leading space."""


class _Permanent(Exception):
    """A channel's failure that another try cannot change."""


class AlertMetrics:
    """The alerts counter, on the registry the node exposes."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.alerts = Counter(
            "servicebay_alerts",
            "Alerts by channel (email, slack, webhook) and outcome (sent, or failed after "
            "its tries).",
            ["channel", "outcome"],
            registry=registry,
        )


@dataclass(frozen=True)
class Alert:
    """One alert, rendered once for every channel."""

    event: Event
    summary: str
    """One line: `weekly_report is failing: run run_abc timed out after 600 s`."""
    details: tuple[tuple[str, str], ...]
    log_tail: tuple[str, ...]
    link: str
    footer: str
    recipients: tuple[str, ...]
    slack: bool
    webhook: bool
    payload: dict[str, Any]
    """The webhook's JSON, without `event`, `summary` and `link`, which are added."""

    @property
    def subject(self) -> str:
        line = " ".join(self.summary.split())
        if len(line) > SUBJECT_MAX_CHARS:
            line = line[: SUBJECT_MAX_CHARS - 1] + "…"
        return SUBJECT_PREFIX + line

    def text(self) -> str:
        """The plain-text e-mail body."""
        width = max(len(label) for label, _ in self.details)
        lines = [self.summary, ""]
        lines += [f"{label.ljust(width)}  {value}" for label, value in self.details]
        if self.log_tail:
            lines += ["", "Last lines of the log:", *(f"    {line}" for line in self.log_tail)]
        lines += ["", self.link, "", self.footer]
        return "\n".join(lines) + "\n"

    def slack_message(self) -> dict[str, Any]:
        icon = {"run.failing": ":red_circle:", "run.recovered": ":large_green_circle:"}
        parts = [
            f"{icon.get(self.event, ':warning:')} *{_slack_escape(self.summary)}*",
            " · ".join(f"{label}: {_slack_escape(value)}" for label, value in self.details[:4]),
        ]
        if self.log_tail:
            quoted = "\n".join(self.log_tail).replace("```", "'''")
            parts.append(f"```{_slack_escape(quoted)}```")
        parts.append(f"<{self.link}|Open in ServiceBay>")
        return {"text": "\n".join(parts)}

    def webhook_message(self) -> dict[str, Any]:
        return {"event": self.event, "summary": self.summary, **self.payload, "link": self.link}


class Alerter:
    """Decides when a deployment's owner is alerted and sends the alerts (a node Component)."""

    def __init__(self, instance: Instance, *, registry: CollectorRegistry | None = None) -> None:
        settings = instance.settings
        if settings.smtp_ssl and settings.smtp_starttls:
            raise ConfigurationError(
                "BAY_SMTP_SSL and BAY_SMTP_STARTTLS are both set: use SMTP_SSL for a server "
                "that speaks TLS from the start (port 465), STARTTLS for one that upgrades "
                "(port 587), not both"
            )
        self.instance = instance
        self.settings = settings
        self.metrics = AlertMetrics(registry or CollectorRegistry())
        self._pending: set[asyncio.Task[None]] = set()
        if settings.alert_webhook_url:
            _HIDDEN_URLS.hide(settings.alert_webhook_url)
        _HIDDEN_URLS.install()

    async def start(self) -> None:
        """Nothing to start: alerts are sent as runs finish."""

    async def stop(self) -> None:
        """Let alerts being sent finish, for a while; those still going then are dropped."""
        if not self._pending:
            return
        _, late = await asyncio.wait(set(self._pending), timeout=STOP_WAIT_SECONDS)
        for task in late:
            log.warning("stopping: alert task %s was still sending; dropped", task.get_name())
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def drain(self) -> None:
        """Wait until every alert started so far has been sent or given up on."""
        while self._pending:
            await asyncio.gather(*set(self._pending), return_exceptions=True)

    # --- deciding -------------------------------------------------------------------------

    def announce(
        self,
        deployment: Deployment,
        run: Run,
        event: Streak,
    ) -> None:
        """Alert that `run` started or ended `deployment`'s failure streak (`event`, as
        `settle_streaks` answered), in the background."""
        deployment.failing = event == "run.failing"
        log.info("%s %s with run %s: alerting", deployment.name, event.split(".")[1], run.id)
        self._spawn(self._alert_run(event, deployment, run), f"alert-{run.id}")

    async def build_failed(
        self, deployment: Deployment, version: DeploymentVersion, log_tail: str
    ) -> None:
        """Alert that `version` of `deployment` could not be built (every time)."""
        log.info("%s version %d failed to build: alerting", deployment.name, version.version)
        self._spawn(
            self._alert_build(deployment, version, log_tail),
            f"alert-{deployment.name}-build-{version.version}",
        )

    async def server_crash_looping(
        self, deployment: Deployment, version: int, reason: str, log_tail: tuple[str, ...]
    ) -> None:
        """Alert that a server stopped being restarted (`runtime.supervisor`)."""
        log.info("server %s is crash-looping: alerting", deployment.name)
        self._spawn(
            self._alert_server(deployment, version, reason, log_tail),
            f"alert-{deployment.name}-crash-loop-{version}",
        )

    async def _config(self, deployment_id: str, number: int) -> dict[str, Any]:
        """The run's version's config (its retries and `notify`), {} if it is gone."""
        async with self.instance.sessions() as session:
            config = await session.scalar(
                select(DeploymentVersion.config).where(
                    DeploymentVersion.deployment_id == deployment_id,
                    DeploymentVersion.version == number,
                )
            )
        return dict(config or {})

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # --- composing ------------------------------------------------------------------------

    async def _alert_run(self, event: Event, deployment: Deployment, run: Run) -> None:
        try:
            config = await self._config(deployment.id, run.version)
            async with self.instance.sessions() as session:
                owner = await session.get(User, deployment.owner_id)
                tail = await _log_tail(session, run.id) if event == "run.failing" else ()
            owner_email = owner.email if owner is not None else None
            notify = _notify(config, deployment.name)
            alert = _run_alert(
                event, deployment, run, owner_email, notify, tail, self.settings.base_url
            )
        except Exception:
            log.exception("could not compose the alert for run %s of %s", run.id, deployment.name)
            return
        await self._send(alert, deployment.name)

    async def _alert_build(
        self, deployment: Deployment, version: DeploymentVersion, log_tail: str
    ) -> None:
        try:
            async with self.instance.sessions() as session:
                owner = await session.get(User, deployment.owner_id)
            owner_email = owner.email if owner is not None else None
            notify = _notify(version.config, deployment.name)
            alert = _build_alert(
                deployment,
                version,
                owner_email,
                notify,
                _tail_lines(log_tail.splitlines()),
                self.settings.base_url,
            )
        except Exception:
            log.exception(
                "could not compose the build alert of %s version %d",
                deployment.name,
                version.version,
            )
            return
        await self._send(alert, deployment.name)

    async def _alert_server(
        self, deployment: Deployment, version: int, reason: str, log_tail: tuple[str, ...]
    ) -> None:
        try:
            config = await self._config(deployment.id, version)
            async with self.instance.sessions() as session:
                owner = await session.get(User, deployment.owner_id)
            owner_email = owner.email if owner is not None else None
            notify = _notify(config, deployment.name)
            alert = _server_alert(
                deployment,
                version,
                reason,
                owner_email,
                notify,
                _tail_lines(list(log_tail)),
                self.settings.base_url,
            )
        except Exception:
            log.exception("could not compose the crash-loop alert of %s", deployment.name)
            return
        await self._send(alert, deployment.name)

    # --- sending --------------------------------------------------------------------------

    async def _send(self, alert: Alert, name: str) -> None:
        sends: list[Awaitable[None]] = []
        if self.settings.smtp_host and alert.recipients:
            sends.append(self._deliver("email", alert, name, lambda: self._email(alert)))
        if self.settings.alert_slack_secret and alert.slack:
            sends.append(self._deliver("slack", alert, name, lambda: self._slack(alert)))
        if self.settings.alert_webhook_url and alert.webhook:
            sends.append(self._deliver("webhook", alert, name, lambda: self._webhook(alert)))
        if not sends:
            log.warning(
                "%s of %s: the instance has no alert channel that applies (set BAY_SMTP_HOST, "
                "BAY_ALERT_SLACK_SECRET or BAY_ALERT_WEBHOOK_URL)",
                alert.event,
                name,
            )
        await asyncio.gather(*sends)

    async def _deliver(
        self, channel: Channel, alert: Alert, name: str, send: Callable[[], Awaitable[None]]
    ) -> None:
        """Try `send` until it works, retrying cannot help, or the tries run out."""
        attempts = self.settings.alert_retry_attempts
        wait = self.settings.alert_retry_backoff_seconds
        reason = ""
        for attempt in range(1, attempts + 1):
            try:
                await send()
            except _Permanent as error:
                reason = str(error)
                break
            except Exception as error:  # any failure of a channel is a reason, never a crash
                reason = self._describe(error)
                if attempt < attempts:
                    log.warning(
                        "alert %s of %s by %s: try %d of %d failed (%s); again in %.1f s",
                        alert.event, name, channel, attempt, attempts, reason, wait,
                    )  # fmt: skip
                    await asyncio.sleep(wait)
                    wait *= 2
                continue
            self.metrics.alerts.labels(channel, "sent").inc()
            log.info("alert %s of %s sent by %s", alert.event, name, channel)
            return
        self.metrics.alerts.labels(channel, "failed").inc()
        log.error("alert %s of %s could not be sent by %s: %s", alert.event, name, channel, reason)

    def _describe(self, error: BaseException) -> str:
        text = str(error) or "no detail"
        if isinstance(error, TimeoutError | httpx.TimeoutException):
            text = f"no answer within {self.settings.alert_timeout_seconds:g} s"
        return _HIDDEN_URLS.scrub(f"{type(error).__name__}: {text}", self._secrets())

    def _secrets(self) -> list[str]:
        return [value for value in (self.settings.smtp_password,) if value]

    async def _email(self, alert: Alert) -> None:
        refused = await asyncio.to_thread(self._smtp_send, alert)
        if refused:
            log.warning(
                "alert %s: the SMTP server refused %s",
                alert.event,
                ", ".join(
                    f"{address} ({code} {reply.decode(errors='replace')})"
                    for address, (code, reply) in refused.items()
                ),
            )

    def _smtp_send(self, alert: Alert) -> dict[str, tuple[int, bytes]]:
        """Send the e-mail (blocking: run in a thread); the recipients it refused."""
        settings = self.settings
        assert settings.smtp_host is not None  # checked by _send
        message = EmailMessage(policy=MAIL_POLICY)
        message["From"] = settings.smtp_from or f"servicebay@{socket.getfqdn()}"
        message["To"] = ", ".join(alert.recipients)
        message["Subject"] = alert.subject
        message["Date"] = format_datetime(utcnow())
        message["Message-ID"] = make_msgid(domain="servicebay")
        message["Auto-Submitted"] = "auto-generated"
        message["X-ServiceBay-Event"] = alert.event
        message.set_content(alert.text())
        context = ssl.create_default_context()
        timeout = settings.alert_timeout_seconds
        smtp: smtplib.SMTP
        try:
            if settings.smtp_ssl:
                smtp = smtplib.SMTP_SSL(
                    settings.smtp_host, settings.smtp_port, timeout=timeout, context=context
                )
            else:
                smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
            with smtp:
                if settings.smtp_starttls:
                    smtp.starttls(context=context)
                if settings.smtp_username:
                    smtp.login(settings.smtp_username, settings.smtp_password or "")
                return smtp.send_message(message, to_addrs=list(alert.recipients))
        except smtplib.SMTPRecipientsRefused as error:
            if all(code >= 500 for code, _ in error.recipients.values()):
                raise _Permanent(f"the SMTP server refused every recipient: {error}") from None
            raise
        except smtplib.SMTPResponseException as error:
            if error.smtp_code >= 500:
                reply = error.smtp_error
                if isinstance(reply, bytes):
                    reply = reply.decode(errors="replace")
                raise _Permanent(f"the SMTP server answered {error.smtp_code} {reply}") from None
            raise

    async def _slack(self, alert: Alert) -> None:
        name = self.settings.alert_slack_secret
        assert name is not None  # checked by _send
        try:
            async with self.instance.sessions() as session:
                url = await secret_store.reveal(
                    session, self.instance.master_key, name, for_resource=SLACK_ALLOW_ENTRY
                )
        except (NotFound, Forbidden) as error:
            raise _Permanent(
                f"{error}: the Slack webhook URL is read from secret {name}, which must allow "
                f"{SLACK_ALLOW_ENTRY} (bay secrets allow {name} {SLACK_ALLOW_ENTRY})"
            ) from None
        _HIDDEN_URLS.hide(url.strip())
        await self._post(url.strip(), alert.slack_message())

    async def _webhook(self, alert: Alert) -> None:
        url = self.settings.alert_webhook_url
        assert url is not None  # checked by _send
        await self._post(url, alert.webhook_message())

    async def _post(self, url: str, body: dict[str, Any]) -> None:
        timeout = self.settings.alert_timeout_seconds
        async with asyncio.timeout(timeout), httpx.AsyncClient(timeout=timeout) as client:
            response = await client.post(url, json=body)
        if response.is_success:
            return
        answer = _HIDDEN_URLS.scrub(
            f"HTTP {response.status_code} {response.text[:ERROR_BODY_CHARS]}".strip(),
            self._secrets(),
        )
        if 400 <= response.status_code < 500 and response.status_code not in RETRYABLE_HTTP:
            raise _Permanent(f"refused with {answer}")
        raise RuntimeError(f"answered {answer}")


class _HiddenUrls(logging.Filter):
    """Keeps secret URLs out of logs: httpx logs each request's full URL at INFO, and ours
    are credentials (a Slack incoming webhook's path is its token)."""

    def __init__(self) -> None:
        super().__init__()
        self._urls: dict[str, str] = {}

    def install(self) -> None:
        logger = logging.getLogger("httpx")
        if self not in logger.filters:
            logger.addFilter(self)

    def hide(self, url: str) -> None:
        """Redact `url` from now on (both as written and as httpx normalises it)."""
        shown = _redacted(url)
        self._urls[url] = shown
        with contextlib.suppress(httpx.InvalidURL):
            self._urls[str(httpx.URL(url))] = shown

    def filter(self, record: logging.LogRecord) -> bool:
        if self._urls and isinstance(record.args, tuple):
            record.args = tuple(
                self.scrub(str(arg)) if _is_text(arg) else arg for arg in record.args
            )
        return True

    def scrub(self, text: str, others: Iterable[str] = ()) -> str:
        for url, shown in self._urls.items():
            text = text.replace(url, shown)
        for value in others:
            text = text.replace(value, "[redacted]")
        return text


def _is_text(value: object) -> bool:
    return isinstance(value, str | httpx.URL)


def _redacted(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "[redacted URL]"
    return f"{parsed.scheme}://{parsed.host}/[redacted]"


_HIDDEN_URLS = _HiddenUrls()


# --- rendering --------------------------------------------------------------------------------


def _run_alert(
    event: Event,
    deployment: Deployment,
    run: Run,
    owner: str | None,
    notify: Notify,
    log_tail: tuple[str, ...],
    base_url: str,
) -> Alert:
    reason = run.reason or run.status.replace("_", " ")
    if event == "run.failing":
        summary = f"{deployment.name} is failing: run {run.id} {reason}"
        footer = (
            f"You hear of a failure streak once: nothing more until a run of "
            f"{deployment.name} succeeds again."
        )
    else:
        summary = f"{deployment.name} recovered: run {run.id} succeeded"
        footer = f"Runs of {deployment.name} succeed again after a failure streak."
    due = f" (due {_when(run.due_at)})" if run.due_at else ""
    details = [
        ("Deployment", f"{deployment.name} ({deployment.kind})"),
        ("Version", str(run.version)),
        ("Trigger", f"{run.trigger}{due}"),
        ("Status", run.status),
        ("Reason", reason),
        ("Run", f"{run.id}, attempt {run.attempt}"),
        ("Started", _when(run.started_at)),
        ("Finished", _when(run.finished_at)),
    ]
    if owner:
        details.append(("Owner", owner))
    return Alert(
        event=event,
        summary=summary,
        details=tuple(details),
        log_tail=log_tail,
        link=f"{base_url}/api/v1/runs/{run.id}",
        footer=footer,
        recipients=_recipients(owner, notify.email),
        slack=notify.slack,
        webhook=notify.webhook,
        payload={
            "deployment": _deployment_json(deployment, owner),
            "run": {
                "id": run.id,
                "version": run.version,
                "trigger": run.trigger,
                "attempt": run.attempt,
                "status": run.status,
                "reason": run.reason,
                "exit_code": run.exit_code,
                "due_at": _iso(run.due_at),
                "started_at": _iso(run.started_at),
                "finished_at": _iso(run.finished_at),
            },
            "log_tail": list(log_tail),
        },
    )


def _build_alert(
    deployment: Deployment,
    version: DeploymentVersion,
    owner: str | None,
    notify: Notify,
    log_tail: tuple[str, ...],
    base_url: str,
) -> Alert:
    details = [
        ("Deployment", f"{deployment.name} ({deployment.kind})"),
        ("Version", str(version.version)),
        ("Deployed by", version.created_by),
        ("Deployed at", _when(version.created_at)),
        ("Active", f"version {deployment.active_version}" if deployment.active_version else "none"),
    ]
    deployer = version.created_by if "@" in version.created_by else None
    return Alert(
        event="build.failed",
        summary=f"{deployment.name} version {version.version} failed to build",
        details=tuple(details),
        log_tail=log_tail,
        link=f"{base_url}/api/v1/deployments/{deployment.name}",
        footer="The version was not activated; fix requirements.txt and deploy again.",
        recipients=_recipients(owner, [*([deployer] if deployer else []), *notify.email]),
        slack=notify.slack,
        webhook=notify.webhook,
        payload={
            "deployment": _deployment_json(deployment, owner),
            "version": {
                "version": version.version,
                "status": version.status,
                "created_by": version.created_by,
                "created_at": _iso(version.created_at),
            },
            "log_tail": list(log_tail),
        },
    )


def _server_alert(
    deployment: Deployment,
    version: int,
    reason: str,
    owner: str | None,
    notify: Notify,
    log_tail: tuple[str, ...],
    base_url: str,
) -> Alert:
    details = [
        ("Deployment", f"{deployment.name} ({deployment.kind})"),
        ("Version", str(version)),
        ("Reason", reason),
    ]
    if owner:
        details.append(("Owner", owner))
    return Alert(
        event="server.crash_looping",
        summary=f"{deployment.name} is crash-looping: version {version} keeps crashing",
        details=tuple(details),
        log_tail=log_tail,
        link=f"{base_url}/api/v1/deployments/{deployment.name}",
        footer="It is not restarted again until a new version is deployed or rolled back "
        f"to; `bay deployments logs {deployment.name}` has its output.",
        recipients=_recipients(owner, notify.email),
        slack=notify.slack,
        webhook=notify.webhook,
        payload={
            "deployment": _deployment_json(deployment, owner),
            "version": {"version": version},
            "reason": reason,
            "log_tail": list(log_tail),
        },
    )


def _deployment_json(deployment: Deployment, owner: str | None) -> dict[str, Any]:
    return {"name": deployment.name, "kind": deployment.kind, "owner": owner}


def _recipients(owner: str | None, others: Iterable[str]) -> tuple[str, ...]:
    """The owner first, then the others, each address once (compared case-insensitively)."""
    seen: dict[str, str] = {}
    for address in (*([owner] if owner else []), *others):
        seen.setdefault(address.lower(), address)
    return tuple(seen.values())


def _notify(config: Mapping[str, Any], name: str) -> Notify:
    try:
        return Notify.model_validate(config.get("notify") or {})
    except ValidationError as error:
        log.warning("%s: its notify settings are unreadable (%s); using the defaults", name, error)
        return Notify()


async def settle_streaks(
    session: AsyncSession, ended: Sequence[tuple[Run, Mapping[str, Any]]]
) -> list[Streak | None]:
    """Start or end the failure streaks of the runs' deployments with their endings, in
    the transaction that records those endings, in their order, (run, its version's
    config) each: "run.failing" when a failure the worker will not retry starts one,
    "run.recovered" when a success ends one, None when nothing changed (or another node's
    ending changed it first).

    The deployments' flags are read locked (`FOR UPDATE`, in the order of their ids, on
    PostgreSQL; on SQLite, after a write that makes this transaction the writer), the
    endings replayed on
    them in order, and the flags that changed written back: another node's endings for
    the same deployments wait for this transaction, then see what it left.
    """
    telling = [(run, _failure_of(run, config)) for run, config in ended]
    ids = sorted({run.deployment_id for run, failed in telling if failed is not None})
    if not ids:
        return [None] * len(telling)
    connection = await session.connection()
    if connection.dialect.name == "sqlite" and not holds_write_lock(connection):
        # SQLite has no FOR UPDATE: a write takes its one writer's lock before the read.
        await session.execute(
            update(Deployment)
            .where(Deployment.id.in_(ids))
            .values(failing=Deployment.failing)
            .execution_options(synchronize_session=False)
        )
    rows = await session.execute(
        select(Deployment.id, Deployment.failing)
        .where(Deployment.id.in_(ids))
        .order_by(Deployment.id)
        .with_for_update()
    )
    was = {deployment_id: failing for deployment_id, failing in rows}
    failing = dict(was)
    streaks: list[Streak | None] = []
    for run, failed in telling:
        if failed is None or failing.get(run.deployment_id, failed) is failed:
            streaks.append(None)
            continue
        failing[run.deployment_id] = failed
        streaks.append("run.failing" if failed else "run.recovered")
    for value in (True, False):
        changed = [one for one, now in failing.items() if now is value and was[one] is not value]
        if changed:
            await session.execute(
                update(Deployment)
                .where(Deployment.id.in_(changed))
                .values(failing=value)
                .execution_options(synchronize_session=False)
            )
    return streaks


def _failure_of(run: Run, config: Mapping[str, Any]) -> bool | None:
    """Whether the ending tells of a failure (True) or a success (False) for the streak;
    None if it tells nothing: cancelled, skipped, or a failure the worker retries."""
    if run.status == "succeeded":
        return False
    if run.status in FAILURES and run.attempt > _retries(config):
        return True
    return None


def _retries(config: Mapping[str, Any]) -> int:
    retries = config.get("retries", 0)
    return retries if isinstance(retries, int) else 0


async def _log_tail(session: AsyncSession, run_id: str) -> tuple[str, ...]:
    texts = await session.scalars(
        select(RunLogChunk.text)
        .where(RunLogChunk.run_id == run_id)
        .order_by(RunLogChunk.id.desc())
        .limit(LOG_TAIL_CHUNKS)
    )
    return _tail_lines("".join(reversed(list(texts))).splitlines())


def _tail_lines(lines: list[str]) -> tuple[str, ...]:
    """The last non-empty lines, each and all capped."""
    kept: list[str] = []
    size = 0
    for line in reversed([line for line in lines if line.strip()]):
        if len(line) > LOG_TAIL_LINE_CHARS:
            line = line[: LOG_TAIL_LINE_CHARS - 1] + "…"
        if len(kept) == LOG_TAIL_LINES or size + len(line) > LOG_TAIL_CHARS:
            break
        kept.append(line)
        size += len(line)
    return tuple(reversed(kept))


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None
