"""The run worker: claims queued runs and runs each script isolated, supervised and logged.

A node with the worker role runs up to `settings.workers` runs at once. It wakes when
this node queues a run (`wake`, an in-process event) and polls the queue every second for
runs queued by other nodes.

For each run (DESIGN.md, "What a script sees"):

- **A private copy of the source.** The version's extracted source (`Layout.source`) stays
  the platform's; the worker copies it into the run's own folder (`Layout.run_dir`:
  `work/` is the copy and the script's working directory, `output/` is `BAY_OUTPUT_DIR`),
  made private to the deployment's user. A script can change its copy as it likes; the
  next run starts from the deployed files again (`runtime/run_folders.py`).
- **The deployment's environment** (`Layout.environment`, built by the builder): the
  script runs with `<env>/bin/python`, whose `bin` leads `PATH`.
- **Exactly this environment:** `INTERNAL_API_KEY`, `BAY_URL`, `BAY_RUN_ID`,
  `BAY_OUTPUT_DIR`, `BAY_RUN_INPUT` (when the run was given input: a JSON file; for a
  run triggered by a webhook call, `BAY_WEBHOOK_REQUEST` holding the call and
  `BAY_WEBHOOK_RESPONSE` to answer it, as `servicebay.webhook` reads and writes them),
  `PYTHONPATH` (the staged SDK), the config's `env`, and the base `runtime.process` adds
  (`PATH`, `LANG`, `HOME`, `TMPDIR`, `PYTHONUNBUFFERED`). Nothing of the platform's.
- **Its own user** when the platform runs as root (`deployment_uid`), so it can read neither
  the instance's files nor another deployment's.
- **`INTERNAL_API_KEY`** is a key of the deployment's owner named `run:<id>`, expiring at
  the run's timeout plus a margin, and revoked when the run ends.
- **Limits and endings** from the config: `timeout_seconds` (TERM, then KILL the whole
  process group: `timed_out`), `memory_mb`, and `retries` with exponential backoff from
  `retry_backoff_seconds` (a new run, trigger `retry`, queued once the wait is over).
- **Logs** are timestamped lines, stored in chunks every half second (or 64 KB) so that
  `bay runs logs --follow` streams them from any node, capped at `run_log_max_bytes`.
- **Artifacts** are the regular files left in `output/`; links, devices and files that are
  not the script's own are removed, and the rest is handed back to the platform's user.

A worker is named `host:pid:start`, stored on the runs it claims. When it starts, it marks
failed the runs left `running` by an earlier process of this host that is gone (a crash or a
restart), and any run, from any host, running far past its timeout (its worker vanished).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from servicebay.core.batching import Batcher
from servicebay.core.errors import ServiceBayError
from servicebay.core.identity import DISABLED_OWNER, create_keys
from servicebay.core.instance import Instance
from servicebay.core.models import ApiKey, Deployment, DeploymentVersion, Run, User, utcnow
from servicebay.runtime import runs
from servicebay.runtime.alerts import Streak, settle_streaks
from servicebay.runtime.config import CronConfig, WebhookConfig
from servicebay.runtime.layout import Layout
from servicebay.runtime.process import (
    BASE_PATH,
    RUN_UID_BASE,
    RUN_UID_LAST,
    LogLine,
    ProcessError,
    ProcessResult,
    ProcessSpec,
    run_uid,
)
from servicebay.runtime.run_folders import (
    INPUT,
    REQUEST,
    RESPONSE,
    RunFolderError,
    RunFolders,
    blocked_on_the_way,
)
from servicebay.runtime.runs import Ending
from servicebay.runtime.sdk_stage import stage_sdk
from servicebay.runtime.warm import Zygotes

log = logging.getLogger(__name__)

OnFinished = Callable[[Deployment, Run, Streak | None], Awaitable[None]]
"""Told about every run that ended (metrics, alerts), with its deployment and the change
of its failure streak that its ending made, if any (`alerts.settle_streaks`)."""

RunConfig = CronConfig | WebhookConfig


POLL_SECONDS = 1.0
"""How often the queue is read for runs queued by other nodes."""
CANCEL_POLL_SECONDS = 0.5
LOG_FLUSH_SECONDS = 0.5
LOG_FLUSH_BYTES = 64 * 1024
KILL_GRACE_SECONDS = 5.0
KEY_MARGIN_SECONDS = 300
"""A run's key outlives its timeout (and kill grace) by this much: it is issued when the
run is claimed, before its folder is staged and its warm interpreter started, and it must
not expire before the script's time is up should revoking fail."""
ORPHAN_MARGIN = timedelta(minutes=5)
"""A run still `running` this long past its timeout has lost its worker, wherever it was."""
SWEEP_SECONDS = 60.0
OUTPUT_ENV = "BAY_OUTPUT_DIR"
INPUT_ENV = "BAY_RUN_INPUT"
REQUEST_ENV = "BAY_WEBHOOK_REQUEST"
RESPONSE_ENV = "BAY_WEBHOOK_RESPONSE"


def worker_identity(pid: int | None = None) -> str:
    """`host:pid:start`: the start time (clock ticks since boot) tells a process apart from
    a later one that was given the same pid, e.g. after a container restart."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid)}"


def _start_ticks(pid: int) -> str:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return "gone"
    return fields[19]


def is_gone(worker: str) -> bool:
    """Whether `worker`, a worker of this host, has ended (False for other hosts' workers)."""
    host, _, rest = worker.partition(":")
    pid, _, _ = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return worker_identity(int(pid)) != worker


def deployment_uid(deployment_id: str) -> int | None:
    """The uid the deployment's scripts run as (None when the platform is not root).

    Ids are random strings; the uid is a digest of the id mapped onto the run users'
    range (`runtime.process.run_uid`), the same on every node.
    """
    span = RUN_UID_LAST - RUN_UID_BASE + 1
    number = int.from_bytes(hashlib.sha256(deployment_id.encode()).digest()[:8], "big") % span
    return run_uid(number)


def run_config(kind: str, config: Mapping[str, Any]) -> RunConfig:
    """A version's stored config, as the model of a kind that has runs."""
    if kind == "cron":
        return CronConfig.model_validate(dict(config))
    if kind == "webhook":
        return WebhookConfig.model_validate(dict(config))
    raise ValueError(f"{kind} deployments have no runs")


def script_environment(
    *,
    api_key: str,
    base_url: str,
    run_id: str,
    output_dir: Path,
    sdk_dir: Path,
    bin_dir: Path,
    config_env: Mapping[str, str],
    files: Mapping[str, Path],
) -> dict[str, str]:
    """What a script sees, besides the base of `ProcessSpec.environment` (DESIGN.md)."""
    env = {
        **config_env,
        "PATH": f"{bin_dir}:{BASE_PATH}",
        "PYTHONPATH": str(sdk_dir),
        "INTERNAL_API_KEY": api_key,
        "BAY_URL": base_url,
        "BAY_RUN_ID": run_id,
        OUTPUT_ENV: str(output_dir),
    }
    return {**env, **{name: str(path) for name, path in files.items()}}


@dataclass
class _Active:
    """A run this worker is running."""

    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    shutdown: bool = False
    task: asyncio.Task[None] | None = None
    call: Mapping[str, Any] | None = None
    """A webhook call handed over in memory (`run_now`) rather than as the run's input."""
    answer_limit: int = 0
    answer: bytes | None = None
    """The webhook answer the script wrote, read before its files are cleaned (`run_now`)."""


@dataclass(frozen=True)
class Prepared:
    """A run about to start, with what it runs and the key it runs with: read and issued
    in the transaction that claimed or created it (`Worker.prepare`)."""

    run: Run
    deployment: Deployment
    version: DeploymentVersion
    owner: User
    key_id: str | None = None
    secret: str | None = None
    refusal: str | None = None
    """Why no key could be issued (the owner is disabled): the run fails saying so."""

    @cached_property
    def config(self) -> RunConfig:
        """The version's config; ValueError for a kind that has no runs."""
        return run_config(self.deployment.kind, self.version.config)

    @property
    def key_lifetime(self) -> timedelta:
        """The run's timeout, the kill grace and a margin (`KEY_MARGIN_SECONDS`)."""
        try:
            timeout = self.config.timeout_seconds
        except ValueError:
            timeout = 0  # it cannot start: `_run` says why
        return timedelta(seconds=timeout + KILL_GRACE_SECONDS + KEY_MARGIN_SECONDS)


@dataclass(frozen=True)
class _Ending:
    """A run's ending on its way to the database (`Worker._record_endings`)."""

    run_id: str
    ending: Ending
    rest: str
    """The log's lines not stored yet."""
    prepared: Prepared | None


@dataclass(frozen=True)
class Ended:
    """A run as its ending was recorded, and the change that made to its deployment's
    failure streak (None: none)."""

    run: Run
    streak: Streak | None


@dataclass(frozen=True)
class Outcome:
    """A run that `Worker.run_now` ran: as recorded at its end, and the webhook answer file
    the script wrote (None if it wrote none; `answer_limit` + 1 bytes at most)."""

    run: Run
    answer: bytes | None


class Worker:
    """The node component that runs queued runs; see the module docstring."""

    def __init__(
        self,
        instance: Instance,
        *,
        on_finished: OnFinished | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.instance = instance
        self.settings = instance.settings
        self.layout = Layout(instance.settings.home)
        self.folders = RunFolders(self.layout)
        self.on_finished = on_finished
        self.poll_seconds = poll_seconds
        self.id = worker_identity()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(instance.settings.workers)
        self._active: dict[str, _Active] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._prepared = False
        self._preparing = asyncio.Lock()
        self.zygotes = Zygotes()
        """Warm interpreters: every run forks from its deployment's."""
        self._endings = Batcher(
            self._record_endings, name="run-endings", split_on=(IntegrityError,)
        )

    def wake(self) -> None:
        """A run was queued or a cancel asked for on this node: look now, not at the poll."""
        self._wake.set()

    async def start(self) -> None:
        await self._ensure_layout()
        await self.zygotes.start()
        await self._recover(at_start=True)
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="worker-claims"),
            asyncio.create_task(self._watch_loop(), name="worker-cancels"),
        ]
        log.info("worker %s runs up to %d runs at once", self.id, self.settings.workers)

    async def stop(self) -> None:
        """Stop claiming; end the runs in flight (TERM, then KILL), recorded as failed."""
        for task in self._tasks:
            task.cancel()
        for active in self._active.values():
            active.shutdown = True
            active.cancel.set()
        running = [active.task for active in self._active.values() if active.task is not None]
        await asyncio.gather(*self._tasks, *running, return_exceptions=True)
        self._tasks = []
        await self.zygotes.stop()

    # --- the loops --------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while True:
            await self._slots.acquire()
            free = 1
            while not self._slots.locked():  # every free slot, in one claim
                await self._slots.acquire()
                free += 1
            self._wake.clear()  # before looking: a run queued meanwhile sets it again
            try:
                claimed = await self._claim(free)
            except Exception:
                log.exception("worker %s could not read the run queue", self.id)
                claimed = []
            for _ in range(free - len(claimed)):
                self._slots.release()
            for prepared in claimed:
                active = _Active()
                run_id = prepared.run.id
                self._active[run_id] = active
                active.task = asyncio.create_task(
                    self._execute(prepared, active), name=f"run-{run_id}"
                )
            if len(claimed) < free:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    async def _claim(self, limit: int) -> list[Prepared]:
        """Up to `limit` runs, claimed and prepared in one transaction."""
        async with self.instance.sessions() as session, session.begin():
            claimed = await runs.claim(session, self.id, limit)
            return await self.prepare_all(session, claimed)

    async def _watch_loop(self) -> None:
        """Notice cancels asked for on any node; empty the trash of ended runs' folders;
        now and then, fail orphaned runs."""
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + SWEEP_SECONDS
        while True:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            if self.folders.has_trash:
                try:
                    await asyncio.to_thread(self.folders.empty_trash)
                except OSError:
                    log.exception("worker %s could not empty the trash of run folders", self.id)
            try:
                if self._active:
                    async with self.instance.sessions() as session:
                        wanted = await runs.cancels_requested(session, list(self._active))
                    for run_id in wanted:
                        if run_id in self._active:
                            self._active[run_id].cancel.set()
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + SWEEP_SECONDS
                    await self._recover(at_start=False)
            except Exception:
                log.exception("worker %s could not check its runs", self.id)

    # --- one run ----------------------------------------------------------------------------

    async def prepare(self, session: AsyncSession, run: Run) -> Prepared:
        """What `run` needs to start (`prepare_all` of one run)."""
        [prepared] = await self.prepare_all(session, [run])
        return prepared

    async def prepare_all(self, session: AsyncSession, claimed: Sequence[Run]) -> list[Prepared]:
        """What the runs need to start, in the caller's transaction (the one that claims or
        creates them): their deployments, versions and owners, read in one statement, and
        their keys, named `run:<id>` and expiring at the run's timeout plus a margin,
        inserted in one. A run whose owner is disabled gets no key, and says why."""
        if not claimed:
            return []
        wanted = {(run.deployment_id, run.version) for run in claimed}
        rows = await session.execute(
            select(Deployment, DeploymentVersion, User)
            .join(DeploymentVersion, DeploymentVersion.deployment_id == Deployment.id)
            .join(User, User.id == Deployment.owner_id)
            .where(tuple_(Deployment.id, DeploymentVersion.version).in_(wanted))
        )
        found = {
            (deployment.id, version.version): (deployment, version, owner)
            for deployment, version, owner in rows
        }
        prepared = [Prepared(run, *found[run.deployment_id, run.version]) for run in claimed]
        issuing = [one for one in prepared if not one.owner.disabled]
        issued = await create_keys(
            session, [(one.owner, f"run:{one.run.id}", one.key_lifetime) for one in issuing]
        )
        keys = {one.run.id: key for one, key in zip(issuing, issued, strict=True)}
        return [
            replace(one, key_id=keys[one.run.id].record.id, secret=keys[one.run.id].secret)
            if one.run.id in keys
            else replace(one, refusal=DISABLED_OWNER.format(email=one.owner.email))
            for one in prepared
        ]

    async def run_now(
        self,
        prepared: Prepared,
        *,
        call: Mapping[str, Any] | None = None,
        answer_limit: int = 0,
    ) -> Outcome:
        """Run a prepared run here and now rather than through the queue, and wait for its
        end: for a caller who waits for the answer (a sync webhook call).

        The run must already be `running` and claimed for this worker (`worker` = `self.id`),
        so that no worker takes it from the queue. `call` is the webhook call, written as
        its BAY_WEBHOOK_REQUEST file without being stored as the run's input. Everything
        else is as for a queued run (private copy, environment, key, logs, ending,
        artifacts, retries, the alerts hook). With an `answer_limit`, the answer file the
        script wrote is read, up to that many bytes and one more.
        """
        await self._ensure_layout()
        active = _Active(call=call, answer_limit=answer_limit)
        run_id = prepared.run.id
        self._active[run_id] = active
        finished = await self._carry_out(prepared, active)
        if finished is None:  # ended meanwhile by another node (an orphan sweep)
            async with self.instance.sessions() as session:
                finished = await session.get(Run, run_id)
            assert finished is not None
        return Outcome(finished, active.answer)

    async def _execute(self, prepared: Prepared, active: _Active) -> None:
        try:
            await self._carry_out(prepared, active)
        finally:
            self._slots.release()

    async def _carry_out(self, prepared: Prepared, active: _Active) -> Run | None:
        """Run it, record its end, retry or alert; the run as ended (None if not by us)."""
        run, deployment, version = prepared.run, prepared.deployment, prepared.version
        logs = RunLog(self.instance, run.id)
        try:
            ending = await self._run(prepared, logs, active)
            ended = await self._finish(run.id, ending, logs=logs, prepared=prepared)
            if ended is None:
                return None
            if ending.status in ("failed", "timed_out") and not active.shutdown:
                await self._queue_retry(ended.run, deployment, version)
            await self._tell(deployment, ended)
            return ended.run
        except Exception:
            log.exception("worker %s failed to run %s", self.id, run.id)
            with contextlib.suppress(Exception):
                ending = Ending("failed", "the platform failed to run it")
                ended = await self._finish(run.id, ending, logs=logs, prepared=prepared)
                if ended is not None:
                    await self._tell(deployment, ended)
                    return ended.run
            return None
        finally:
            del self._active[run.id]

    async def _run(self, prepared: Prepared, logs: RunLog, active: _Active) -> Ending:
        run, deployment, version = prepared.run, prepared.deployment, prepared.version
        try:
            if prepared.secret is None:
                raise _CannotRun(prepared.refusal or "no key could be issued for the run")
            config = prepared.config
            uid = deployment_uid(deployment.id)
            work = await self.folders.stage(
                run.id,
                (deployment.id, version.version),
                self.layout.source(deployment.name, version.version),
                self._python(version),
                uid,
                self._given(run, active.call),
            )
            spec = ProcessSpec(
                [str(self._python(version)), config.script_to_run],
                work,
                script_environment(
                    api_key=prepared.secret,
                    base_url=self.settings.base_url,
                    run_id=run.id,
                    output_dir=self.layout.artifacts(run.id),
                    sdk_dir=self.layout.sdk,
                    bin_dir=self._python(version).parent,
                    config_env=config.env,
                    files=self._files(run),
                ),
                uid=uid,
                timeout_seconds=config.timeout_seconds,
                memory_mb=config.memory_mb,
                log_limit_bytes=self.settings.run_log_max_bytes,
                kill_grace_seconds=KILL_GRACE_SECONDS,
            )
            await logs.note(
                f"run {run.id} of {deployment.name} v{run.version} (attempt {run.attempt}, "
                f"{run.trigger}) started on {self.id}"
            )
            runner = self.zygotes.runner(deployment.id, version.version)
            result = await runner(spec, logs.add, cancel=active.cancel)
            await self._look_over(run, uid, active, logs)
            ending = self._ending(result, active)
            await logs.note(f"run ended: {ending.reason}")
            return ending
        except _CANNOT_START as error:
            message = getattr(error, "message", None) or str(error)
            await logs.note(f"the run could not start: {message}")
            return Ending("failed", f"could not start: {message}")
        finally:
            self.folders.discard_work(run.id)

    async def _look_over(self, run: Run, uid: int | None, active: _Active, logs: RunLog) -> None:
        """After the script: its answer read (a sync webhook call), its copy of the source
        discarded, its artifacts kept. A problem here is noted in the log; the run ended
        as its process did."""
        if active.answer_limit:
            try:
                active.answer = self.folders.read_answer(
                    self._files(run)[RESPONSE_ENV], uid, active.answer_limit
                )
            except RunFolderError as refused:
                await logs.note(f"the answer was not sent: {refused}")
        try:
            self.folders.discard_work(run.id)
            dropped = await self.folders.collect(run.id, uid)
        except OSError as error:
            log.exception("worker %s could not look over the folder of run %s", self.id, run.id)
            await logs.note(f"the run's folder could not be looked over: {error}")
            return
        if dropped:
            await logs.note(f"not kept as artifacts (not regular files): {', '.join(dropped)}")

    def _ending(self, result: ProcessResult, active: _Active) -> Ending:
        common: dict[str, Any] = {
            "exit_code": result.exit_code,
            "log_bytes": result.log_bytes,
            "log_truncated": result.truncated,
        }
        if result.cancelled and active.shutdown:
            reason = f"the worker node shut down during the run ({result.describe()})"
            return Ending("failed", reason, **common)
        if result.cancelled:
            return Ending("cancelled", result.describe(), **common)
        if result.timed_out:
            return Ending("timed_out", result.describe(), **common)
        if result.exit_code == 0:
            return Ending("succeeded", result.describe(), **common)
        return Ending("failed", result.describe(), **common)

    def _python(self, version: DeploymentVersion) -> Path:
        return self.layout.environment(version.requirements_digest) / "bin" / "python"

    def _files(self, run: Run) -> dict[str, Path]:
        """The files the platform and the script exchange, by the variable naming each:
        a webhook call and its answer, or the run's input."""
        run_dir = self.layout.run_dir(run.id)
        if run.trigger == "webhook":
            return {REQUEST_ENV: run_dir / REQUEST, RESPONSE_ENV: run_dir / RESPONSE}
        return {} if run.input is None else {INPUT_ENV: run_dir / INPUT}

    def _given(self, run: Run, call: Mapping[str, Any] | None) -> tuple[Path, str] | None:
        """The file the run is given, with its text: the webhook call (`call`, when given,
        instead of the run's own) or the run's input."""
        files = self._files(run)
        given = files.get(REQUEST_ENV) or files.get(INPUT_ENV)
        if given is None:
            return None
        return given, json.dumps(run.input or {} if call is None else call)

    async def _finish(
        self,
        run_id: str,
        ending: Ending,
        *,
        logs: RunLog | None = None,
        prepared: Prepared | None = None,
    ) -> Ended | None:
        """Record the ending, in one transaction with the log's last lines, the revocation
        of the run's key (which otherwise expires on its own) and the change it makes to
        its deployment's failure streak; endings that come while one is being written
        share the next transaction (`_record_endings`). None if another node ended it."""
        rest = await logs.close() if logs is not None else ""
        finished = await self._endings.submit(_Ending(run_id, ending, rest, prepared))
        if logs is not None:
            logs.stored()
        if prepared is not None and prepared.secret is not None:
            self.instance.authenticator.forget(prepared.secret)
        return finished

    async def _record_endings(self, endings: Sequence[_Ending]) -> list[Ended | None]:
        """One transaction for a batch of endings. A run another node ended meanwhile (an
        orphan sweep) keeps the ending and the log that node recorded."""
        async with self.instance.sessions() as session, session.begin():
            ended = await runs.finish_runs(session, [(one.run_id, one.ending) for one in endings])
            ours = [one for one in endings if one.run_id in ended]
            streaks = await settle_streaks(
                session,
                [
                    (ended[one.run_id], one.prepared.version.config if one.prepared else {})
                    for one in ours
                ],
            )
            recorded = {
                one.run_id: Ended(ended[one.run_id], streak)
                for one, streak in zip(ours, streaks, strict=True)
            }
            await runs.append_logs(session, [(one.run_id, one.rest) for one in ours if one.rest])
            keys = [one.prepared.key_id for one in endings if one.prepared and one.prepared.key_id]
            if keys:
                await session.execute(
                    update(ApiKey)
                    .where(ApiKey.id.in_(keys), ApiKey.revoked_at.is_(None))
                    .values(revoked_at=utcnow())
                )
        return [recorded.get(one.run_id) for one in endings]

    async def _tell(self, deployment: Deployment, ended: Ended) -> None:
        if self.on_finished is None:
            return
        try:
            await self.on_finished(deployment, ended.run, ended.streak)
        except Exception:
            log.exception("the run hook failed for run %s of %s", ended.run.id, deployment.name)

    async def _queue_retry(
        self, run: Run, deployment: Deployment, version: DeploymentVersion
    ) -> None:
        """Queue the next attempt at once, to start once its backoff is over (`not_before`):
        a restart in between does not lose it."""
        config = run_config(deployment.kind, version.config)
        if run.attempt > config.retries:
            return
        wait = config.retry_backoff_seconds * 2 ** (run.attempt - 1)
        try:
            async with self.instance.sessions() as session, session.begin():
                retry = await runs.create_run(
                    session,
                    deployment,
                    trigger="retry",
                    actor=run.actor,
                    input=run.input,
                    version=run.version,
                    attempt=run.attempt + 1,
                    not_before=utcnow() + timedelta(seconds=wait),
                )
        except Exception:
            log.exception("could not queue the retry of run %s", run.id)
            return
        log.info(
            "run %s retries run %s in %s s (attempt %d)", retry.id, run.id, wait, retry.attempt
        )
        asyncio.get_running_loop().call_later(wait, self.wake)

    # --- the instance's folders and orphans -------------------------------------------------

    async def _ensure_layout(self) -> None:
        """Prepare the instance's folders once, for claimed runs and `run_now` alike."""
        async with self._preparing:
            if not self._prepared:
                await asyncio.to_thread(self._prepare_layout)
                self._prepared = True

    def _prepare_layout(self) -> None:
        """Stage the SDK; as root, let run users pass (not list) the folders to their own."""
        stage_sdk(self.layout.sdk).chmod(0o755)
        self.folders.prepare()
        runs_root = self.folders.runs_root
        if os.geteuid() == 0:
            for folder in (self.layout.home, self.layout.root, runs_root):
                folder.chmod(stat.S_IMODE(folder.stat().st_mode) | 0o011)
            blocked = blocked_on_the_way(runs_root, RUN_UID_BASE)
            if blocked is not None:
                log.warning(
                    "runs will fail: their users cannot pass %s on the way to %s; put "
                    "BAY_HOME under folders others may pass (chmod o+x)",
                    blocked,
                    runs_root,
                )

    async def _recover(self, *, at_start: bool) -> None:
        """Fail runs whose worker is gone: this host's dead processes (at start), and any
        run far past its timeout."""
        now = utcnow()
        orphans: list[tuple[Run, Deployment, str]] = []
        async with self.instance.sessions() as session:
            for run, deployment in await runs.running_runs(session):
                if run.id in self._active or run.worker == self.id:
                    continue
                if at_start and run.worker and is_gone(run.worker):
                    orphans.append((run, deployment, f"its worker {run.worker} stopped"))
                    continue
                timeout = await self._timeout_of(session, run, deployment)
                started = run.started_at or run.created_at
                if now > started + timedelta(seconds=timeout) + ORPHAN_MARGIN:
                    orphans.append((run, deployment, f"its worker {run.worker} stopped answering"))
        for run, deployment, why in orphans:
            ending = Ending("failed", f"{why} before the run ended (crash or restart)")
            ended = await self._finish(run.id, ending)
            await self._revoke_run_keys(run.id)
            if ended is not None:
                log.warning("run %s of %s marked failed: %s", run.id, deployment.name, why)
                await self._tell(deployment, ended)

    async def _timeout_of(self, session: AsyncSession, run: Run, deployment: Deployment) -> int:
        config = await session.scalar(
            select(DeploymentVersion.config).where(
                DeploymentVersion.deployment_id == deployment.id,
                DeploymentVersion.version == run.version,
            )
        )
        try:
            return run_config(deployment.kind, config or {}).timeout_seconds
        except ValueError:
            return 0

    async def _revoke_run_keys(self, run_id: str) -> None:
        async with self.instance.sessions() as session, session.begin():
            await session.execute(
                update(ApiKey)
                .where(ApiKey.name == f"run:{run_id}", ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        self.instance.authenticator.forget()


class _CannotRun(Exception):
    """The run cannot start (its owner has no key); the message says why."""


_CANNOT_START = (ProcessError, _CannotRun, RunFolderError, ServiceBayError, ValueError, OSError)
"""What ends a run as failed to start, with the error's message as the reason."""


class RunLog:
    """A run's log lines, written to the database in chunks (every LOG_FLUSH_SECONDS or
    LOG_FLUSH_BYTES), so that readers on any node see them within a second."""

    def __init__(self, instance: Instance, run_id: str) -> None:
        self.instance = instance
        self.run_id = run_id
        self._parts: list[str] = []
        self._size = 0
        self._lock = asyncio.Lock()
        self._ticker = asyncio.create_task(self._tick())

    async def add(self, line: LogLine) -> None:
        self._parts.append(f"{line}\n")
        self._size += len(self._parts[-1])
        if self._size >= LOG_FLUSH_BYTES:
            await self.flush()

    async def note(self, text: str) -> None:
        """A line of the platform's own, among the script's."""
        await self.add(LogLine(datetime.now(UTC), "stderr", f"[servicebay] {text}"))

    async def flush(self) -> None:
        async with self._lock:
            if not self._parts:
                return
            text = "".join(self._parts)
            try:
                async with self.instance.sessions() as session, session.begin():
                    await runs.append_log(session, self.run_id, text)
            except Exception:
                log.exception("could not store log lines of run %s; trying again", self.run_id)
                return
            self._parts.clear()
            self._size = 0

    async def close(self) -> str:
        """Stop flushing; the lines not stored yet, for the run's final transaction. They
        stay here until `stored` says that transaction committed, so a second attempt
        gets them again."""
        self._ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._ticker
        async with self._lock:
            return "".join(self._parts)

    def stored(self) -> None:
        """The text `close` returned is stored."""
        self._parts.clear()
        self._size = 0

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(LOG_FLUSH_SECONDS)
            await self.flush()
