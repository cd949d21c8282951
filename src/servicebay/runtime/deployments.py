"""Deployments and their versions: an uploaded bundle in, a built and active version out.

A deploy (`receive_bundle`, `add_version`, `install`, then `Deployer.build`):

1. The upload is unpacked into a private staging folder and checked again, exactly as
   `bay deploy` checked it on the author's machine: the server trusts no client.
2. The deployment is created (its first deployer owns it) or gets the next version
   number, recorded as `building`; the number is then this deploy's alone.
3. The bundle is stored by digest (kept once however often it is deployed) and the
   folder moved to the version's source folder.
4. In the background, the builder finds or builds the environment for the version's
   requirements; the build log is saved as it grows, so it can be followed. A build
   that succeeds makes its version `ready` and active (unless a newer version is active
   already); one that fails leaves its log and the previous active version in place.

Who may do what (owners, admins, `manage` grants) is the gateway's to decide.

A version left `building` by a server that stopped mid-build is marked failed once it
is older than any build can last (`Deployer.stale_before`): every node agrees on that
without knowing which node built it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicebay.core.errors import Conflict, InvalidInput, NotFound
from servicebay.core.models import (
    Deployment,
    DeploymentVersion,
    Run,
    RunLogChunk,
    ServerLogChunk,
    User,
    new_id,
    utcnow,
)
from servicebay.runtime.builder import Builder, BuildFailed, NoInterpreter
from servicebay.runtime.bundle import BundleError, extract_bundle
from servicebay.runtime.code_services import unpublish
from servicebay.runtime.config import (
    DEPLOYMENT_NAME,
    REQUIREMENTS,
    DeploymentConfig,
    DeploymentKind,
    FolderInvalid,
    Problem,
    ServerConfig,
    ServiceConfig,
    WebhookConfig,
    check_folder,
)
from servicebay.runtime.layout import Layout
from servicebay.runtime.supervisor import SUPERVISED_KINDS, ServerError, build_version

log = logging.getLogger(__name__)

BUILDING, READY, FAILED = "building", "ready", "failed"
DEPLOYABLE: tuple[DeploymentKind, ...] = ("cron", "webhook", "server", "service")
"""Kinds this release builds and runs (a `service` folder only of kind code)."""
LOG_FLUSH_SECONDS = 0.5
STALE_MARGIN = timedelta(minutes=5)
OnBuildFailure = Callable[[Deployment, DeploymentVersion, str], Awaitable[None]]
"""Told of each version whose build failed, with its log (the owner is alerted)."""
INTERRUPTED = (
    "[servicebay] the build stopped without finishing (its server stopped while building); "
    "deploy again"
)


def resource_of(name: str) -> str:
    """The grant resource that covers managing deployment `name`."""
    return f"deployment:{name}"


@dataclass
class Upload:
    """A received bundle, unpacked and checked, waiting to become a version."""

    staging: Path
    """The private folder holding `folder`; removed by `discard`."""
    folder: Path
    name: str
    kind: DeploymentKind
    config_file: str
    config: DeploymentConfig
    requirements: str
    data: bytes
    digest: str

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def receive_bundle(layout: Layout, data: bytes, name: str | None) -> Upload:
    """Unpack and check an uploaded bundle (blocking: run it in a thread).

    `name` names a cron deployment (its folder's name); the other kinds are named by
    their config. InvalidInput (FolderInvalid with every problem) says what is wrong.
    """
    uploads = layout.root / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=uploads))
    try:
        if name is not None and not DEPLOYMENT_NAME.fullmatch(name):
            raise _invalid_name(name)
        folder = staging / (name or "bundle")
        try:
            extract_bundle(data, folder)
        except BundleError as error:
            raise InvalidInput(
                f"the upload is not a usable bundle: {error}",
                errors=[{"loc": ["body", "bundle"], "msg": str(error), "type": "value_error"}],
            ) from None
        check = check_folder(folder)
        if not check.ok or check.config is None or check.kind is None:
            raise _folder_invalid(check.problems)
        assert check.config_file is not None
        _refuse_registered_kinds(check.config_file, check.config)
        requirements = folder / REQUIREMENTS
        return Upload(
            staging=staging,
            folder=folder,
            name=deployment_name(check.config_file, check.config, name),
            kind=check.kind,
            config_file=check.config_file,
            config=check.config,
            requirements=requirements.read_text(encoding="utf-8-sig")
            if requirements.is_file()
            else "",
            data=data,
            digest=hashlib.sha256(data).hexdigest(),
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def deployment_name(config_file: str, config: DeploymentConfig, given: str | None) -> str:
    """A webhook or server is named by its `sub_domain`, a service by its `name`, and a
    cron job by its folder (`given`, which the others must match when sent)."""
    named = (
        config.sub_domain
        if isinstance(config, WebhookConfig | ServerConfig)
        else config.name
        if isinstance(config, ServiceConfig)
        else None
    )
    if named is None:
        if given is None:
            raise InvalidInput(
                "a cron deployment is named by its folder: send the folder's name",
                errors=[{"loc": ["body", "name"], "msg": "required", "type": "missing"}],
            )
        return given
    if given is not None and given != named:
        field = "name" if isinstance(config, ServiceConfig) else "sub_domain"
        raise InvalidInput(
            f"{config_file} names this deployment {named!r} ({field}), but the upload says "
            f"{given!r}: send no name, or change {field}",
            errors=[{"loc": ["body", "name"], "msg": f"must be {named!r}", "type": "value_error"}],
        )
    return named


def _folder_invalid(problems: Sequence[Problem]) -> FolderInvalid:
    """Every problem, each error naming its file and field outright as well as in `loc`."""
    invalid = FolderInvalid(problems)
    invalid.errors = [
        problem.as_error() | {"file": problem.file, "field": problem.field} for problem in problems
    ]
    return invalid


def _refuse_registered_kinds(config_file: str, config: DeploymentConfig) -> None:
    if isinstance(config, ServiceConfig) and config.kind != "code":
        message = (
            f"a {config.kind} service is served by the platform from its service.json, "
            "nothing to build: register it with `bay services register FOLDER` "
            "(POST /api/v1/services; admins only)"
        )
    else:
        return
    problem = Problem(config_file, None, None, None, message)
    raise InvalidInput(message, errors=[problem.as_error()])


def _invalid_name(name: str) -> InvalidInput:
    message = (
        f"{name!r} cannot name a deployment: use lowercase letters, digits, '_' or '-', "
        "starting with a letter (at most 63), since it becomes a URL"
    )
    return InvalidInput(
        message, errors=[{"loc": ["body", "name"], "msg": message, "type": "value_error"}]
    )


async def find(session: AsyncSession, name: str) -> Deployment | None:
    found: Deployment | None = await session.scalar(
        select(Deployment).where(Deployment.name == name)
    )
    return found


async def get(session: AsyncSession, name: str) -> Deployment:
    deployment = await find(session, name)
    if deployment is None:
        raise NotFound(f"there is no deployment named {name!r}; `bay deployments list` shows yours")
    return deployment


async def owner_emails(session: AsyncSession, deployments: Sequence[Deployment]) -> dict[str, str]:
    """Each owner's e-mail, by user id."""
    ids = {deployment.owner_id for deployment in deployments}
    if not ids:
        return {}
    rows = await session.execute(select(User.id, User.email).where(User.id.in_(ids)))
    return {user_id: email for user_id, email in rows.tuples()}


async def all_deployments(session: AsyncSession, *, after: str | None) -> list[Deployment]:
    """Every deployment, by name, from past `after`."""
    query = select(Deployment).order_by(Deployment.name)
    if after is not None:
        query = query.where(Deployment.name > after)
    return list(await session.scalars(query))


async def versions(session: AsyncSession, deployment: Deployment) -> list[DeploymentVersion]:
    """Newest first."""
    query = (
        select(DeploymentVersion)
        .where(DeploymentVersion.deployment_id == deployment.id)
        .order_by(DeploymentVersion.version.desc())
    )
    return list(await session.scalars(query))


async def get_version(
    session: AsyncSession, deployment: Deployment, number: int
) -> DeploymentVersion:
    found: DeploymentVersion | None = await session.scalar(
        select(DeploymentVersion).where(
            DeploymentVersion.deployment_id == deployment.id, DeploymentVersion.version == number
        )
    )
    if found is None:
        raise NotFound(
            f"deployment {deployment.name} has no version {number}; "
            f"`bay deployments show {deployment.name}` lists its versions"
        )
    return found


async def add_version(
    session: AsyncSession,
    deployment: Deployment | None,
    upload: Upload,
    *,
    requirements_digest: str,
    owner_id: str,
    actor: str,
) -> tuple[Deployment, DeploymentVersion]:
    """The next version of `upload.name` (created, owned by `owner_id`, if `deployment` is
    None), `building`. Two deploys at once may pick the same number: the database refuses
    the second (IntegrityError), which then tries again."""
    if deployment is None:
        deployment = Deployment(
            id=new_id("dep"), name=upload.name, kind=upload.kind, owner_id=owner_id
        )
        session.add(deployment)
        await session.flush()
    elif deployment.kind != upload.kind:
        raise Conflict(
            f"{deployment.name} is a {deployment.kind} deployment and this folder holds "
            f"{upload.config_file}: a deployment keeps its kind. Delete it first "
            f"(`bay deployments delete {deployment.name}`) or choose another name"
        )
    latest = await session.scalar(
        select(func.max(DeploymentVersion.version)).where(
            DeploymentVersion.deployment_id == deployment.id
        )
    )
    version = DeploymentVersion(
        id=new_id("ver"),
        deployment_id=deployment.id,
        version=(latest or 0) + 1,
        config=upload.config.model_dump(mode="json"),
        bundle_digest=upload.digest,
        requirements_digest=requirements_digest,
        status=BUILDING,
        build_log="",
        created_by=actor,
    )
    session.add(version)
    deployment.updated_at = utcnow()
    await session.flush()
    return deployment, version


def install(layout: Layout, upload: Upload, version: int) -> None:
    """Store the bundle by digest and move the folder to the version's source (blocking).

    The version number was just recorded, so anything found at its source folder is
    left from an earlier deployment of the same name and is replaced.
    """
    bundle = layout.bundle(upload.digest)
    if not bundle.exists():
        bundle.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=bundle.parent, prefix=f".{bundle.name}.")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(upload.data)
            os.replace(temporary, bundle)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    source = layout.source(upload.name, version)
    shutil.rmtree(source, ignore_errors=True)
    source.parent.mkdir(parents=True, exist_ok=True)
    os.replace(upload.folder, source)


async def finish_build(
    sessions: async_sessionmaker[AsyncSession], version_id: str, *, ok: bool, build_log: str
) -> tuple[Deployment, DeploymentVersion] | None:
    """Mark a building version ready (and active, unless a newer one is) or failed, with
    its log; the finished version and its deployment. A version that finished already,
    or was deleted meanwhile, is left alone (None).
    """
    async with sessions() as session, session.begin():
        version = await session.get(DeploymentVersion, version_id)
        if version is None or version.status != BUILDING:
            return None
        version.status = READY if ok else FAILED
        version.build_log = build_log
        version.finished_at = utcnow()
        if ok:
            # One statement, so that two builds finishing at once cannot both win.
            await session.execute(
                update(Deployment)
                .where(
                    Deployment.id == version.deployment_id,
                    or_(
                        Deployment.active_version.is_(None),
                        Deployment.active_version < version.version,
                    ),
                )
                .values(active_version=version.version, updated_at=utcnow())
            )
        deployment = await session.get(Deployment, version.deployment_id, populate_existing=True)
        assert deployment is not None  # the version's row holds a key to it
        return deployment, version


async def save_build_log(
    sessions: async_sessionmaker[AsyncSession], version_id: str, build_log: str
) -> None:
    async with sessions() as session, session.begin():
        await session.execute(
            update(DeploymentVersion)
            .where(DeploymentVersion.id == version_id, DeploymentVersion.status == BUILDING)
            .values(build_log=build_log)
        )


async def fail_stale_builds(
    session: AsyncSession, deployment: Deployment, before: datetime
) -> None:
    """Versions still `building` though created before `before` were abandoned."""
    await session.execute(
        update(DeploymentVersion)
        .where(
            DeploymentVersion.deployment_id == deployment.id,
            DeploymentVersion.status == BUILDING,
            DeploymentVersion.created_at < before,
        )
        .values(
            status=FAILED,
            build_log=DeploymentVersion.build_log + "\n" + INTERRUPTED + "\n",
            finished_at=utcnow(),
        )
    )


async def rollback(
    session: AsyncSession, deployment: Deployment, number: int | None
) -> DeploymentVersion:
    """Make version `number` active again (default: the newest ready one before the
    active one); it must have built."""
    history = await versions(session, deployment)
    ready = [version for version in history if version.status == READY]
    if number is None:
        current = deployment.active_version
        earlier = [v for v in ready if current is None or v.version < current]
        if not earlier:
            raise Conflict(
                f"{deployment.name} has no ready version before version {current} to roll "
                "back to; `bay deployments show` lists its versions"
            )
        target = earlier[0]
    else:
        target = await get_version(session, deployment, number)
        if target.status != READY:
            choices = ", ".join(str(version.version) for version in ready) or "none"
            raise Conflict(
                f"version {number} of {deployment.name} is {target.status}, not ready: only "
                f"a version that built can be active (ready versions: {choices})"
            )
    deployment.active_version = target.version
    deployment.updated_at = utcnow()
    await session.flush()
    return target


@dataclass(frozen=True)
class Removal:
    """What deleting a deployment leaves to remove from disk once the deletion commits."""

    name: str
    run_ids: list[str]
    bundle_digests: list[str]


async def delete_deployment(session: AsyncSession, deployment: Deployment) -> Removal:
    """Delete the deployment, its versions, runs and run logs; refused while a run runs.

    Queued runs go with it. Environments stay: other deployments may share them.
    """
    running = list(
        await session.scalars(
            select(Run.id).where(Run.deployment_id == deployment.id, Run.status == "running")
        )
    )
    if running:
        raise Conflict(
            f"{deployment.name} has {len(running)} run(s) in progress ({', '.join(running)}): "
            "cancel them (`bay runs cancel ID`) or let them finish, then delete"
        )
    run_ids = list(await session.scalars(select(Run.id).where(Run.deployment_id == deployment.id)))
    digests = set(
        await session.scalars(
            select(DeploymentVersion.bundle_digest).where(
                DeploymentVersion.deployment_id == deployment.id
            )
        )
    )
    if run_ids:
        await session.execute(delete(RunLogChunk).where(RunLogChunk.run_id.in_(run_ids)))
    await session.execute(delete(Run).where(Run.deployment_id == deployment.id))
    await session.execute(
        delete(ServerLogChunk).where(ServerLogChunk.deployment_id == deployment.id)
    )
    await session.execute(
        delete(DeploymentVersion).where(DeploymentVersion.deployment_id == deployment.id)
    )
    await unpublish(session, deployment.name)
    await session.delete(deployment)
    await session.flush()
    shared = set(
        await session.scalars(
            select(DeploymentVersion.bundle_digest).where(
                DeploymentVersion.bundle_digest.in_(digests)
            )
        )
    )
    return Removal(deployment.name, run_ids, sorted(digests - shared))


def remove_files(layout: Layout, removal: Removal) -> None:
    """The deleted deployment's sources, run folders and unshared bundles (blocking)."""
    shutil.rmtree(layout.source(removal.name, 1).parent, ignore_errors=True)
    shutil.rmtree(layout.server_dir(removal.name, 1).parent, ignore_errors=True)
    for run_id in removal.run_ids:
        shutil.rmtree(layout.run_dir(run_id), ignore_errors=True)
    for digest in removal.bundle_digests:
        layout.bundle(digest).unlink(missing_ok=True)


class Deployer:
    """Builds new versions in the background, one task each, and stops them on `stop`.

    A node's component (`runtime.node.Component`): a stopped build kills its processes
    and marks its version failed. A build that fails by itself is also told to
    `on_failure` (the alerter's `build_failed`), not one stopped with the node. A server
    version is also staged and its build command run (`supervisor.build_version`);
    `on_ready` hears of each version that built (the supervisor's `wake`).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        layout: Layout,
        builder: Builder,
        *,
        on_failure: OnBuildFailure | None = None,
    ) -> None:
        self.sessions = sessions
        self.layout = layout
        self.builder = builder
        self.on_failure = on_failure
        self.on_ready: Callable[[], None] | None = None
        self._builds: dict[asyncio.Task[None], str] = {}

    async def start(self) -> None:
        """Nothing to start: builds begin with each deploy."""

    async def stop(self) -> None:
        """Stop every build; their versions end failed (a task stopped before it began
        has not said so itself)."""
        stopped = dict(self._builds)
        for task in stopped:
            task.cancel()
        await asyncio.gather(*stopped, return_exceptions=True)
        for version_id in stopped.values():
            await finish_build(self.sessions, version_id, ok=False, build_log=INTERRUPTED + "\n")

    def stale_before(self, now: datetime) -> datetime:
        """A version created before this cannot still be building: a build waits at most
        one build's time for the lock, then takes at most one build's time."""
        return now - 2 * timedelta(seconds=self.builder.timeout_seconds) - STALE_MARGIN

    def build(self, version_id: str, requirements: str) -> asyncio.Task[None]:
        """Start building a recorded version; the task ends when its version is ready or
        failed."""
        task = asyncio.create_task(self._build(version_id, requirements))
        self._builds[task] = version_id
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._builds.pop(task, None)

    async def _build(self, version_id: str, requirements: str) -> None:
        lines = _BuildLog(self.sessions, version_id)
        flusher = asyncio.create_task(lines.flush_periodically())
        ok = interrupted = False
        try:
            environment = await self.builder.ensure(requirements, lines.add)
            await self._build_server(version_id, environment, lines.add)
            ok = True
        except (BuildFailed, NoInterpreter, ServerError) as error:
            await lines.add(f"build failed: {error}")
        except asyncio.CancelledError:
            interrupted = True
            await lines.add(INTERRUPTED)
            raise
        except Exception:
            reference = new_id("err")
            log.exception("the build of version %s failed (%s)", version_id, reference)
            await lines.add(f"build failed: an internal error (logged as {reference})")
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            # Shielded: a version must not stay `building` because its task was stopped.
            finished = await asyncio.shield(
                finish_build(self.sessions, version_id, ok=ok, build_log=lines.text())
            )
        if finished is not None and ok and self.on_ready is not None:
            self.on_ready()
        if finished is not None and not ok and not interrupted and self.on_failure is not None:
            try:
                await self.on_failure(*finished, lines.text())
            except Exception:
                log.exception("telling of the failed build of version %s failed", version_id)

    async def _build_server(
        self, version_id: str, environment: Path, on_line: Callable[[str], Awaitable[None]]
    ) -> None:
        """For a server or code-service version: its own folder, and its build command run
        there."""
        async with self.sessions() as session:
            version = await session.get(DeploymentVersion, version_id)
            deployment = (
                None if version is None else await session.get(Deployment, version.deployment_id)
            )
        if version is None or deployment is None or deployment.kind not in SUPERVISED_KINDS:
            return
        await build_version(self.layout, self.builder, deployment, version, environment, on_line)


class _BuildLog:
    """A build's lines, saved to its version every `LOG_FLUSH_SECONDS` while it grows."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], version_id: str) -> None:
        self.sessions = sessions
        self.version_id = version_id
        self.lines: list[str] = []
        self._saved = 0

    async def add(self, line: str) -> None:
        self.lines.append(line)

    def text(self) -> str:
        return "".join(f"{line}\n" for line in self.lines)

    async def flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(LOG_FLUSH_SECONDS)
            if len(self.lines) != self._saved:
                self._saved = len(self.lines)
                await save_build_log(self.sessions, self.version_id, self.text())
