"""The supervisor, in process, over a real instance: server processes started as their
deployment's user with exactly the documented environment, a replaced process kept until
the requests it serves are answered, and a server that cannot start declared a crash loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from servicebay.core.instance import Instance, init_instance
from servicebay.core.models import Deployment, DeploymentVersion, User, new_id, utcnow
from servicebay.core.settings import Settings
from servicebay.runtime.builder import Builder
from servicebay.runtime.config import ServerConfig
from servicebay.runtime.layout import Layout
from servicebay.runtime.supervisor import Routes, ServerLog, Supervisor, build_version, read_log
from servicebay.runtime.worker import deployment_uid
from servicebay.sdk.identity import IdentityError, sign_identity, verify_identity
from tests.runtime.runs_support import ENVIRONMENT, ensure_environment, passable_home, until

OWNER = "owner@example.com"
SERVER = """\
import functools, http.server, json, os
os.makedirs("www", exist_ok=True)
with open("www/seen.json", "w") as seen:
    json.dump({"env": dict(os.environ), "uid": os.getuid(), "pid": os.getpid(),
               "built": open("built.txt").read()}, seen)
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory="www")
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), handler).serve_forever()
"""


@pytest.fixture
def home() -> Iterator[Path]:
    folder = passable_home()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@asynccontextmanager
async def opened(home: Path) -> AsyncIterator[Instance]:
    settings = Settings(
        home=home,
        database_url=f"sqlite:///{home / 'servicebay.db'}",
        master_key=None,
        auth_cache_seconds=0.5,
    )
    await init_instance(settings, admin_email=OWNER, admin_name="Owner")
    instance = await Instance.open(settings)
    try:
        yield instance
    finally:
        await instance.close()


async def add_version(
    instance: Instance, name: str, number: int, files: dict[str, str], **config: Any
) -> str:
    """Version `number` of server `name` as a deploy leaves it (built, ready, active)."""
    layout = Layout(instance.settings.home)
    source = layout.source(name, number)
    source.mkdir(parents=True)
    for file, text in {"README.md": f"# {name}\n", **files}.items():
        (source / file).write_text(text)
    environment = ensure_environment(layout)
    parsed = ServerConfig.model_validate({"sub_domain": name, **config})
    async with instance.sessions() as session, session.begin():
        deployment = await session.scalar(select(Deployment).where(Deployment.name == name))
        if deployment is None:
            owner = await session.scalar(select(User).where(User.email == OWNER))
            assert owner is not None
            deployment = Deployment(id=new_id("dep"), name=name, kind="server", owner_id=owner.id)
            session.add(deployment)
            await session.flush()
        version = DeploymentVersion(
            id=new_id("ver"),
            deployment_id=deployment.id,
            version=number,
            config=parsed.model_dump(mode="json"),
            bundle_digest="0" * 64,
            requirements_digest=ENVIRONMENT,
            status="ready",
            build_log="",
            created_by=OWNER,
            finished_at=utcnow(),
        )
        session.add(version)
    lines: list[str] = []

    async def keep(line: str) -> None:
        lines.append(line)

    builder = Builder(layout, uid=None, environ={})
    await build_version(layout, builder, deployment, version, environment, keep)
    async with instance.sessions() as session, session.begin():
        await session.execute(
            update(Deployment).where(Deployment.id == deployment.id).values(active_version=number)
        )
    return deployment.id


async def serving(routes: Routes, name: str, version: int) -> str:
    await until(
        lambda: (found := routes.get(name)) is not None and found.version == version,
        f"{name} version {version} to serve",
    )
    upstream = routes.get(name)
    assert upstream is not None
    return upstream.address


async def seen_by(address: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"http://{address}/seen.json")
    assert answer.status_code == 200
    seen: dict[str, Any] = answer.json()
    return seen


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")


def test_a_server_runs_as_its_user_with_exactly_the_documented_environment(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SALESFORCE_API_KEY", "canary-salesforce")

    async def scenario() -> None:
        async with opened(home) as instance:
            deployment_id = await add_version(
                instance,
                "site",
                1,
                {"server.py": SERVER},
                start_command="python server.py",
                build_command="echo built > built.txt",
                health_path="/seen.json",
                env={"REPORT_CHANNEL": "#sales"},
            )
            supervisor = Supervisor(instance, poll_seconds=0.1)
            await supervisor.start()
            try:
                seen = await seen_by(await serving(supervisor.routes, "site", 1))
            finally:
                await supervisor.stop()
            assert not alive(seen["pid"])
        env = seen["env"]
        assert set(env) - {"PWD", "SHLVL", "_"} == {
            "PATH", "LANG", "HOME", "TMPDIR", "PYTHONUNBUFFERED", "PYTHONPATH", "PORT",
            "BAY_URL", "BAY_APP_PREFIX", "BAY_IDENTITY_KEY", "INTERNAL_API_KEY", "REPORT_CHANNEL",
        }  # fmt: skip
        assert env["BAY_APP_PREFIX"] == "/apps/site"
        assert env["BAY_IDENTITY_KEY"] == instance.master_key.identity_key("site")
        assert instance.master_key.encode().rstrip("=") not in json.dumps(env)
        assert seen["built"] == "built\n"  # the build command ran in the server's folder
        expected_uid = deployment_uid(deployment_id)
        assert seen["uid"] == (os.getuid() if expected_uid is None else expected_uid)

    asyncio.run(scenario())


def test_a_replaced_process_answers_what_it_serves_before_it_stops(home: Path) -> None:
    async def scenario() -> None:
        async with opened(home) as instance:
            files = {"server.py": SERVER, "built.txt": "by hand\n"}
            settings = {"start_command": "python server.py", "health_path": "/seen.json"}
            await add_version(instance, "site", 1, files, **settings)
            supervisor = Supervisor(instance, poll_seconds=0.1)
            await supervisor.start()
            try:
                first = await seen_by(await serving(supervisor.routes, "site", 1))
                old = supervisor.routes.get("site")
                assert old is not None
                with supervisor.routes.lease(old):  # a request in flight to version 1
                    await add_version(instance, "site", 2, files, **settings)
                    supervisor.wake()
                    second = await seen_by(await serving(supervisor.routes, "site", 2))
                    await asyncio.sleep(1.0)  # past the handover wait: only the lease holds it
                    assert alive(first["pid"])
                await until(lambda: not alive(first["pid"]), "version 1 to stop")
                assert alive(second["pid"])
            finally:
                await supervisor.stop()

    asyncio.run(scenario())


def test_a_server_that_cannot_start_is_a_crash_loop_told_once(home: Path) -> None:
    async def scenario() -> None:
        async with opened(home) as instance:
            await add_version(
                instance, "broken", 1, {"crash.py": "raise SystemExit('no database')\n"},
                start_command="python crash.py",
            )  # fmt: skip
            told: list[tuple[str, int, str, tuple[str, ...]]] = []

            async def on_crash_loop(
                deployment: Deployment, version: int, reason: str, tail: tuple[str, ...]
            ) -> None:
                told.append((deployment.name, version, reason, tail))

            supervisor = Supervisor(instance, poll_seconds=0.1, on_crash_loop=on_crash_loop)
            await supervisor.start()
            try:
                await until(lambda: bool(told), "the crash loop", within=90)
                async with instance.sessions() as session:
                    row = await session.scalar(
                        select(Deployment).where(Deployment.name == "broken")
                    )
                assert row is not None
                assert row.server_state == "crash_looping"
                assert "failed to start 3 times in a row" in (row.server_reason or "")
                assert supervisor.routes.get("broken") is None
            finally:
                await supervisor.stop()
        [(name, version, reason, tail)] = told
        assert (name, version) == ("broken", 1)
        assert "exited with code 1" in reason
        assert any("no database" in line for line in tail)

    asyncio.run(scenario())


def test_each_server_gets_an_identity_key_of_its_own_derived_from_the_master_key(
    home: Path,
) -> None:
    async def scenario() -> None:
        async with opened(home) as instance:
            key = instance.master_key.identity_key("site").encode()
            assert key == instance.master_key.identity_key("site").encode()  # every node's
            assert key.decode() != instance.master_key.encode().rstrip("=")
            other = instance.master_key.identity_key("other").encode()
            assert other != key
            header = sign_identity(key, user=OWNER, teams=["ops"], request_id="r1", service="site")
            assert verify_identity(header, key, service="site").teams == ("ops",)
            # A server knows only its own key: what it signs, another server refuses, even
            # when it names that server (called on its port directly, past the gateway).
            forged = sign_identity(
                key, user="boss@corp", teams=[], request_id="r2", service="other"
            )
            with pytest.raises(IdentityError):
                verify_identity(forged, other, service="other")

    asyncio.run(scenario())


SICKLY = """\
import http.server, os


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(500 if os.path.exists("sick") else 200)
        self.end_headers()
        self.wfile.write(str(os.getpid()).encode())


http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Health).serve_forever()
"""


def test_a_server_that_stops_answering_its_health_checks_is_restarted(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("servicebay.runtime.supervisor.HEALTH_INTERVAL_SECONDS", 0.1)

    async def scenario() -> None:
        async with opened(home) as instance:
            await add_version(
                instance, "sickly", 1, {"server.py": SICKLY}, start_command="python server.py"
            )
            supervisor = Supervisor(instance, poll_seconds=0.1)
            await supervisor.start()
            try:
                address = await serving(supervisor.routes, "sickly", 1)
                sick_one = supervisor.routes.get("sickly")
                async with httpx.AsyncClient() as client:
                    first = int((await client.get(f"http://{address}/")).text)
                sick = Layout(home).server_dir("sickly", 1) / "sick"
                sick.touch()
                await until(lambda: not alive(first), "the sick process to be stopped")
                await until(lambda: supervisor.routes.get("sickly") is not sick_one, "no route")
                sick.unlink()
                address = await serving(supervisor.routes, "sickly", 1)
                async with httpx.AsyncClient() as client:
                    assert int((await client.get(f"http://{address}/")).text) != first
                async with instance.sessions() as session:
                    row = await session.scalar(
                        select(Deployment).where(Deployment.name == "sickly")
                    )
                assert row is not None
                assert row.server_restarts >= 1
            finally:
                await supervisor.stop()

    asyncio.run(scenario())


def test_a_servers_log_keeps_its_newest_lines_within_the_limit(home: Path) -> None:
    async def scenario() -> None:
        async with opened(home) as instance:
            deployment_id = await add_version(
                instance, "chatty", 1, {"built.txt": "\n"}, start_command="true"
            )
            logs = ServerLog(instance.sessions, deployment_id, limit_bytes=400)
            for number in range(20):
                await logs.note(f"line {number:02d}")
                await logs.flush()
            await logs.close()
            async with instance.sessions() as session:
                deployment = await session.get(Deployment, deployment_id)
                assert deployment is not None
                chunks = await read_log(session, deployment, after=None, limit=None)
        text = "".join(chunk.text for chunk in chunks)
        assert len(text) <= 400
        assert "line 19" in text
        assert "line 00" not in text
        assert [chunk.id for chunk in chunks] == sorted(chunk.id for chunk in chunks)

    asyncio.run(scenario())


def test_a_new_version_that_cannot_start_leaves_the_old_one_serving(home: Path) -> None:
    async def scenario() -> None:
        async with opened(home) as instance:
            files = {"server.py": SERVER, "built.txt": "by hand\n"}
            await add_version(
                instance, "steady", 1, files,
                start_command="python server.py", health_path="/seen.json",
            )  # fmt: skip
            told: list[str] = []

            async def on_crash_loop(
                deployment: Deployment, version: int, reason: str, tail: tuple[str, ...]
            ) -> None:
                told.append(reason)

            supervisor = Supervisor(instance, poll_seconds=0.1, on_crash_loop=on_crash_loop)
            await supervisor.start()
            try:
                first = await seen_by(await serving(supervisor.routes, "steady", 1))
                await add_version(
                    instance, "steady", 2, {"crash.py": "raise SystemExit(5)\n"},
                    start_command="python crash.py",
                )  # fmt: skip
                supervisor.wake()
                await until(lambda: bool(told), "the new version's crash loop", within=90)
                assert "version 1 still serves" in told[0]
                assert await seen_by(await serving(supervisor.routes, "steady", 1)) == first
                os.kill(first["pid"], signal.SIGKILL)  # and now the old one dies too
                await until(lambda: supervisor.routes.get("steady") is None, "the route gone")
            finally:
                await supervisor.stop()

    asyncio.run(scenario())


def test_a_static_version_is_routed_to_its_folder_and_replaces_a_process(home: Path) -> None:
    """Program, then static site, then program again: each switch is one route change,
    a static version runs nothing, and the process it replaced is stopped."""

    async def scenario() -> None:
        async with opened(home) as instance:
            files = {"server.py": SERVER, "built.txt": "by hand\n"}
            program = {"start_command": "python server.py", "health_path": "/seen.json"}
            build = "mkdir -p www && echo built > www/index.html"
            await add_version(instance, "site", 1, files, **program)
            supervisor = Supervisor(instance, poll_seconds=0.1)
            await supervisor.start()
            try:
                first = await seen_by(await serving(supervisor.routes, "site", 1))
                deployment_id = await add_version(
                    instance, "site", 2, {}, static="www", build_command=build
                )
                supervisor.wake()
                await serving(supervisor.routes, "site", 2)
                static = supervisor.routes.get("site")
                assert static is not None
                assert static.folder is not None
                layout = Layout(instance.settings.home)
                assert static.folder == (layout.server_dir("site", 2) / "www").resolve()
                assert (static.folder / "index.html").read_text() == "built\n"
                await until(lambda: not alive(first["pid"]), "the replaced process to stop")
                async with instance.sessions() as session:
                    row = await session.get(Deployment, deployment_id)
                    assert row is not None
                    assert (row.server_state, row.server_version) == ("running", 2)
                    assert (row.server_pid, row.server_address) == (None, None)
                await add_version(instance, "site", 3, files, **program)
                supervisor.wake()
                third = await seen_by(await serving(supervisor.routes, "site", 3))
                assert alive(third["pid"])
                back = supervisor.routes.get("site")
                assert back is not None
                assert back.folder is None
            finally:
                await supervisor.stop()

    asyncio.run(scenario())
