"""The run worker, as a specification: real scripts run by a real worker on a real instance.

Each test opens an instance (SQLite) in a folder run users may pass, deploys a small
script straight into it (runs_support), queues runs and lets a `Worker` run them. When
the tests run as root, scripts run as their deployment's own user. Scripts that must be
caught mid-run wait for a file named `go` in their working folder, which the test writes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import stat
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from servicebay.core.errors import NotAuthenticated
from servicebay.core.identity import create_user
from servicebay.core.instance import Instance, init_instance
from servicebay.core.models import ApiKey, Deployment, Run, User, utcnow
from servicebay.core.settings import Settings
from servicebay.runtime import runs
from servicebay.runtime.alerts import Streak
from servicebay.runtime.layout import Layout
from servicebay.runtime.worker import (
    KEY_MARGIN_SECONDS,
    KILL_GRACE_SECONDS,
    Worker,
    deployment_uid,
    worker_identity,
)
from tests.runtime.isolation.harness import AS_ROOT, alive
from tests.runtime.runs_support import (
    ENVIRONMENT,
    Deployed,
    deploy_script,
    passable_home,
    until,
    wait_for_run,
)

OWNER = "owner@example.com"

WAIT_FOR_GO = """\
import os, time
while not os.path.exists("go"):
    time.sleep(0.02)
"""


@dataclass
class Bench:
    instance: Instance
    layout: Layout

    @property
    def sessions(self) -> Any:
        return self.instance.sessions

    async def deploy(self, script: str, **config: Any) -> Deployed:
        return await deploy_script(self.sessions, self.layout, owner=OWNER, script=script, **config)

    async def queue(self, deployed: Deployed, **options: Any) -> Run:
        async with self.sessions() as session, session.begin():
            deployment = await session.get(Deployment, deployed.id)
            options.setdefault("trigger", "manual")
            options.setdefault("actor", OWNER)
            return await runs.create_run(session, deployment, **options)

    async def runs_of(self, deployed: Deployed) -> list[Run]:
        async with self.sessions() as session:
            found = await session.scalars(
                select(Run).where(Run.deployment_id == deployed.id).order_by(Run.created_at)
            )
            return list(found)

    async def log_of(self, run_id: str) -> str:
        async with self.sessions() as session:
            return await runs.log_text(session, run_id)

    def go(self, run_id: str) -> None:
        """Let a script waiting for `go` finish."""
        (self.layout.run_dir(run_id) / "work" / "go").touch()

    async def started(self, run_id: str) -> Run:
        run = await wait_for_run(self.sessions, run_id, frozenset({"running"}))
        work = self.layout.run_dir(run_id) / "work"
        await until((work / "job.py").exists, "the run's folder")  # claimed, being staged
        return run


@asynccontextmanager
async def bench(home: Path, **settings: Any) -> AsyncIterator[Bench]:
    """An instance in `home` whose first admin is OWNER."""
    chosen = Settings(
        home=home,
        database_url=f"sqlite:///{home / 'servicebay.db'}",
        master_key=None,
        **settings,
    )
    await init_instance(chosen, admin_email=OWNER, admin_name="Owner")
    instance = await Instance.open(chosen)
    try:
        yield Bench(instance, Layout(home))
    finally:
        await instance.close()


@asynccontextmanager
async def working(bench: Bench, **options: Any) -> AsyncIterator[Worker]:
    worker = Worker(bench.instance, poll_seconds=0.1, **options)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


@pytest.fixture
def home() -> Any:
    folder = passable_home()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def scenario(home: Path, test: Callable[[Bench], Awaitable[None]], **settings: Any) -> None:
    async def run() -> None:
        async with bench(home, **settings) as opened:
            await test(opened)

    asyncio.run(run())


# --- what a script sees ---------------------------------------------------------------------


def test_a_script_sees_exactly_the_documented_environment_as_its_own_user(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    canaries = {"SALESFORCE_API_KEY": "canary-salesforce", "AWS_SECRET": "canary-aws"}
    for name, value in canaries.items():
        monkeypatch.setenv(name, value)
    script = """\
import json, os
env = dict(os.environ)
env["INTERNAL_API_KEY"] = env["INTERNAL_API_KEY"][:4]
with open(env["BAY_RUN_INPUT"]) as given:
        given = json.load(given)
print(json.dumps({"env": env, "uid": os.getuid(), "cwd": os.getcwd(), "input": given}))
"""

    async def test(bench: Bench) -> None:
        deployed = await bench.deploy(script, env={"REPORT_CHANNEL": "#sales"})
        async with working(bench):
            run = await bench.queue(deployed, input={"day": "2026-11-27", "limit": 3})
            done = await wait_for_run(bench.sessions, run.id)
        assert (done.status, done.exit_code, done.reason) == ("succeeded", 0, "exited with code 0")
        log = await bench.log_of(run.id)
        seen = json.loads(
            next(line for line in log.splitlines() if " stdout {" in line).split(" stdout ", 1)[1]
        )
        env = seen["env"]
        assert set(env) == {
            "INTERNAL_API_KEY", "BAY_URL", "BAY_RUN_ID", "BAY_OUTPUT_DIR", "BAY_RUN_INPUT",
            "PYTHONPATH", "PATH", "LANG", "HOME", "TMPDIR", "PYTHONUNBUFFERED", "REPORT_CHANNEL",
        }  # fmt: skip
        assert env["INTERNAL_API_KEY"] == "bay_"
        assert env["BAY_URL"] == bench.instance.settings.base_url
        assert env["BAY_RUN_ID"] == run.id
        assert env["BAY_OUTPUT_DIR"] == str(bench.layout.artifacts(run.id))
        assert env["PYTHONPATH"] == str(bench.layout.sdk)
        assert env["PATH"].startswith(f"{bench.layout.environment(ENVIRONMENT)}/bin:")
        assert env["REPORT_CHANNEL"] == "#sales"
        assert seen["input"] == {"day": "2026-11-27", "limit": 3}
        assert seen["cwd"] == str(bench.layout.run_dir(run.id) / "work")
        if AS_ROOT:
            assert seen["uid"] == deployment_uid(deployed.id) != 0
        assert not any(value in log for value in canaries.values())

    scenario(home, test)


def test_a_script_imports_the_sdk_and_its_run_folder_is_private(home: Path) -> None:
    script = """\
import os, stat
from servicebay import Client
from internal_sdk import webhook_response
client = Client()
print("sdk from", Client.__module__, "mode", oct(stat.S_IMODE(os.stat("..").st_mode)))
"""

    async def test(bench: Bench) -> None:
        deployed = await bench.deploy(script)
        async with working(bench):
            run = await bench.queue(deployed)
            done = await wait_for_run(bench.sessions, run.id)
        log = await bench.log_of(run.id)
        assert done.status == "succeeded", log
        assert "sdk from servicebay.sdk.client mode 0o700" in log
        assert "BAY_RUN_INPUT" not in log  # a run without input has no input file
        assert not (bench.layout.run_dir(run.id) / "work").exists()  # the copy is gone

    scenario(home, test)


def test_queued_runs_fork_from_their_deployments_warm_interpreter(home: Path) -> None:
    """A trivial run costs a fork, not an interpreter's start: both runs' parent is the
    deployment's zygote, which is neither the platform nor gone between runs."""
    script = "import os\nprint('parent', os.getppid())\n"

    async def test(bench: Bench) -> None:
        deployed = await bench.deploy(script)
        async with working(bench) as worker:
            parents = []
            for _ in range(2):
                run = await bench.queue(deployed)
                done = await wait_for_run(bench.sessions, run.id)
                log = await bench.log_of(run.id)
                assert done.status == "succeeded", log
                parents.append(int(re.findall(r"parent (\d+)", log)[0]))
            zygote = worker.zygotes.pid(deployed.id)
        assert parents == [zygote, zygote]
        assert zygote != os.getpid()

    scenario(home, test)


def test_a_webhook_run_reads_its_call_and_answers_through_the_sdk_files(home: Path) -> None:
    script = """\
from servicebay.webhook import request, webhook_response
print("called:", request.method, request.path, request.args, request.json())
webhook_response.send_response({"ok": True}, status_code=201)
print("answered")
"""
    call = {
        "method": "POST",
        "path": "/orders",
        "query": [["source", "shop"]],
        "headers": [["content-type", "application/json"]],
        "body_base64": base64.b64encode(b'{"order": 7}').decode(),
    }

    async def test(bench: Bench) -> None:
        deployed = await bench.deploy(script, kind="webhook")
        async with working(bench):
            run = await bench.queue(deployed, trigger="webhook", actor=None, input=call)
            done = await wait_for_run(bench.sessions, run.id)
        log = await bench.log_of(run.id)
        assert done.status == "succeeded", log
        assert "stdout called: POST /orders {'source': 'shop'} {'order': 7}" in log
        assert "stdout answered" in log
        assert sorted(path.name for path in bench.layout.run_dir(run.id).iterdir()) == ["output"]

    scenario(home, test)


def test_the_run_key_acts_as_the_owner_during_the_run_and_is_revoked_after(home: Path) -> None:
    script = (
        "import os\n"
        "with open(os.path.join(os.environ['BAY_OUTPUT_DIR'], 'key.txt'), 'w') as out:\n"
        "    out.write(os.environ['INTERNAL_API_KEY'])\n" + WAIT_FOR_GO
    )

    async def test(bench: Bench) -> None:
        deployed = await bench.deploy(script, timeout_seconds=120)
        authenticator = bench.instance.authenticator
        async with working(bench):
            run = await bench.queue(deployed)
            await bench.started(run.id)
            key_file = bench.layout.artifacts(run.id) / "key.txt"
            await until(lambda: key_file.exists() and bool(key_file.read_text()), "the key")
            secret = key_file.read_text()
            assert (await authenticator.authenticate(secret)).email == OWNER
            async with bench.sessions() as session:
                key = await session.scalar(select(ApiKey).where(ApiKey.name == f"run:{run.id}"))
            assert key is not None
            assert key.expires_at is not None
            lifetime = (key.expires_at - key.created_at).total_seconds()
            assert int(lifetime) == 120 + KILL_GRACE_SECONDS + KEY_MARGIN_SECONDS

            bench.go(run.id)
            await wait_for_run(bench.sessions, run.id)
        with pytest.raises(NotAuthenticated, match="revoked"):
            await authenticator.authenticate(secret)

    scenario(home, test)


def test_a_disabled_owner_gets_no_key_and_the_run_fails_saying_so(home: Path) -> None:
    async def test(bench: Bench) -> None:
        async with bench.sessions() as session, session.begin():
            await create_user(
                session, email="leaver@example.com", name="Leaver", teams=[], admin=False
            )
        deployed = await deploy_script(
            bench.sessions, bench.layout, owner="leaver@example.com", script="print('hi')"
        )
        async with bench.sessions() as session, session.begin():
            await session.execute(
                update(User).where(User.email == "leaver@example.com").values(disabled=True)
            )
        async with working(bench):
            run = await bench.queue(deployed)
            done = await wait_for_run(bench.sessions, run.id)
        assert done.status == "failed"
        assert "leaver@example.com is disabled" in (done.reason or "")
        assert "hi" not in await bench.log_of(run.id)

    scenario(home, test)


def test_a_version_whose_environment_is_gone_fails_saying_how_to_fix_it(home: Path) -> None:
    async def test(bench: Bench) -> None:
        deployed = await bench.deploy("print('hi')")
        shutil.rmtree(bench.layout.environment(ENVIRONMENT))
        async with working(bench):
            run = await bench.queue(deployed)
            done = await wait_for_run(bench.sessions, run.id)
        assert done.status == "failed"
        assert "environment of version 1 is missing" in (done.reason or "")
        assert "deploy again" in (done.reason or "")

    scenario(home, test)


# --- endings ---------------------------------------------------------------------------------


def test_a_run_past_its_timeout_is_timed_out_and_its_whole_process_group_is_gone(
    home: Path,
) -> None:
    script = """\
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print("child", child.pid, flush=True)
time.sleep(600)
"""

    async def test(bench: Bench) -> None:
        deployed = await bench.deploy(script, timeout_seconds=1)
        async with working(bench):
            run = await bench.queue(deployed)
            done = await wait_for_run(bench.sessions, run.id)
        log = await bench.log_of(run.id)
        assert done.status == "timed_out", log
        ending = r"timed out after 1\.\d s \(killed by SIG(TERM|KILL)\)"
        assert re.fullmatch(ending, done.reason or "")
        assert "sending SIGTERM" in log
        child = int(next(line for line in log.splitlines() if " stdout child " in line).split()[-1])
        assert not alive(child)

    scenario(home, test)


def test_a_script_over_its_memory_limit_fails(home: Path) -> None:
    script = "blob = bytearray(300 * 1024 * 1024)\nprint('allocated')\n"

    async def test(bench: Bench) -> None:
        deployed = await bench.deploy(script, memory_mb=64)
        async with working(bench):
            run = await bench.queue(deployed)
            done = await wait_for_run(bench.sessions, run.id)
        log = await bench.log_of(run.id)
        assert (done.status, done.exit_code) == ("failed", 1)
        assert "MemoryError" in log
        assert "allocated" not in log

    scenario(home, test)


def test_a_failed_run_is_retried_with_backoff_until_its_retries_are_spent(home: Path) -> None:
    script = "import os, sys\nprint('attempt of', os.environ['BAY_RUN_ID'])\nsys.exit(3)\n"
    finished: list[str] = []

    async def heard(deployment: Deployment, run: Run, streak: Streak | None) -> None:
        finished.append(f"{deployment.name} {run.trigger} {run.attempt} {run.status} {streak}")

    async def test(bench: Bench) -> None:
        deployed = await bench.deploy(script, retries=2, retry_backoff_seconds=1)
        async with working(bench, on_finished=heard):
            first = await bench.queue(deployed, input={"n": 1})
            await until(lambda: len(finished) == 3, "three attempts")
        attempts = await bench.runs_of(deployed)
        assert [(run.trigger, run.attempt, run.status) for run in attempts] == [
            ("manual", 1, "failed"),
            ("retry", 2, "failed"),
            ("retry", 3, "failed"),
        ]
        assert all(run.exit_code == 3 and run.input == {"n": 1} for run in attempts)
        assert attempts[0].id == first.id
        for earlier, later, backoff in zip(attempts, attempts[1:], (1, 2), strict=False):
            assert earlier.finished_at is not None
            assert later.not_before is not None
            assert later.not_before >= earlier.finished_at + timedelta(seconds=backoff)
            assert later.started_at is not None
            assert later.started_at >= later.not_before
        assert finished == [  # only the attempt that is not retried starts a failure streak
            f"{deployed.name} manual 1 failed None",
            f"{deployed.name} retry 2 failed None",
            f"{deployed.name} retry 3 failed run.failing",
        ]

    scenario(home, test)


def test_an_ending_starts_or_ends_its_deployments_failure_streak(home: Path) -> None:
    script = "import json, os, sys\nsys.exit(json.load(open(os.environ['BAY_RUN_INPUT']))['exit'])"
    heard: list[tuple[str, Streak | None]] = []

    async def tell(_: Deployment, run: Run, streak: Streak | None) -> None:
        heard.append((run.status, streak))

    async def test(bench: Bench) -> None:
        deployed = await bench.deploy(script)
        async with working(bench, on_finished=tell):
            for number, code in enumerate((1, 1, 0, 0), start=1):
                await bench.queue(deployed, input={"exit": code})
                await until(lambda number=number: len(heard) == number, f"ending {number}")
        assert heard == [
            ("failed", "run.failing"),
            ("failed", None),  # the streak goes on: no second alert
            ("succeeded", "run.recovered"),
            ("succeeded", None),
        ]
        async with bench.sessions() as session:
            deployment = await session.get(Deployment, deployed.id)
        assert deployment is not None
        assert deployment.failing is False

    scenario(home, test)


def test_a_retry_waiting_out_its_backoff_survives_a_restart_of_its_worker(home: Path) -> None:
    script = "import sys\nsys.exit(3)\n"

    async def test(bench: Bench) -> None:
        deployed = await bench.deploy(script, retries=1, retry_backoff_seconds=2)
        async with working(bench):
            await bench.queue(deployed)
            waiting: list[Run] = []
            for _ in range(500):  # queued just after the failure is recorded
                waiting = [run for run in await bench.runs_of(deployed) if run.trigger == "retry"]
                if waiting:
                    break
                await asyncio.sleep(0.02)
        assert [run.status for run in waiting] == ["queued"]  # its worker stopped meanwhile
        async with working(bench):
            retried = await wait_for_run(bench.sessions, waiting[0].id)
        assert (retried.status, retried.attempt, retried.exit_code) == ("failed", 2, 3)
        assert retried.started_at is not None
        assert waiting[0].not_before is not None
        assert retried.started_at >= waiting[0].not_before

    scenario(home, test)


def test_a_queued_run_is_cancelled_at_once_and_a_running_one_within_a_second(home: Path) -> None:
    async def test(bench: Bench) -> None:
        deployed = await bench.deploy(WAIT_FOR_GO, timeout_seconds=300)
        waiting = await bench.queue(deployed)
        async with bench.sessions() as session, session.begin():
            run = await session.get(Run, waiting.id)
            cancelled = await runs.request_cancel(session, run, "ann@example.com")
        assert cancelled.status == "cancelled"
        assert cancelled.reason == "cancelled by ann@example.com before it started"

        async with working(bench):
            running = await bench.queue(deployed)
            await bench.started(running.id)
            async with bench.sessions() as session, session.begin():
                run = await session.get(Run, running.id)
                flagged = await runs.request_cancel(session, run, OWNER)
            assert (flagged.status, flagged.cancel_requested) == ("running", True)
            done = await wait_for_run(bench.sessions, running.id)
        assert done.status == "cancelled"
        assert done.reason == "cancelled (killed by SIGTERM)"
        assert (await bench.runs_of(deployed))[0].started_at is None  # never ran

    scenario(home, test)


def test_stopping_the_worker_ends_its_runs_as_failed(home: Path) -> None:
    async def test(bench: Bench) -> None:
        deployed = await bench.deploy(WAIT_FOR_GO, timeout_seconds=300, retries=3)
        async with working(bench):
            run = await bench.queue(deployed)
            await bench.started(run.id)
        done = await wait_for_run(bench.sessions, run.id, within=0)
        assert done.status == "failed"
        assert (done.reason or "").startswith("the worker node shut down during the run")
        assert len(await bench.runs_of(deployed)) == 1  # not retried: nobody is left to

    scenario(home, test)


def test_no_more_runs_than_settings_workers_run_at_once(home: Path) -> None:
    async def test(bench: Bench) -> None:
        deployed = await bench.deploy(WAIT_FOR_GO, concurrency="allow")
        async with working(bench):
            queued = [await bench.queue(deployed) for _ in range(3)]
            first, _second = [await bench.started(run.id) for run in queued[:2]]
            async with bench.sessions() as session:
                third = await session.get(Run, queued[2].id)
            assert third is not None
            assert third.status == "queued"
            bench.go(first.id)
            await bench.started(queued[2].id)
            for run in queued[1:]:
                bench.go(run.id)
            done = [await wait_for_run(bench.sessions, run.id) for run in queued]
        assert [run.status for run in done] == ["succeeded"] * 3

    scenario(home, test, workers=2)


# --- logs and artifacts ----------------------------------------------------------------------


def test_logs_are_stored_in_chunks_that_a_reader_follows_while_the_run_goes(home: Path) -> None:
    script = "print('first line')\n" + WAIT_FOR_GO + "print('second line')\n"

    async def test(bench: Bench) -> None:
        deployed = await bench.deploy(script)
        async with working(bench):
            run = await bench.queue(deployed)
            await bench.started(run.id)
            while True:
                async with bench.sessions() as session:
                    current = await session.get(Run, run.id)
                    early = await runs.read_log(session, current, after=None)
                if "first line" in "".join(chunk.text for chunk in early.chunks):
                    break
                await asyncio.sleep(0.05)
            assert not early.done
            bench.go(run.id)
            await wait_for_run(bench.sessions, run.id)
            async with bench.sessions() as session:
                current = await session.get(Run, run.id)
                rest = await runs.read_log(session, current, after=early.chunks[-1].id)
        assert rest.done
        later = "".join(chunk.text for chunk in rest.chunks)
        assert "second line" in later
        assert "first line" not in later
        fields = [line.split(" ", 2) for line in (await bench.log_of(run.id)).splitlines()]
        assert [text for _, stream, text in fields if stream == "stdout"] == [
            "first line",
            "second line",
        ]

    scenario(home, test)


def test_a_log_over_the_cap_is_cut_with_a_note(home: Path) -> None:
    script = "for n in range(5000):\n    print('line', n, 'x' * 40)\n"

    async def test(bench: Bench) -> None:
        deployed = await bench.deploy(script)
        async with working(bench):
            run = await bench.queue(deployed)
            done = await wait_for_run(bench.sessions, run.id)
        log = await bench.log_of(run.id)
        assert done.status == "succeeded"
        assert done.log_truncated
        assert done.log_bytes <= 8192
        assert "log truncated: " in log
        assert "line 4999" not in log

    scenario(home, test, run_log_max_bytes=8192)


def test_artifacts_are_the_regular_files_a_script_leaves_in_its_output_folder(home: Path) -> None:
    script = """\
import os
out = os.environ["BAY_OUTPUT_DIR"]
os.makedirs(os.path.join(out, "charts"))
with open(os.path.join(out, "report.csv"), "w") as f:
    f.write("day,users\\n2026-11-27,2\\n")
with open(os.path.join(out, "charts", "week.txt"), "w") as f:
    f.write("chart")
os.symlink("/etc/passwd", os.path.join(out, "passwd"))
os.symlink(os.path.join(out, "charts"), os.path.join(out, "linked"))
os.mkfifo(os.path.join(out, "pipe"))
"""

    async def test(bench: Bench) -> None:
        deployed = await bench.deploy(script)
        async with working(bench):
            run = await bench.queue(deployed)
            done = await wait_for_run(bench.sessions, run.id)
        log = await bench.log_of(run.id)
        assert done.status == "succeeded", log
        found = runs.list_artifacts(bench.layout, run.id)
        assert found == [
            runs.Artifact("charts/week.txt", 5),
            runs.Artifact("report.csv", 23),
        ]
        handle, size = runs.open_artifact(bench.layout, run.id, "report.csv")
        with handle:
            assert (handle.read(), size) == (b"day,users\n2026-11-27,2\n", 23)
        assert "not kept as artifacts (not regular files): " in log
        for dropped in ("passwd", "linked", "pipe"):
            assert dropped in log
        output = bench.layout.artifacts(run.id)
        info = output.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (os.geteuid(), 0o700)

    scenario(home, test)


# --- a worker that died ----------------------------------------------------------------------


def test_runs_left_running_by_a_dead_worker_of_this_host_are_failed_at_start(home: Path) -> None:
    finished: list[Run] = []

    async def heard(_: Deployment, run: Run, streak: Streak | None) -> None:
        assert streak == "run.failing"
        finished.append(run)

    async def test(bench: Bench) -> None:
        deployed = await bench.deploy("print('hi')")
        gone = subprocess.Popen(["true"])  # noqa: ASYNC220 - not reaped until its id is read
        dead_worker = worker_identity(gone.pid)
        gone.wait()
        alive_elsewhere = "another-host:1:1"
        orphan, other = await bench.queue(deployed), await bench.queue(deployed)
        async with bench.sessions() as session, session.begin():
            for run, worker in ((orphan, dead_worker), (other, alive_elsewhere)):
                await session.execute(
                    update(Run)
                    .where(Run.id == run.id)
                    .values(status="running", worker=worker, started_at=utcnow())
                )
            owner = await session.scalar(select(User).where(User.email == OWNER))
            session.add(ApiKey(id="key_orphan", user_id=owner.id, name=f"run:{orphan.id}",
                               prefix="bay_x", key_hash="0" * 64))  # fmt: skip
        async with working(bench, on_finished=heard):
            failed = await wait_for_run(bench.sessions, orphan.id)
        assert failed.status == "failed"
        assert failed.reason == f"its worker {dead_worker} stopped before the run ended " \
            "(crash or restart)"  # fmt: skip
        assert [run.id for run in finished] == [orphan.id]
        async with bench.sessions() as session:
            assert (await session.get(Run, other.id)).status == "running"  # its host may live
            assert (await session.get(ApiKey, "key_orphan")).revoked_at is not None

    scenario(home, test)
