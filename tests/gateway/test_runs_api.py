"""Runs over HTTP, against real `bay serve` nodes whose workers run real scripts.

Deployments are made directly in the node's instance (tests/runtime/runs_support), as a
deploy leaves them; everything else goes through the API as a client would.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from servicebay.core.db import create_engine, session_factory
from servicebay.runtime.bundle import build_bundle
from servicebay.runtime.layout import Layout
from tests.conftest import Server
from tests.runtime.runs_support import Deployed, deploy_script, passable_home

FINAL = {"succeeded", "failed", "timed_out", "cancelled", "skipped"}

CALLS_ME = """\
import json, os, urllib.request
asked = urllib.request.Request(
    os.environ["BAY_URL"] + "/api/v1/me",
    headers={"Authorization": "Bearer " + os.environ["INTERNAL_API_KEY"]},
)
with urllib.request.urlopen(asked) as answer:
    print("me:", json.load(answer)["email"])
with open(os.path.join(os.environ["BAY_OUTPUT_DIR"], "key.txt"), "w") as out:
    out.write(os.environ["INTERNAL_API_KEY"])
"""

WAITS = """\
import os, time
print("pid", os.getpid(), flush=True)
while not os.path.exists("go"):
    time.sleep(0.02)
print("went")
"""


def deploy(node: Server, owner: str, script: str, **config: Any) -> Deployed:
    """Deploy `script` into `node`'s instance as `owner`'s (directly, as a deploy would)."""
    url = node.env.get("BAY_DATABASE_URL") or f"sqlite:///{node.home / 'servicebay.db'}"

    async def go() -> Deployed:
        engine = create_engine(url)
        try:
            return await deploy_script(
                session_factory(engine), Layout(node.home), owner=owner, script=script, **config
            )
        finally:
            await engine.dispose()

    return asyncio.run(go())


def finished(client: httpx.Client, run_id: str, *, within: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        run = client.get(f"/api/v1/runs/{run_id}").json()
        if run["status"] in FINAL:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']}"
        time.sleep(0.05)


def running(client: httpx.Client, node: Server, run_id: str) -> None:
    """Wait until the run's script is under way (its copy of the source is in place)."""
    work = Layout(node.home).run_dir(run_id) / "work"
    deadline = time.monotonic() + 60
    while (
        not (work / "job.py").exists()
        or client.get(f"/api/v1/runs/{run_id}").json()["status"] != "running"
    ):
        assert time.monotonic() < deadline, f"run {run_id} never started"
        time.sleep(0.02)


def go(node: Server, run_id: str) -> None:
    (Layout(node.home).run_dir(run_id) / "work" / "go").touch()


@pytest.fixture(scope="module")
def node(launch: Callable[..., Server]) -> Iterator[Server]:
    """A node of its own, whose home run users may reach."""
    home = passable_home()
    started = launch(home)
    yield started
    started.stop()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def analyst(node: Server) -> tuple[str, str]:
    """A user without admin rights who owns the deployments of these tests: (email, key)."""
    return node.new_user(teams=["analytics"])


def test_a_run_acts_as_its_owner_with_a_key_that_dies_with_it(
    node: Server, analyst: tuple[str, str]
) -> None:
    email, key = analyst
    deployed = deploy(node, email, CALLS_ME)
    with node.client(key) as client:
        answer = client.post(f"/api/v1/deployments/{deployed.name}/runs", json={})
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] in ("queued", "running")
        assert answer.json()["trigger"] == "manual"
        run = finished(client, answer.json()["id"])
        assert run["status"] == "succeeded", client.get(f"/api/v1/runs/{run['id']}/logs").text
        log = client.get(f"/api/v1/runs/{run['id']}/logs", headers={"Accept": "text/plain"})
        assert f"stdout me: {email}" in log.text
        key_file = client.get(f"/api/v1/runs/{run['id']}/artifacts/key.txt")
        assert key_file.status_code == 200
    with node.client(key_file.text) as leaked:
        refused = leaked.get("/api/v1/me")
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]


def test_a_folder_deployed_through_the_api_runs_with_the_sdk_as_its_owner(
    node: Server, analyst: tuple[str, str], tmp_path: Path
) -> None:
    email, key = analyst
    folder = tmp_path / f"report_{secrets.token_hex(3)}"
    folder.mkdir()
    (folder / "README.md").write_text("# Report\n")
    (folder / "cron.json").write_text('{"cron_frequency": "@daily", "script_to_run": "main.py"}')
    (folder / "main.py").write_text(
        "from servicebay import Client\nprint('me:', Client().get('api/v1/me')['email'])\n"
    )
    with node.client(key) as client:
        sent = client.post(
            "/api/v1/deployments",
            files={"bundle": ("bundle.tar.gz", build_bundle(folder).data, "application/gzip")},
            data={"name": folder.name},
        )
        assert sent.status_code == 202, sent.text
        deadline = time.monotonic() + 180
        while (status := _version_status(client, folder.name)) == "building":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert status == "ready"
        run_id = client.post(f"/api/v1/deployments/{folder.name}/runs").json()["id"]
        ended = finished(client, run_id)
        log = client.get(f"/api/v1/runs/{run_id}/logs", headers={"Accept": "text/plain"})
    assert ended["status"] == "succeeded", log.text
    assert f"stdout me: {email}" in log.text


def _version_status(client: httpx.Client, name: str) -> str:
    status: str = client.get(f"/api/v1/deployments/{name}/versions/1").json()["status"]
    return status


def test_triggering_needs_a_ready_deployment_and_the_right_to_manage_it(
    node: Server, analyst: tuple[str, str]
) -> None:
    email, key = analyst
    deployed = deploy(node, email, "print('hi')")
    building = deploy(node, email, "print('hi')", status="building")
    stranger_email, stranger = node.new_user()
    with node.client(key) as client:
        unknown = client.post("/api/v1/deployments/no-such-job/runs", json={})
        assert unknown.status_code == 404
        assert "no deployment named 'no-such-job'" in unknown.json()["detail"]
        not_built = client.post(f"/api/v1/deployments/{building.name}/runs")
        assert not_built.status_code == 409
        assert "version 1" in not_built.json()["detail"]
        bad = client.post(f"/api/v1/deployments/{deployed.name}/runs", json={"input": [1]})
        assert bad.status_code == 400
        extra = client.post(f"/api/v1/deployments/{deployed.name}/runs", json={"inputs": {}})
        assert extra.status_code == 400
        mine = client.post(f"/api/v1/deployments/{deployed.name}/runs").json()["id"]
    with node.client(stranger) as client:
        refused = client.post(f"/api/v1/deployments/{deployed.name}/runs", json={})
        assert refused.status_code == 403
        assert f"manage on deployment:{deployed.name}" in refused.json()["detail"]
        assert client.get(f"/api/v1/runs/{mine}").status_code == 403
        assert client.get(f"/api/v1/runs/{mine}/logs").status_code == 403
        assert client.post(f"/api/v1/runs/{mine}/cancel").status_code == 403
        assert mine not in [run["id"] for run in client.get("/api/v1/runs").json()["data"]]
    with node.admin() as admin:
        granted = admin.post(
            "/api/v1/grants",
            json={"principal": "team:analytics", "resource": f"deployment:{deployed.name}",
                  "actions": ["manage"]},
        )  # fmt: skip
        assert granted.status_code == 201
        colleague_email, colleague = node.new_user(teams=["analytics"])
        events = admin.get(
            "/api/v1/audit",
            params={"resource": f"deployment:{deployed.name}", "actor": stranger_email},
        )
    assert [(e["action"], e["outcome"]) for e in events.json()["data"]] == [
        ("run.cancel", "denied"),
        ("run.create", "denied"),
    ]
    with node.client(colleague) as client:
        shared = client.post(f"/api/v1/deployments/{deployed.name}/runs")
        assert shared.status_code == 202
        assert shared.json()["actor"] == colleague_email
        assert finished(client, shared.json()["id"])["status"] == "succeeded"


def test_runs_are_listed_newest_first_and_filtered(node: Server, analyst: tuple[str, str]) -> None:
    email, key = analyst
    good = deploy(node, email, "print('fine')")
    bad = deploy(node, email, "raise SystemExit(4)")
    with node.client(key) as client:
        ids = [
            client.post(f"/api/v1/deployments/{name}/runs").json()["id"]
            for name in (good.name, bad.name, good.name)
        ]
        ended = [finished(client, run_id) for run_id in ids]
        assert [run["status"] for run in ended] == ["succeeded", "failed", "succeeded"], [
            (run["status"], run["reason"], client.get(f"/api/v1/runs/{run['id']}/logs").text)
            for run in ended
        ]
        assert ended[1]["exit_code"] == 4
        assert ended[1]["reason"] == "exited with code 4"

        of_good = client.get("/api/v1/runs", params={"deployment": good.name}).json()
        assert [run["id"] for run in of_good["data"]] == [ids[2], ids[0]]
        failed = client.get("/api/v1/runs", params={"status": "failed", "trigger": "manual"})
        assert ids[1] in [run["id"] for run in failed.json()["data"]]
        assert ids[0] not in [run["id"] for run in failed.json()["data"]]
        first = client.get("/api/v1/runs", params={"deployment": good.name, "limit": 1}).json()
        assert [run["id"] for run in first["data"]] == [ids[2]]
        second = client.get(
            "/api/v1/runs", params={"deployment": good.name, "limit": 1, "cursor": first["next"]}
        ).json()
        assert [run["id"] for run in second["data"]] == [ids[0]]
        assert second["next"] is None
        unknown = client.get("/api/v1/runs", params={"status": "done"})
        assert unknown.status_code == 400
        assert "unknown status 'done'" in unknown.json()["detail"]


def test_a_log_streams_by_chunk_while_the_run_goes(node: Server, analyst: tuple[str, str]) -> None:
    email, key = analyst
    deployed = deploy(node, email, WAITS)
    with node.client(key) as client:
        run_id = client.post(f"/api/v1/deployments/{deployed.name}/runs").json()["id"]
        running(client, node, run_id)
        deadline = time.monotonic() + 30
        while True:
            early = client.get(f"/api/v1/runs/{run_id}/logs").json()
            if any(" stdout pid " in chunk["text"] for chunk in early["chunks"]):
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert early["done"] is False
        go(node, run_id)
        finished(client, run_id)
        after = early["chunks"][-1]["id"]
        rest = client.get(f"/api/v1/runs/{run_id}/logs", params={"after": after}).json()
        assert rest["done"] is True
        text = "".join(chunk["text"] for chunk in rest["chunks"])
        assert " stdout went" in text
        assert " stdout pid " not in text
        assert all(chunk["id"] > after for chunk in rest["chunks"])
        negative = client.get(f"/api/v1/runs/{run_id}/logs", params={"after": -1})
        assert negative.status_code == 400


def test_artifacts_are_listed_and_downloaded_by_safe_paths_only(
    node: Server, analyst: tuple[str, str]
) -> None:
    email, key = analyst
    script = (
        "import os\n"
        "out = os.environ['BAY_OUTPUT_DIR']\n"
        "os.makedirs(os.path.join(out, 'charts'))\n"
        "open(os.path.join(out, 'report.csv'), 'w').write('day,users\\n')\n"
        "open(os.path.join(out, 'charts', 'week 1.txt'), 'w').write('chart')\n"
        "os.symlink('/etc/passwd', os.path.join(out, 'passwd'))\n"
    )
    deployed = deploy(node, email, script)
    waiting = deploy(node, email, WAITS)
    with node.client(key) as client:
        run_id = client.post(f"/api/v1/deployments/{deployed.name}/runs").json()["id"]
        assert finished(client, run_id)["status"] == "succeeded"
        listed = client.get(f"/api/v1/runs/{run_id}/artifacts").json()
        assert listed == {
            "data": [{"path": "charts/week 1.txt", "size": 5}, {"path": "report.csv", "size": 10}],
            "next": None,
        }
        report = client.get(f"/api/v1/runs/{run_id}/artifacts/report.csv")
        assert report.status_code == 200
        assert report.content == b"day,users\n"
        assert report.headers["content-type"].startswith("text/csv")
        assert "attachment" in report.headers["content-disposition"]
        chart = client.get(f"/api/v1/runs/{run_id}/artifacts/charts/week%201.txt")
        assert chart.content == b"chart"
        for missing in ("passwd", "nothing.txt", "charts"):
            answer = client.get(f"/api/v1/runs/{run_id}/artifacts/{missing}")
            assert answer.status_code == 404, missing
        for unsafe in ("charts/%2E%2E/report.csv", "charts//week%201.txt", "%2Fetc%2Fpasswd"):
            answer = client.get(f"/api/v1/runs/{run_id}/artifacts/{unsafe}")
            assert answer.status_code in (400, 404), unsafe
            assert "root:" not in answer.text

        busy = client.post(f"/api/v1/deployments/{waiting.name}/runs").json()["id"]
        running(client, node, busy)
        still = client.get(f"/api/v1/runs/{busy}/artifacts")
        assert still.status_code == 409
        assert "still running" in still.json()["detail"]
        go(node, busy)
        finished(client, busy)


def test_cancelling_a_running_run_stops_it_and_is_audited(
    node: Server, analyst: tuple[str, str]
) -> None:
    email, key = analyst
    deployed = deploy(node, email, WAITS)
    with node.client(key) as client:
        run_id = client.post(f"/api/v1/deployments/{deployed.name}/runs").json()["id"]
        running(client, node, run_id)
        asked = client.post(f"/api/v1/runs/{run_id}/cancel")
        assert asked.status_code == 202
        assert asked.json()["cancel_requested"] is True
        ended = finished(client, run_id)
        assert ended["status"] == "cancelled"
        assert ended["reason"].startswith("cancelled (killed by SIG")
        again = client.post(f"/api/v1/runs/{run_id}/cancel")
        assert again.status_code == 409
        assert "already ended (cancelled)" in again.json()["detail"]
    with node.admin() as admin:
        events = admin.get("/api/v1/audit", params={"resource": f"deployment:{deployed.name}"})
    actions = [
        (event["action"], event["outcome"], event["actor"]) for event in events.json()["data"]
    ]
    assert ("run.cancel", "allowed", email) in actions
    assert ("run.create", "allowed", email) in actions


def test_an_api_node_queues_runs_and_a_worker_node_runs_them(
    start_server: Callable[..., Server],
) -> None:
    home = passable_home()
    try:
        api = start_server(home, settings={"BAY_ROLE": "api"})
        deployed = deploy(api, api.admin_email, "print('ran')")
        with api.admin() as client:
            run_id = client.post(f"/api/v1/deployments/{deployed.name}/runs").json()["id"]
            assert client.get(f"/api/v1/runs/{run_id}").json()["status"] == "queued"
            start_server(home, init=False, settings={"BAY_ROLE": "worker"})
            ended = finished(client, run_id)
        assert ended["status"] == "succeeded"
        assert ended["worker"].split(":")[1] != str(api.process.pid)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_two_workers_on_one_postgresql_run_each_run_once(
    start_server: Callable[..., Server], postgres_url: str
) -> None:
    home = passable_home()
    try:
        first = start_server(home, database_url=postgres_url)
        start_server(home, database_url=postgres_url, init=False)
        deployed = deploy(first, first.admin_email, "print('ran once')")
        with first.admin() as client:
            ids = [
                client.post(f"/api/v1/deployments/{deployed.name}/runs").json()["id"]
                for _ in range(16)
            ]
            ended = [finished(client, run_id) for run_id in ids]
            logs = [
                client.get(f"/api/v1/runs/{run_id}/logs", headers={"Accept": "text/plain"}).text
                for run_id in ids
            ]
        assert [run["status"] for run in ended] == ["succeeded"] * 16
        assert all(log.count("stdout ran once") == 1 for log in logs)
        assert all(log.count("started on") == 1 for log in logs)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_a_killed_workers_runs_are_marked_failed_when_it_restarts(
    start_server: Callable[..., Server],
) -> None:
    home = passable_home()
    try:
        node = start_server(home)
        deployed = deploy(node, node.admin_email, WAITS)
        with node.admin() as client:
            run_id = client.post(f"/api/v1/deployments/{deployed.name}/runs").json()["id"]
            running(client, node, run_id)
            worker = client.get(f"/api/v1/runs/{run_id}").json()["worker"]
        script = _pid_of(node, run_id)
        node.process.send_signal(signal.SIGKILL)
        node.process.wait()
        os.kill(script, signal.SIGKILL)  # the platform's child, orphaned with it

        again = start_server(home, init=False)
        with again.client(node.admin_key) as client:
            ended = finished(client, run_id)
        assert ended["status"] == "failed"
        assert ended["reason"] == f"its worker {worker} stopped before the run ended " \
            "(crash or restart)"  # fmt: skip
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _pid_of(node: Server, run_id: str) -> int:
    """The pid the WAITS script printed, read from the log."""
    deadline = time.monotonic() + 30
    with node.admin() as client:
        while True:
            log = client.get(f"/api/v1/runs/{run_id}/logs", headers={"Accept": "text/plain"})
            for line in log.text.splitlines():
                if " stdout pid " in line:
                    return int(line.split()[-1])
            assert time.monotonic() < deadline
            time.sleep(0.05)
