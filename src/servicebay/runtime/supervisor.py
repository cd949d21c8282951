"""Hosted servers and code services: each active `server` deployment, and each `service`
deployment (kind `code`), kept running as a supervised process.

A version is built once (`build_version`, called by the deployer after its environment):
its source is copied to its own folder (`Layout.server_dir`), made private to the
deployment's user, and its `build_command` runs there. Every process of that version then
works in that folder.

The `Supervisor` (a node component of the worker role) reads the active server versions
every `POLL_SECONDS` and, for each, keeps one process serving (`_Keeper`):

- **Start.** `/bin/sh -c <start_command>`, isolated exactly like a run's script
  (`runtime.process`: the deployment's uid, its own process group, limits, nothing of the
  platform's environment), with `PORT` (a free loopback port, or the config's `port`),
  `INTERNAL_API_KEY` (a key of the owner named `server:{name}:v{version}`, revoked when
  the process stops), `BAY_URL`, `BAY_IDENTITY_KEY` (to verify `X-Bay-Identity`),
  `BAY_APP_PREFIX`, `PYTHONPATH` (the staged SDK), the venv's `bin` first on `PATH`, and
  the config's `env`.
- **Health.** `health_path` is polled until it answers below 500; only then is traffic
  switched to the process (`Routes`), so a redeploy never sends a request to a server
  that is not listening. The previous process is stopped once the requests it was
  serving have finished (TERM, then KILL, to its whole process group). While it serves,
  the path is polled every `HEALTH_INTERVAL_SECONDS`; `HEALTH_FAILURE_LIMIT` failures in
  a row restart it like a crash.
- **Crashes.** A process that exits is started again after a backoff (doubling from
  `BACKOFF_SECONDS` up to `MAX_BACKOFF_SECONDS`, from the start again after a crash
  with no other in `CRASH_WINDOW_SECONDS`). `CRASH_LIMIT` crashes within
  `CRASH_WINDOW_SECONDS`, or `START_FAILURE_LIMIT` starts in a row that never became
  healthy, make a crash loop: the supervisor stops trying until another version is made
  active, records why (`bay deployments show`) and alerts the owner once.
- **Logs.** Every line of every process, and the platform's notes about it, go to the
  deployment's `server_log_chunks`, flushed every `LOG_FLUSH_SECONDS`, capped at
  `run_log_max_bytes` per deployment (the oldest chunks go first).

The state of each server (state, reason, version, address, pid, restarts) is written on
its deployment's row, which is what the API shows and what nodes without a supervisor
proxy to.

A static site (`static` in server_deployment.json) is built the same way, and its folder
checked once built; then, instead of a process, its keeper routes to the version's folder
(an `Upstream` with a `folder` and no address) and records it running: no port, health
checks or restarts, and a new version is one switch of the route.

A code service is supervised the same way, with three differences
(`runtime.code_services`): its process also gets its allowed secrets as environment
variables (read when it starts, never logged); its health path is `/openapi.json`; and
once healthy, before traffic switches to it, its OpenAPI document is read and checked
(every operation described) and published as the service's record, or the version is
refused: marked failed with the reason in its build log, the previous version active and
serving again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import stat
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import and_, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicebay.core.crypto import MasterKey
from servicebay.core.errors import ServiceBayError
from servicebay.core.identity import create_key
from servicebay.core.instance import Instance
from servicebay.core.models import (
    ApiKey,
    Deployment,
    DeploymentVersion,
    ServerLogChunk,
    User,
    utcnow,
)
from servicebay.runtime import code_services
from servicebay.runtime.builder import Builder
from servicebay.runtime.config import ServerConfig, ServiceConfig
from servicebay.runtime.layout import Layout
from servicebay.runtime.process import (
    BASE_PATH,
    LogLine,
    ProcessError,
    ProcessResult,
    ProcessSpec,
    prepare_private_dir,
    run_process,
    signal_group,
    spawn,
    supervise,
    wait_for_exit,
)
from servicebay.runtime.sdk_stage import stage_sdk
from servicebay.runtime.worker import deployment_uid
from servicebay.sdk.identity import KEY_VARIABLE

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
"""How often the active server versions are read (a deploy on any node is seen this fast)."""
HOST = "127.0.0.1"
HEALTH_POLL_SECONDS = 0.1
HEALTH_TIMEOUT_SECONDS = 2.0
START_SECONDS = 60.0
"""A process that has not answered its health check this long after it started failed."""
HEALTH_INTERVAL_SECONDS = 10.0
HEALTH_FAILURE_LIMIT = 3
"""A serving process that fails this many health checks in a row is restarted."""
KEY_PREFIX = "server:"
"""Names the keys servers run with (`server:{name}:v{version}`)."""
BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
CRASH_LIMIT = 5
CRASH_WINDOW_SECONDS = 300.0
START_FAILURE_LIMIT = 3
DRAIN_SECONDS = 30.0
"""A replaced process keeps serving the requests it has for at most this long."""
KILL_GRACE_SECONDS = 5.0
STOP_SECONDS = 4 * KILL_GRACE_SECONDS
"""Past TERM, the grace and KILL, how long a stopped process's supervision may take."""
BUILD_SECONDS = 900.0
LOG_FLUSH_SECONDS = 0.5
STARTING, RUNNING, RESTARTING, CRASH_LOOPING = "starting", "running", "restarting", "crash_looping"
REFUSED = "refused"
"""A code service version whose OpenAPI was refused, with nothing older to serve."""
SUPERVISED_KINDS = ("server", "service")
"""Deployment kinds that run as supervised processes (a `service` deployment is kind code:
the other kinds of service are registered, not deployed)."""
ProcessConfig = ServerConfig | ServiceConfig
OnCrashLoop = Callable[[Deployment, int, str, tuple[str, ...]], Awaitable[None]]
"""Told once per crash loop: the deployment, its version, why, and the log's last lines."""
OnLine = Callable[[str], Awaitable[None]]


class ServerError(Exception):
    """A server version cannot be built or started; the message says why and what to do."""


def config_of(kind: str, document: dict[str, Any]) -> ProcessConfig:
    """A supervised version's parsed config."""
    return (
        ServerConfig.model_validate(document)
        if kind == "server"
        else (ServiceConfig.model_validate(document))
    )


def static_of(config: ProcessConfig) -> str | None:
    """A static site's folder (relative to its version's), or None for a program."""
    return config.static if isinstance(config, ServerConfig) else None


def static_dir(layout: Layout, name: str, version: int, config: ProcessConfig) -> Path | None:
    """Where a static site's version has its files, or None for a program."""
    folder = static_of(config)
    return None if folder is None else layout.server_dir(name, version) / folder


def health_path_of(config: ProcessConfig) -> str:
    """A server's `health_path`; a code service is healthy once it documents itself."""
    return config.health_path if isinstance(config, ServerConfig) else code_services.OPENAPI_PATH


def start_command_of(config: ProcessConfig) -> str:
    """The start command (a code service's config is only valid with one)."""
    assert config.start_command is not None
    return config.start_command


def server_environment(
    config: ProcessConfig,
    *,
    name: str,
    port: int,
    bin_dir: Path,
    sdk_dir: Path,
    base_url: str,
    identity_key: str,
    api_key: str,
    secrets: dict[str, str] | None = None,
) -> dict[str, str]:
    """What a supervised process sees, besides the base of `ProcessSpec.environment`: a
    code service also gets its secrets (`secrets`), a server its path prefix."""
    prefix = {"BAY_APP_PREFIX": f"/apps/{name}"} if isinstance(config, ServerConfig) else {}
    return {
        **config.env,
        **(secrets or {}),
        "PATH": f"{bin_dir}:{BASE_PATH}",
        "PYTHONPATH": str(sdk_dir),
        "PORT": str(port),
        "INTERNAL_API_KEY": api_key,
        "BAY_URL": base_url,
        **prefix,
        KEY_VARIABLE: identity_key,
    }


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))  # noqa: S104 - a probe, closed at once
        except OSError:
            return False
        return True


def taken_port_problem(port: int) -> str:
    return (
        f"port {port} (the config's `port`) is taken by another program; remove `port` "
        "and have the start command listen on $PORT, a free port the platform picks "
        "(e.g. `flask run --port $PORT`)"
    )


async def build_version(
    layout: Layout,
    builder: Builder,
    deployment: Deployment,
    version: DeploymentVersion,
    environment: Path,
    on_line: OnLine,
) -> None:
    """Copy the version's source to its server folder and run its build command there, as
    the deployment's user; ServerError says why the version cannot serve."""
    config = config_of(deployment.kind, version.config)
    ours = deployment.server_address == f"{HOST}:{config.port}"  # its running version's
    if config.port is not None and not ours and not port_is_free(config.port):
        raise ServerError(taken_port_problem(config.port))
    uid = deployment_uid(deployment.id)
    folder = layout.server_dir(deployment.name, version.version)
    await asyncio.to_thread(_stage, layout, deployment.name, version.version, folder, uid)
    if config.build_command is not None:
        await _build(layout, builder, config, folder, uid, environment, on_line)
    served = static_dir(layout, deployment.name, version.version, config)
    named = static_of(config)
    if served is not None and named is not None:
        await on_line(f"serving the static folder {named}/")
        _check_static(folder, served, named)


def _check_static(folder: Path, served: Path, named: str) -> None:
    """The static folder exists once built, and is the version's own (not a link out)."""
    resolved = served.resolve()
    if not resolved.is_relative_to(folder.resolve()):
        raise ServerError(f"the static folder {named}/ leads outside the deployment's folder")
    if not resolved.is_dir():
        raise ServerError(
            f"the static folder {named}/ is not there after the build; build it (e.g. "
            '"build command": "npm run build") or name the folder the build writes'
        )


async def _build(
    layout: Layout,
    builder: Builder,
    config: ProcessConfig,
    folder: Path,
    uid: int | None,
    environment: Path,
    on_line: OnLine,
) -> None:
    """Run the version's build command in its folder; ServerError when it fails."""
    assert config.build_command is not None
    await on_line(f"running the build command: {config.build_command}")
    spec = ProcessSpec(
        ["/bin/sh", "-c", config.build_command],
        folder,
        {**builder.variables(environment), **config.env, "PYTHONPATH": str(layout.sdk)},
        uid=uid,
        timeout_seconds=BUILD_SECONDS,
        memory_mb=max(config.memory_mb, 2048),
        kill_grace_seconds=KILL_GRACE_SECONDS,
    )

    async def forward(line: LogLine) -> None:
        await on_line(f"  {line.text}")

    try:
        result = await run_process(spec, forward)
    except ProcessError as error:
        raise ServerError(str(error)) from None
    if not result.ok:
        raise ServerError(f"the build command {result.describe()}")


def _stage(layout: Layout, name: str, number: int, folder: Path, uid: int | None) -> None:
    """The version's own copy of its source, private to `uid`; the SDK staged for it."""
    stage_sdk(layout.sdk).chmod(0o755)
    servers = folder.parent.parent
    servers.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.parent.mkdir(mode=0o700, exist_ok=True)
    if os.geteuid() == 0:  # run users pass (not list) the folders on the way to their own
        for passed in (layout.home, layout.root, servers, folder.parent):
            passed.chmod(stat.S_IMODE(passed.stat().st_mode) | 0o011)
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(layout.source(name, number), folder, symlinks=True)
    prepare_private_dir(folder, uid)


# --- routing --------------------------------------------------------------------------------


@dataclass
class Upstream:
    """A healthy server process the gateway may send requests to, or a static site's
    built folder it serves itself."""

    name: str
    version: int
    address: str
    """`host:port` (empty for a static site)."""
    folder: Path | None = None
    """A static site's files; None for a process."""
    leases: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()


class Routes:
    """Which process serves each server deployment on this node; the gateway leases an
    upstream for the length of each proxied request, so that the supervisor stops a
    replaced process only once its requests are answered."""

    def __init__(self) -> None:
        self._table: dict[str, Upstream] = {}

    def get(self, name: str) -> Upstream | None:
        return self._table.get(name)

    @contextlib.contextmanager
    def lease(self, upstream: Upstream) -> Iterator[Upstream]:
        upstream.leases += 1
        upstream.idle.clear()
        try:
            yield upstream
        finally:
            upstream.leases -= 1
            if upstream.leases == 0:
                upstream.idle.set()

    def switch(self, upstream: Upstream) -> None:
        self._table[upstream.name] = upstream

    def drop(self, name: str, upstream: Upstream) -> None:
        """Stop routing to `name`, if it still routes to `upstream` (a newer one stays)."""
        if self._table.get(name) is upstream:
            del self._table[name]


# --- logs -----------------------------------------------------------------------------------


class ServerLog:
    """A server's lines, appended to its `server_log_chunks` every LOG_FLUSH_SECONDS; past
    `limit_bytes` the oldest chunks this node wrote are deleted."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], deployment_id: str, limit_bytes: int
    ) -> None:
        self.sessions = sessions
        self.deployment_id = deployment_id
        self.limit_bytes = limit_bytes
        self._parts: list[str] = []
        self._written: deque[tuple[int, int]] = deque()
        self._size = 0
        self._lock = asyncio.Lock()
        self._ticker = asyncio.create_task(self._tick())

    async def add(self, line: LogLine) -> None:
        self._parts.append(f"{line}\n")

    async def note(self, text: str) -> None:
        """A line of the platform's own, among the server's."""
        await self.add(LogLine(datetime.now(UTC), "stderr", f"[servicebay] {text}"))

    def tail(self) -> tuple[str, ...]:
        """The last lines not flushed yet (for an alert)."""
        return tuple(part.rstrip("\n") for part in self._parts[-20:])

    async def flush(self) -> None:
        async with self._lock:
            if not self._parts:
                return
            # Taken out first: lines added while the transaction commits wait for the next.
            parts, self._parts = self._parts, []
            text = "".join(parts)
            try:
                async with self.sessions() as session, session.begin():
                    chunk = ServerLogChunk(deployment_id=self.deployment_id, text=text)
                    session.add(chunk)
                    await session.flush()
                    written = (chunk.id, len(text))
                    if self._size + len(text) > self.limit_bytes:
                        oldest = self._prune(len(text))
                        await session.execute(
                            delete(ServerLogChunk).where(
                                ServerLogChunk.deployment_id == self.deployment_id,
                                ServerLogChunk.id <= oldest,
                            )
                        )
            except Exception:
                self._parts[:0] = parts
                log.exception("could not store log lines of server %s", self.deployment_id)
                return
            self._written.append(written)
            self._size += written[1]

    def _prune(self, adding: int) -> int:
        """Forget the oldest chunks until the rest and `adding` more bytes fit; the id of
        the last one forgotten (0: none)."""
        last = 0
        while self._written and self._size + adding > self.limit_bytes:
            last, size = self._written.popleft()
            self._size -= size
        return last

    async def close(self, *, discard: bool = False) -> None:
        """Stop flushing; store what is left, unless told to `discard` it."""
        self._ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._ticker
        if discard:
            self._parts.clear()
        await self.flush()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(LOG_FLUSH_SECONDS)
            await self.flush()


async def read_log(
    session: AsyncSession, deployment: Deployment, *, after: int | None, limit: int | None
) -> list[ServerLogChunk]:
    """The deployment's log chunks after chunk id `after` (at most `limit`), oldest first."""
    query = (
        select(ServerLogChunk)
        .where(ServerLogChunk.deployment_id == deployment.id)
        .order_by(ServerLogChunk.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(ServerLogChunk.id > after)
    return list(await session.scalars(query))


async def _probe(client: httpx.AsyncClient, process: _Process) -> str | None:
    """One health check: None when the server answered below 500, else what went wrong."""
    path = health_path_of(process.config)
    try:
        answer = await client.get(f"http://{process.upstream.address}{path}")
    except httpx.HTTPError as error:
        return f"GET {path}: {type(error).__name__}"
    if answer.status_code >= 500:
        return f"GET {path} answered {answer.status_code}"
    return None


# --- supervising ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The version a server deployment should be serving."""

    deployment: Deployment
    version: int
    requirements_digest: str
    config: ProcessConfig


@dataclass(eq=False)
class _Process:
    """One started server process."""

    version: int
    config: ProcessConfig
    port: int
    pid: int
    ended: asyncio.Task[ProcessResult]
    cancel: asyncio.Event
    upstream: Upstream
    key_id: str
    key: str


class Supervisor:
    """The node component that keeps every active server deployment served."""

    def __init__(
        self,
        instance: Instance,
        *,
        on_crash_loop: OnCrashLoop | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.instance = instance
        self.settings = instance.settings
        self.layout = Layout(instance.settings.home)
        self.routes = Routes()
        self.on_crash_loop = on_crash_loop
        self.poll_seconds = poll_seconds
        self._keepers: dict[str, _Keeper] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A version became active on this node: look now, not at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        await self._revoke_leftover_keys()
        self._task = asyncio.create_task(self._poll_loop(), name="supervisor")

    async def _revoke_leftover_keys(self) -> None:
        """Keys of servers an earlier process of this node ran and could not stop (a
        crash): their servers are gone, so are their keys."""
        async with self.instance.sessions() as session, session.begin():
            await session.execute(
                update(ApiKey)
                .where(ApiKey.name.startswith(KEY_PREFIX), ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        self.instance.authenticator.forget()

    async def issue_key(self, target: Target) -> tuple[str, str]:
        """A key of the owner for one process of `target` (id, secret)."""
        async with self.instance.sessions() as session, session.begin():
            owner = await session.get(User, target.deployment.owner_id)
            if owner is None:
                raise ServerError(f"the owner of {target.deployment.name} is gone")
            try:
                issued = await create_key(
                    session,
                    owner,
                    name=f"{KEY_PREFIX}{target.deployment.name}:v{target.version}",
                    lifetime=None,
                )
            except ServiceBayError as refused:
                raise ServerError(f"no key can be issued for it: {refused.message}") from None
            return issued.record.id, issued.secret

    async def reveal_secrets(self, target: Target) -> dict[str, str]:
        """A code service's secrets, for its process's environment (a server has none)."""
        if not isinstance(target.config, ServiceConfig):
            return {}
        master: MasterKey = self.instance.master_key
        try:
            async with self.instance.sessions() as session:
                return await code_services.reveal_secrets(session, master, target.config)
        except ValueError as missing:
            raise ServerError(str(missing)) from None

    async def revoke_key(self, key_id: str, secret: str) -> None:
        try:
            async with self.instance.sessions() as session, session.begin():
                await session.execute(
                    update(ApiKey)
                    .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                    .values(revoked_at=utcnow())
                )
        except Exception:
            log.exception("could not revoke server key %s", key_id)
        self.instance.authenticator.forget(secret)

    async def stop(self) -> None:
        """Stop every server (TERM, then KILL); their rows say `stopped`."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*(keeper.stop() for keeper in self._keepers.values()))
        self._keepers.clear()

    async def _poll_loop(self) -> None:
        while True:
            try:
                await self._reconcile()
            except Exception:
                log.exception("the supervisor could not read the server deployments")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    async def _reconcile(self) -> None:
        targets = await self._targets()
        for name, keeper in list(self._keepers.items()):
            # Gone, or deleted and deployed afresh under its name (another deployment).
            if name not in targets or targets[name].deployment.id != keeper.deployment_id:
                await self._keepers.pop(name).stop(deleted=True)
        for name, target in targets.items():
            if name in self._keepers:
                self._keepers[name].want(target)
            else:
                self._keepers[name] = _Keeper(self, target)
                self._keepers[name].start()

    async def _targets(self) -> dict[str, Target]:
        async with self.instance.sessions() as session:
            rows = await session.execute(
                select(Deployment, DeploymentVersion)
                .join(
                    DeploymentVersion,
                    and_(
                        DeploymentVersion.deployment_id == Deployment.id,
                        DeploymentVersion.version == Deployment.active_version,
                    ),
                )
                .where(Deployment.kind.in_(SUPERVISED_KINDS), DeploymentVersion.status == "ready")
            )
            return {
                deployment.name: Target(
                    deployment,
                    version.version,
                    version.requirements_digest,
                    config_of(deployment.kind, version.config),
                )
                for deployment, version in rows
            }

    async def record(self, deployment_id: str, **values: Any) -> None:
        """Write a server's state on its deployment's row."""
        try:
            async with self.instance.sessions() as session, session.begin():
                await session.execute(
                    update(Deployment).where(Deployment.id == deployment_id).values(**values)
                )
        except Exception:
            log.exception("could not record the state of server %s", deployment_id)


class _Keeper:
    """Keeps one server deployment served: see the module docstring."""

    def __init__(self, supervisor: Supervisor, target: Target) -> None:
        self.supervisor = supervisor
        self.target = target
        self.name = target.deployment.name
        self.deployment_id = target.deployment.id
        self.logs = ServerLog(
            supervisor.instance.sessions, self.deployment_id, supervisor.settings.run_log_max_bytes
        )
        self.current: _Process | None = None
        self.live: set[_Process] = set()
        """Every process started and not yet stopped (one being started included)."""
        self.revoking: set[asyncio.Future[None]] = set()
        self.changed = asyncio.Event()
        self.restarts = 0
        self.static: Upstream | None = None
        """The static folder it routes to, for a static site (no process)."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep(), name=f"server-{self.name}")

    def want(self, target: Target) -> None:
        if target.version != self.target.version:
            self.target = target
            self.changed.set()

    async def stop(self, *, deleted: bool = False) -> None:
        """Stop its processes; record `stopped` and the last lines, unless the deployment
        was deleted (its row and log are gone)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        why = "the deployment was deleted" if deleted else "the node is stopping"
        if self.static is not None:
            self.supervisor.routes.drop(self.name, self.static)
            self.static = None
        for process in list(self.live):
            self.supervisor.routes.drop(self.name, process.upstream)
            await self._stop(process, why)
        self.current = None
        await asyncio.gather(*self.revoking)
        if deleted:
            await self.logs.close(discard=True)
            return
        await self.supervisor.record(
            self.deployment_id, server_state="stopped", server_address=None, server_pid=None
        )
        await self.logs.close()

    async def _keep(self) -> None:
        crashes: deque[float] = deque()
        failed_starts = 0
        backoff = BACKOFF_SECONDS
        while True:
            target = self.target
            self.changed.clear()
            if static_of(target.config) is not None:
                await self._serve_static(target)
                continue
            if self.current is not None and self.current.version == target.version:
                reason = await self._watch(self.current)
                if reason is None:
                    continue  # a new version is wanted
                self.supervisor.routes.drop(self.name, self.current.upstream)
                self.current = None
                crashes.append(time.monotonic())
                while crashes and crashes[0] < time.monotonic() - CRASH_WINDOW_SECONDS:
                    crashes.popleft()
                if len(crashes) == 1:  # the first crash in a while: back off from the start
                    backoff = BACKOFF_SECONDS
                if len(crashes) >= CRASH_LIMIT:
                    why = f"crashed {len(crashes)} times within {CRASH_WINDOW_SECONDS:g} s"
                    await self._crash_loop(target, f"{why}; last: {reason}")
                    crashes.clear()
                    backoff = BACKOFF_SECONDS
                    continue
                await self._restarting(target, reason, backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            failure = await self._bring_up(target)
            if failure is None:
                failed_starts = 0
                continue
            failed_starts += 1
            if failed_starts >= START_FAILURE_LIMIT:
                why = f"failed to start {failed_starts} times in a row"
                await self._crash_loop(target, f"{why}; last: {failure}")
                failed_starts = 0
                backoff = BACKOFF_SECONDS
                continue
            await self._restarting(target, failure, backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def _serve_static(self, target: Target) -> None:
        """Route to the version's built folder (one switch: requests see the old version's
        files or the new one's, never a mix), stop a program it replaces, and wait for the
        next version: files need no process, port or restart."""
        layout = self.supervisor.layout
        folder = static_dir(layout, self.name, target.version, target.config)
        assert folder is not None
        if not folder.is_dir():
            why = f"version {target.version} is not built on this node ({folder}); deploy again"
            await self.logs.note(why)
            await self.supervisor.record(
                self.deployment_id, server_state=STARTING, server_reason=why
            )
            await self.changed.wait()
            return
        upstream = Upstream(self.name, target.version, "", folder.resolve())
        self.supervisor.routes.switch(upstream)
        self.static, previous = upstream, self.current
        self.current = None
        await self.supervisor.record(
            self.deployment_id,
            server_state=RUNNING,
            server_reason=None,
            server_version=target.version,
            server_address=None,
            server_pid=None,
            server_restarts=self.restarts,
            server_since=utcnow(),
        )
        await self.logs.note(
            f"version {target.version} serves its static folder {static_of(target.config)}/"
        )
        if previous is not None:
            await self._retire(previous, target.version)
        await self.changed.wait()

    async def _watch(self, process: _Process) -> str | None:
        """Wait for the process to end or stop answering its health checks (why, in
        words; it is stopped), or for another version to be wanted (None)."""
        changed = asyncio.ensure_future(self.changed.wait())
        failures: list[str] = []
        try:
            async with httpx.AsyncClient(timeout=HEALTH_TIMEOUT_SECONDS) as client:
                while len(failures) < HEALTH_FAILURE_LIMIT:
                    await asyncio.wait(
                        [process.ended, changed],
                        timeout=HEALTH_INTERVAL_SECONDS,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if process.ended.done():
                        return f"version {process.version} {self._ending(process.ended)}"
                    if changed.done():
                        return None
                    failure = await _probe(client, process)
                    failures = [*failures, failure] if failure is not None else []
        finally:
            changed.cancel()
        why = (
            f"version {process.version} failed {HEALTH_FAILURE_LIMIT} health checks in a row "
            f"(last: {failures[-1]})"
        )
        await self._stop(process, why)
        return why

    async def _restarting(self, target: Target, reason: str, backoff: float) -> None:
        self.restarts += 1
        await self.logs.note(f"{reason}; starting again in {backoff:g} s")
        await self.supervisor.record(
            self.deployment_id,
            server_state=RESTARTING if self.current is None else RUNNING,
            server_reason=reason,
            server_restarts=self.restarts,
            **({"server_address": None, "server_pid": None} if self.current is None else {}),
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), backoff)

    async def _crash_loop(self, target: Target, why: str) -> None:
        """Stop trying until another version is wanted; record why and alert once."""
        serving = (
            f"; version {self.current.version} still serves" if self.current is not None else ""
        )
        reason = f"crash loop: version {target.version} {why}; stopped retrying{serving}"
        log.warning("server %s: %s", self.name, reason)
        await self.logs.note(f"{reason}; deploy a fixed version or roll back")
        tail = await self._tail()
        await self.supervisor.record(
            self.deployment_id, server_state=CRASH_LOOPING, server_reason=reason
        )
        if self.supervisor.on_crash_loop is not None:
            try:
                await self.supervisor.on_crash_loop(target.deployment, target.version, reason, tail)
            except Exception:
                log.exception("the crash-loop alert of %s failed", self.name)
        previous = self.current
        if previous is not None and await self._watch(previous) is not None:
            # The version that still served ended too: nothing serves until a new version.
            self.supervisor.routes.drop(self.name, previous.upstream)
            self.current = None
            await self.supervisor.record(
                self.deployment_id, server_address=None, server_pid=None, server_version=None
            )
        await self.changed.wait()

    async def _tail(self) -> tuple[str, ...]:
        await self.logs.flush()
        async with self.supervisor.instance.sessions() as session:
            texts = await session.scalars(
                select(ServerLogChunk.text)
                .where(ServerLogChunk.deployment_id == self.deployment_id)
                .order_by(ServerLogChunk.id.desc())
                .limit(4)
            )
            lines = "".join(reversed(list(texts))).splitlines()
        return tuple(line for line in lines[-20:] if line.strip())

    async def _bring_up(self, target: Target) -> str | None:
        """Start `target`'s version, wait until healthy, switch traffic to it and stop the
        one it replaces; why it failed, or None."""
        previous = self.current
        config = target.config
        await self.supervisor.record(
            self.deployment_id,
            server_state=STARTING if previous is None else RUNNING,
            server_reason=f"starting version {target.version}",
        )
        if config.port is not None and previous is not None:
            # One port cannot serve two versions: the old one goes first.
            await self._stop(previous, f"version {target.version} needs port {config.port}")
            self.supervisor.routes.drop(self.name, previous.upstream)
            self.current = previous = None
        try:
            process = await self._launch(target)
        except ServerError as error:
            await self.logs.note(str(error))
            return str(error)
        failure = await self._healthy(process)
        if failure is not None:
            await self._stop(process, "it did not become healthy")
            return failure
        if isinstance(config, ServiceConfig):
            problem = await self._documented(process, target)
            if problem == REFUSED:
                await self.changed.wait()  # the previous version is made active again
                return None
            if problem is not None:
                return problem
        self.supervisor.routes.switch(process.upstream)
        self.current, self.static = process, None
        await self.supervisor.record(
            self.deployment_id,
            server_state=RUNNING,
            server_reason=None,
            server_version=target.version,
            server_address=process.upstream.address,
            server_pid=process.pid,
            server_restarts=self.restarts,
            server_since=utcnow(),
        )
        await self.logs.note(f"version {target.version} is healthy: serving on port {process.port}")
        if previous is not None:
            await self._retire(previous, target.version)
        return None

    async def _documented(self, process: _Process, target: Target) -> str | None:
        """Read a code service's OpenAPI from its new process and publish it (None), or
        refuse the version (REFUSED: stopped, marked failed with why, the previous version
        active again); a failure to record either is a failed start (why)."""
        assert isinstance(target.config, ServiceConfig)
        folder = self.supervisor.layout.server_dir(self.name, target.version)
        document, problem = await code_services.read_openapi(
            process.upstream.address, folder, wait_seconds=HEALTH_TIMEOUT_SECONDS
        )
        try:
            async with self.supervisor.instance.sessions() as session, session.begin():
                if problem is None:
                    await code_services.publish(
                        session,
                        target.deployment,
                        target.version,
                        target.config.description,
                        document,
                    )
                    return None
                why = code_services.refusal(target.version, problem)
                previous = self.current.version if self.current is not None else None
                await session.execute(
                    update(DeploymentVersion)
                    .where(
                        DeploymentVersion.deployment_id == self.deployment_id,
                        DeploymentVersion.version == target.version,
                    )
                    .values(
                        status="failed",
                        build_log=DeploymentVersion.build_log + f"[servicebay] {why}\n",
                    )
                )
                await session.execute(
                    update(Deployment)
                    .where(
                        Deployment.id == self.deployment_id,
                        Deployment.active_version == target.version,
                    )
                    .values(
                        active_version=previous,
                        server_reason=why,
                        **({"server_state": REFUSED} if previous is None else {}),
                    )
                )
        except Exception:
            log.exception("could not record the OpenAPI check of %s", self.name)
            failure = f"version {target.version}: its OpenAPI check could not be recorded"
            await self._stop(process, failure)
            return failure
        await self._stop(process, why)
        await self.logs.note(why)
        await self.logs.flush()
        return REFUSED

    async def _retire(self, previous: _Process, successor: int) -> None:
        """Stop a replaced process once the requests it serves are answered (and other
        nodes, which re-read the address within `auth_cache_seconds`, have moved too)."""
        await asyncio.sleep(self.supervisor.settings.auth_cache_seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(previous.upstream.idle.wait(), DRAIN_SECONDS)
        await self._stop(previous, f"replaced by version {successor}")

    async def _launch(self, target: Target) -> _Process:
        supervisor = self.supervisor
        layout, config = supervisor.layout, target.config
        folder = layout.server_dir(self.name, target.version)
        environment = layout.environment(target.requirements_digest)
        if not folder.is_dir() or not (environment / "bin").is_dir():
            raise ServerError(
                f"version {target.version} is not built on this node ({folder}); deploy again"
            )
        port = config.port or free_port()
        if config.port is not None and not port_is_free(port):
            raise ServerError(taken_port_problem(port))
        secrets = await supervisor.reveal_secrets(target)
        key_id, key = await supervisor.issue_key(target)
        spec = ProcessSpec(
            ["/bin/sh", "-c", start_command_of(config)],
            folder,
            server_environment(
                config,
                name=self.name,
                port=port,
                bin_dir=environment / "bin",
                sdk_dir=layout.sdk,
                base_url=supervisor.settings.base_url,
                identity_key=supervisor.instance.master_key.identity_key(self.name),
                api_key=key,
                secrets=secrets,
            ),
            uid=deployment_uid(self.deployment_id),
            timeout_seconds=None,
            memory_mb=config.memory_mb,
            log_limit_bytes=None,  # it lives long: its log is pruned where it is stored
            kill_grace_seconds=KILL_GRACE_SECONDS,
        )
        await self.logs.note(
            f"starting version {target.version} on port {port}: {config.start_command}"
        )
        stdout, stderr = os.pipe2(os.O_CLOEXEC), os.pipe2(os.O_CLOEXEC)
        started = time.monotonic()
        try:
            popen = spawn(spec, stdout=stdout[1], stderr=stderr[1])
        except ProcessError as error:
            os.close(stdout[0])
            os.close(stderr[0])
            await supervisor.revoke_key(key_id, key)
            raise ServerError(str(error)) from None
        finally:
            os.close(stdout[1])
            os.close(stderr[1])
        cancel = asyncio.Event()
        exited = asyncio.ensure_future(wait_for_exit(popen))
        ended = asyncio.create_task(
            supervise(
                popen.pid,
                exited,
                stdout[0],
                stderr[0],
                spec,
                self.logs.add,
                cancel,
                started=started,
            ),
            name=f"server-{self.name}-{popen.pid}",
        )
        upstream = Upstream(self.name, target.version, f"{HOST}:{port}")
        process = _Process(
            target.version, config, port, popen.pid, ended, cancel, upstream, key_id, key
        )
        self.live.add(process)
        ended.add_done_callback(lambda _: self._ended(process))
        return process

    def _ended(self, process: _Process) -> None:
        """A process is gone: so is its key."""
        self.live.discard(process)
        revoking = asyncio.ensure_future(self.supervisor.revoke_key(process.key_id, process.key))
        self.revoking.add(revoking)
        revoking.add_done_callback(self.revoking.discard)

    async def _healthy(self, process: _Process) -> str | None:
        """Poll the health path until it answers below 500; why not, or None."""
        config = process.config
        health_path = health_path_of(config)
        deadline = time.monotonic() + START_SECONDS
        last: str | None = "no answer yet"
        async with httpx.AsyncClient(timeout=HEALTH_TIMEOUT_SECONDS) as client:
            while time.monotonic() < deadline:
                if process.ended.done():
                    return f"version {process.version} {self._ending(process.ended)} at start"
                last = await _probe(client, process)
                if last is None:
                    return None
                await asyncio.sleep(HEALTH_POLL_SECONDS)
        hint = ""
        if "PORT" not in start_command_of(config) and config.port is None:
            hint = "; the start command does not mention $PORT: listen on $PORT"
        return (
            f"version {process.version} did not answer GET {health_path} on port "
            f"{process.port} within {START_SECONDS:g} s ({last}){hint}"
        )

    async def _stop(self, process: _Process, why: str) -> None:
        """TERM, then KILL, its process group (`supervise` does both on `cancel`); a
        supervision that has not ended well past that is given up on, after a last KILL,
        so that no node waits forever to stop."""
        if not process.ended.done():
            await self.logs.note(f"stopping version {process.version} (pid {process.pid}): {why}")
            process.cancel.set()
        done, _ = await asyncio.wait([process.ended], timeout=STOP_SECONDS)
        if not done:
            log.error("server %s: pid %d did not end after it was stopped", self.name, process.pid)
            signal_group(process.pid, signal.SIGKILL)
            process.ended.cancel()
            self.live.discard(process)

    @staticmethod
    def _ending(ended: asyncio.Task[ProcessResult]) -> str:
        if ended.cancelled() or ended.exception() is not None:
            return "lost its supervision"
        return ended.result().describe()
