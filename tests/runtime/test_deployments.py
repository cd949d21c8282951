"""Deployments and versions on a real metadata database: uploads checked as the CLI
checks them, versions numbered per deployment, the newest build that succeeds made
active, rollback to any version that built, deletion refused while a run runs, and no
version left `building` by a stopped build."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicebay.core import identity
from servicebay.core.db import create_engine, session_factory
from servicebay.core.errors import Conflict, InvalidInput
from servicebay.core.migrate import upgrade
from servicebay.core.models import Deployment, DeploymentVersion, Run, new_id, utcnow
from servicebay.runtime import deployments
from servicebay.runtime.builder import Builder, default_build_uid
from servicebay.runtime.bundle import build_bundle
from servicebay.runtime.config import FolderInvalid
from servicebay.runtime.deployments import Deployer, Upload
from servicebay.runtime.layout import Layout

CRON = '{"cron_frequency": "0 9 * * 5", "script_to_run": "main.py"}'
OWNER = "owner@example.com"


def write_folder(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def cron_folder(parent: Path, name: str = "weekly", **extra: str) -> Path:
    files = {"cron.json": CRON, "main.py": "print('hi')\n", "README.md": "# Weekly\n"}
    return write_folder(parent / name, {**files, **extra})


@dataclass
class Platform:
    home: Path
    layout: Layout
    sessions: async_sessionmaker[AsyncSession]
    deployer: Deployer
    owner_id: str

    def upload(self, folder: Path, name: str | None = None) -> Upload:
        return deployments.receive_bundle(self.layout, build_bundle(folder).data, name)

    async def record(self, upload: Upload) -> tuple[str, int]:
        """A new `building` version of `upload`: (its id, its number)."""
        async with self.sessions() as session, session.begin():
            existing = await deployments.find(session, upload.name)
            _, version = await deployments.add_version(
                session,
                existing,
                upload,
                requirements_digest=await self.deployer.builder.digest(upload.requirements),
                owner_id=self.owner_id,
                actor=OWNER,
            )
        deployments.install(self.layout, upload, version.version)
        upload.discard()
        return version.id, version.version

    async def deploy(self, folder: Path, name: str | None = None) -> int:
        """Deploy `folder` and wait for its build; the version number."""
        upload = self.upload(folder, name)
        version_id, number = await self.record(upload)
        await self.deployer.build(version_id, upload.requirements)
        return number

    async def state(self, name: str) -> tuple[int | None, dict[int, str]]:
        """The active version, and every version's status."""
        async with self.sessions() as session:
            deployment = await deployments.get(session, name)
            history = await deployments.versions(session, deployment)
            return deployment.active_version, {v.version: v.status for v in history}

    async def add_run(self, name: str, status: str) -> str:
        async with self.sessions() as session, session.begin():
            deployment = await deployments.get(session, name)
            run = Run(
                id=new_id("run"),
                deployment_id=deployment.id,
                version=1,
                trigger="manual",
                status=status,
                attempt=1,
                cancel_requested=False,
                log_bytes=0,
                log_truncated=False,
            )
            session.add(run)
        return run.id


@asynccontextmanager
async def open_platform(home: Path) -> AsyncIterator[Platform]:
    engine = create_engine(f"sqlite:///{home / 'meta.db'}")
    await upgrade(engine)
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        owner = await identity.create_user(
            session, email=OWNER, name="Owner", teams=[], admin=False
        )
    layout = Layout(home)
    # No index: a requirement that is not already built cannot install.
    builder = Builder(layout, uid=default_build_uid(), environ={"PIP_NO_INDEX": "1"})
    try:
        yield Platform(home, layout, sessions, Deployer(sessions, layout, builder), owner.id)
    finally:
        await engine.dispose()


def drive(home: Path, scenario: Callable[[Platform], Awaitable[None]]) -> None:
    async def main() -> None:
        async with open_platform(home) as platform:
            await scenario(platform)

    asyncio.run(main())


@pytest.fixture
def home() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="bay-deployments-"))  # the build user can reach it
    yield folder
    shutil.rmtree(folder)


# Receiving uploads


def test_an_upload_is_named_by_its_config_or_else_by_its_folder(home: Path) -> None:
    layout = Layout(home)
    cron = deployments.receive_bundle(layout, build_bundle(cron_folder(home)).data, "weekly")
    assert (cron.name, cron.kind, cron.config_file, cron.requirements) == (
        "weekly",
        "cron",
        "cron.json",
        "",
    )
    cron.discard()
    assert not cron.staging.exists()
    with pytest.raises(InvalidInput, match="named by its folder"):
        deployments.receive_bundle(layout, build_bundle(cron_folder(home)).data, None)

    hook = write_folder(
        home / "lookup-folder",
        {
            "webhook.json": '{"sub_domain": "customer_lookup", "script_to_run": "hook.py"}',
            "hook.py": "",
            "README.md": "# Lookup\n",
            "requirements.txt": "baytiny==1.0\n",
        },
    )
    upload = deployments.receive_bundle(layout, build_bundle(hook).data, None)
    assert (upload.name, upload.kind, upload.requirements) == (
        "customer_lookup",
        "webhook",
        "baytiny==1.0\n",
    )
    upload.discard()
    with pytest.raises(InvalidInput, match="names this deployment 'customer_lookup'"):
        deployments.receive_bundle(layout, build_bundle(hook).data, "lookup-folder")


def test_a_refused_upload_leaves_nothing_behind(home: Path) -> None:
    layout = Layout(home)
    broken = cron_folder(home)
    (broken / "README.md").unlink()
    with pytest.raises(FolderInvalid) as refused:
        deployments.receive_bundle(layout, build_bundle(broken).data, "weekly")
    assert [problem.file for problem in refused.value.problems] == ["README.md"]
    with pytest.raises(InvalidInput, match="not a usable bundle"):
        deployments.receive_bundle(layout, b"PK\x03\x04 a zip, not a tar.gz", "weekly")
    with pytest.raises(InvalidInput, match="cannot name a deployment"):
        deployments.receive_bundle(layout, build_bundle(cron_folder(home)).data, "../etc")
    assert list((layout.root / "uploads").iterdir()) == []


def test_code_services_are_received_and_other_services_refused_saying_what_to_do(
    home: Path,
) -> None:
    layout = Layout(home)
    code = write_folder(
        home / "crm",
        {
            "service.json": '{"name": "crm", "kind": "code", "description": "CRM", '
            '"start command": "python service.py"}',
            "service.py": "print('serving')\n",
            "README.md": "# CRM\n",
        },
    )
    received = deployments.receive_bundle(layout, build_bundle(code).data, None)
    try:
        assert (received.name, received.kind) == ("crm", "service")
    finally:
        received.discard()
    sql = write_folder(
        home / "sales",
        {
            "service.json": '{"name": "sales", "kind": "sql", "description": "Sales", '
            '"secret": "SALES_DB_URL", "tables": "*"}',
            "README.md": "# Sales\n",
        },
    )
    with pytest.raises(InvalidInput, match="bay services register"):
        deployments.receive_bundle(layout, build_bundle(sql).data, None)


# Versions


def test_each_deploy_is_a_version_and_the_newest_that_builds_is_active(home: Path) -> None:
    async def scenario(platform: Platform) -> None:
        folder = cron_folder(home)
        assert await platform.deploy(folder, "weekly") == 1
        assert await platform.state("weekly") == (1, {1: "ready"})
        assert (platform.layout.source("weekly", 1) / "main.py").read_text() == "print('hi')\n"

        (folder / "requirements.txt").write_text("baytiny==9.9\n")
        assert await platform.deploy(folder, "weekly") == 2
        assert await platform.state("weekly") == (1, {1: "ready", 2: "failed"})
        async with platform.sessions() as session:
            deployment = await deployments.get(session, "weekly")
            failed = await deployments.get_version(session, deployment, 2)
        assert "No matching distribution found for baytiny==9.9" in failed.build_log
        assert "build failed:" in failed.build_log

        (folder / "requirements.txt").unlink()
        assert await platform.deploy(folder, "weekly") == 3
        assert await platform.state("weekly") == (3, {1: "ready", 2: "failed", 3: "ready"})

    drive(home, scenario)


def test_a_build_that_ends_late_does_not_replace_a_newer_active_version(home: Path) -> None:
    async def scenario(platform: Platform) -> None:
        folder = cron_folder(home)
        late, _ = await platform.record(platform.upload(folder, "weekly"))
        newer, _ = await platform.record(platform.upload(folder, "weekly"))
        await deployments.finish_build(platform.sessions, newer, ok=True, build_log="")
        await deployments.finish_build(platform.sessions, late, ok=True, build_log="")
        assert await platform.state("weekly") == (2, {1: "ready", 2: "ready"})

    drive(home, scenario)


def test_rollback_goes_to_the_previous_ready_version_or_the_one_named(home: Path) -> None:
    async def scenario(platform: Platform) -> None:
        for _ in range(3):
            await platform.deploy(cron_folder(home), "weekly")
        async with platform.sessions() as session, session.begin():
            deployment = await deployments.get(session, "weekly")
            assert (await deployments.rollback(session, deployment, None)).version == 2
            assert (await deployments.rollback(session, deployment, None)).version == 1
            with pytest.raises(Conflict, match="no ready version before version 1"):
                await deployments.rollback(session, deployment, None)
            assert (await deployments.rollback(session, deployment, 3)).version == 3
        assert (await platform.state("weekly"))[0] == 3

    drive(home, scenario)


def test_a_version_that_failed_cannot_be_made_active(home: Path) -> None:
    async def scenario(platform: Platform) -> None:
        await platform.deploy(cron_folder(home, **{"requirements.txt": "x==9"}), "weekly")
        async with platform.sessions() as session, session.begin():
            deployment = await deployments.get(session, "weekly")
            with pytest.raises(Conflict, match=r"version 1 of weekly is failed.*versions: none"):
                await deployments.rollback(session, deployment, 1)

    drive(home, scenario)


def test_a_deployment_keeps_its_kind(home: Path) -> None:
    async def scenario(platform: Platform) -> None:
        await platform.deploy(cron_folder(home, "lookup"), "lookup")
        hook = write_folder(
            home / "hook",
            {
                "webhook.json": '{"sub_domain": "lookup", "script_to_run": "hook.py"}',
                "hook.py": "",
                "README.md": "# Lookup\n",
            },
        )
        with pytest.raises(Conflict, match="lookup is a cron deployment"):
            await platform.record(platform.upload(hook))

    drive(home, scenario)


def test_builds_abandoned_by_a_stopped_server_are_marked_failed(home: Path) -> None:
    async def scenario(platform: Platform) -> None:
        await platform.record(platform.upload(cron_folder(home), "weekly"))
        async with platform.sessions() as session, session.begin():
            deployment = await deployments.get(session, "weekly")
            await deployments.fail_stale_builds(session, deployment, utcnow() - timedelta(hours=1))
        assert await platform.state("weekly") == (None, {1: "building"})
        async with platform.sessions() as session, session.begin():
            deployment = await deployments.get(session, "weekly")
            await deployments.fail_stale_builds(session, deployment, utcnow() + timedelta(hours=1))
            version = await deployments.get_version(session, deployment, 1)
            assert version.status == "failed"
            assert "its server stopped while building" in version.build_log

    drive(home, scenario)


def test_stopping_the_deployer_leaves_no_version_building(home: Path) -> None:
    async def scenario(platform: Platform) -> None:
        version_id, _ = await platform.record(platform.upload(cron_folder(home), "weekly"))
        platform.deployer.build(version_id, "")
        await platform.deployer.stop()
        assert await platform.state("weekly") == (None, {1: "failed"})

    drive(home, scenario)


def test_a_failed_build_is_told_with_its_log_and_a_stopped_one_is_not(home: Path) -> None:
    told: list[tuple[str, int, str, bool, str]] = []

    async def on_failure(deployment: Deployment, version: DeploymentVersion, text: str) -> None:
        finished = version.finished_at is not None
        told.append((deployment.name, version.version, version.status, finished, text))

    async def scenario(platform: Platform) -> None:
        platform.deployer.on_failure = on_failure
        unbuildable = cron_folder(home, "unbuildable", **{"requirements.txt": "x==9"})
        await platform.deploy(unbuildable, "weekly")
        await platform.deploy(cron_folder(home), "weekly")
        version_id, _ = await platform.record(platform.upload(cron_folder(home), "weekly"))
        platform.deployer.build(version_id, "")
        await platform.deployer.stop()

    drive(home, scenario)
    [(name, number, status, finished, text)] = told
    assert (name, number, status, finished) == ("weekly", 1, "failed", True)
    assert "No matching distribution found for x==9" in text


# Deleting


def test_delete_removes_versions_runs_and_files_but_not_shared_bundles(home: Path) -> None:
    async def scenario(platform: Platform) -> None:
        weekly = cron_folder(home)
        twin = cron_folder(home, "twin")  # the same files: the same bundle
        await platform.deploy(weekly, "weekly")
        await platform.deploy(twin, "twin")
        (weekly / "more.py").write_text("")
        await platform.deploy(weekly, "weekly")
        async with platform.sessions() as session:
            deployment = await deployments.get(session, "weekly")
            history = await deployments.versions(session, deployment)  # newest first
            own, shared = (version.bundle_digest for version in history)
        run_id = await platform.add_run("weekly", "succeeded")
        platform.layout.run_dir(run_id).mkdir(parents=True)

        async with platform.sessions() as session, session.begin():
            deployment = await deployments.get(session, "weekly")
            removal = await deployments.delete_deployment(session, deployment)
        deployments.remove_files(platform.layout, removal)
        assert removal.run_ids == [run_id]
        assert not platform.layout.source("weekly", 1).parent.exists()
        assert not platform.layout.run_dir(run_id).exists()
        assert not platform.layout.bundle(own).exists()
        assert platform.layout.bundle(shared).exists()
        async with platform.sessions() as session:
            assert await deployments.find(session, "weekly") is None
            assert await session.get(Run, run_id) is None
        assert (await platform.state("twin"))[0] == 1

    drive(home, scenario)


def test_delete_is_refused_while_a_run_is_running(home: Path) -> None:
    async def scenario(platform: Platform) -> None:
        await platform.deploy(cron_folder(home), "weekly")
        run_id = await platform.add_run("weekly", "running")
        async with platform.sessions() as session, session.begin():
            deployment = await deployments.get(session, "weekly")
            with pytest.raises(Conflict, match=rf"1 run\(s\) in progress \({run_id}\).*cancel"):
                await deployments.delete_deployment(session, deployment)

    drive(home, scenario)
