"""`bay run` and `bay runs`: trigger, follow, list, cancel and download runs of a real
server whose worker runs real scripts; and `bay run DIR --local`, a folder run here as the
platform would run it."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from servicebay.core.db import create_engine, session_factory
from servicebay.runtime.layout import Layout
from tests.cli.cli_support import BAY, Bay, assert_clean_failure
from tests.conftest import Server
from tests.runtime.runs_support import Deployed, deploy_script, passable_home

WAITS = """\
import os, time
print("waiting", flush=True)
while not os.path.exists("go"):
    time.sleep(0.02)
print("went")
"""

LOCAL_SCRIPT = """\
import json, os, urllib.request
asked = urllib.request.Request(
    os.environ["BAY_URL"] + "/api/v1/me",
    headers={"Authorization": "Bearer " + os.environ["INTERNAL_API_KEY"]},
)
with urllib.request.urlopen(asked) as answer:
    print("me:", json.load(answer)["email"])
with open(os.environ["BAY_RUN_INPUT"]) as given:
    print("input:", json.load(given))
print("names:", " ".join(sorted(os.environ)))
with open(os.path.join(os.environ["BAY_OUTPUT_DIR"], "report.csv"), "w") as out:
    out.write("day,users\\n")
"""


@pytest.fixture(scope="module")
def node(launch: Callable[..., Server]) -> Iterator[Server]:
    home = passable_home()
    started = launch(home)
    yield started
    started.stop()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def bay(node: Server, config_home: Path) -> Bay:
    return Bay(node.url, node.admin_key, config_home)


def deploy(node: Server, script: str, **config: Any) -> Deployed:
    async def go() -> Deployed:
        engine = create_engine(f"sqlite:///{node.home / 'servicebay.db'}")
        try:
            return await deploy_script(
                session_factory(engine),
                Layout(node.home),
                owner=node.admin_email,
                script=script,
                **config,
            )
        finally:
            await engine.dispose()

    return asyncio.run(go())


def go_when_waiting(bay: Bay, node: Server, run_id: str) -> None:
    """Let a WAITS script end once it has printed that it waits."""
    deadline = time.monotonic() + 60
    while "waiting" not in bay("runs", "logs", run_id).stdout:
        assert time.monotonic() < deadline, "the script never started"
        time.sleep(0.05)
    (Layout(node.home).run_dir(run_id) / "work" / "go").touch()


def test_run_wait_prints_the_log_and_exits_by_how_the_run_ended(bay: Bay, node: Server) -> None:
    good = deploy(node, "print('hello from the job')")
    bad = deploy(node, "import sys\nprint('about to fail')\nsys.exit(3)")

    succeeded = bay("run", good.name, "--wait")
    failed = bay("run", bad.name, "--wait")

    assert succeeded.returncode == 0, succeeded.stderr
    assert " stdout hello from the job" in succeeded.stdout
    assert "succeeded" in succeeded.stdout
    assert failed.returncode == 1
    assert " stdout about to fail" in failed.stdout
    assert "failed: exited with code 3" in failed.stderr


def test_run_passes_input_inline_or_from_a_file(bay: Bay, node: Server, tmp_path: Path) -> None:
    deployed = deploy(node, "import json, os\nprint(json.load(open(os.environ['BAY_RUN_INPUT'])))")
    (tmp_path / "input.json").write_text('{"day": "2026-11-27"}')

    inline = bay("run", deployed.name, "--input", '{"limit": 3}', "--json")
    from_file = bay("run", deployed.name, "--input", f"@{tmp_path / 'input.json'}", "--wait")

    assert inline.returncode == 0, inline.stderr
    assert json.loads(inline.stdout)["input"] == {"limit": 3}
    assert from_file.returncode == 0, from_file.stderr
    assert "stdout {'day': '2026-11-27'}" in from_file.stdout
    for bad, message in (("[1]", "must be a JSON object"), ("{x", "is not JSON")):
        refused = bay("run", deployed.name, "--input", bad)
        assert_clean_failure(refused)
        assert message in refused.stderr
    missing = bay("run", deployed.name, "--input", "@nowhere.json")
    assert_clean_failure(missing)
    assert "cannot read nowhere.json" in missing.stderr


def test_run_of_an_unknown_deployment_or_a_folder_says_what_to_do(bay: Bay) -> None:
    unknown = bay("run", "no-such-job")
    folder = bay("run", "./weekly_report")

    assert_clean_failure(unknown)
    assert "no deployment named 'no-such-job'" in unknown.stderr
    assert_clean_failure(folder)
    assert "bay run ./weekly_report --local" in folder.stderr


def test_runs_list_show_and_logs(bay: Bay, node: Server) -> None:
    deployed = deploy(node, "print('listed')")
    run_id = json.loads(bay("run", deployed.name, "--json").stdout)["id"]
    bay("runs", "logs", run_id, "--follow")

    listed = bay("runs", "list", "--deployment", deployed.name, "--json")
    table = bay("runs", "list", "--deployment", deployed.name, "--status", "succeeded")
    shown = bay("runs", "show", run_id)
    logs = bay("runs", "logs", run_id)

    assert [run["id"] for run in json.loads(listed.stdout)] == [run_id]
    assert run_id in table.stdout
    assert deployed.name in table.stdout
    assert "exited with code 0" in shown.stdout
    assert " stdout listed" in logs.stdout
    refused = bay("runs", "list", "--status", "done")
    assert refused.returncode == 2
    assert "'done' is not one of" in refused.stderr


def test_runs_logs_follow_prints_lines_as_they_come_until_the_run_ends(
    bay: Bay, node: Server
) -> None:
    deployed = deploy(node, WAITS)
    run_id = json.loads(bay("run", deployed.name, "--json").stdout)["id"]
    with subprocess.Popen(
        [BAY, "runs", "logs", run_id, "--follow"],
        env=bay.env,
        stdout=subprocess.PIPE,
        text=True,
    ) as follower:
        assert follower.stdout is not None
        first = follower.stdout.readline()
        assert first.endswith(" stdout waiting\n") or "[servicebay] run" in first
        go_when_waiting(bay, node, run_id)
        rest = follower.stdout.read()
        assert follower.wait(timeout=60) == 0
    assert " stdout went" in rest


def test_runs_cancel_stops_a_running_run(bay: Bay, node: Server) -> None:
    deployed = deploy(node, WAITS)
    run_id = json.loads(bay("run", deployed.name, "--json").stdout)["id"]
    deadline = time.monotonic() + 60
    while "waiting" not in bay("runs", "logs", run_id).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.05)

    cancelled = bay("runs", "cancel", run_id)
    bay("runs", "logs", run_id, "--follow")
    again = bay("runs", "cancel", run_id)

    assert cancelled.returncode == 0, cancelled.stderr
    assert f"Asked run {run_id} to stop" in cancelled.stdout
    assert json.loads(bay("runs", "show", run_id, "--json").stdout)["status"] == "cancelled"
    assert_clean_failure(again)
    assert "already ended (cancelled)" in again.stderr


def test_runs_artifacts_lists_and_downloads_every_file(
    bay: Bay, node: Server, tmp_path: Path
) -> None:
    script = (
        "import os\n"
        "out = os.environ['BAY_OUTPUT_DIR']\n"
        "os.makedirs(os.path.join(out, 'charts'))\n"
        "open(os.path.join(out, 'report.csv'), 'w').write('day,users\\n')\n"
        "open(os.path.join(out, 'charts', 'week.png'), 'wb').write(bytes(range(256)))\n"
    )
    deployed = deploy(node, script)
    run_id = json.loads(bay("run", deployed.name, "--json").stdout)["id"]
    bay("runs", "logs", run_id, "--follow")

    listed = bay("runs", "artifacts", run_id, "--json")
    saved = bay("runs", "artifacts", run_id, "--download", str(tmp_path / "files"))

    assert json.loads(listed.stdout) == [
        {"path": "charts/week.png", "size": 256},
        {"path": "report.csv", "size": 10},
    ]
    assert saved.returncode == 0, saved.stderr
    assert "Saved 2 file(s)" in saved.stdout
    assert (tmp_path / "files" / "report.csv").read_text() == "day,users\n"
    assert (tmp_path / "files" / "charts" / "week.png").read_bytes() == bytes(range(256))


# --- bay run DIR --local ----------------------------------------------------------------------


def folder_with(tmp_path: Path, script: str, config: str | None = None) -> Path:
    folder = tmp_path / "weekly_report"
    folder.mkdir()
    (folder / "README.md").write_text("# Weekly report\n\nCounts users.\n")
    (folder / "report.py").write_text(script)
    (folder / "cron.json").write_text(
        config
        or '// runs on Fridays\n{"cron_frequency": "0 9 * * 5", "script_to_run": "report.py",\n'
        ' "env": {"REPORT_CHANNEL": "#sales"}}\n'
    )
    return folder


def local(bay: Bay, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BAY, "run", *args, "--local"],
        env=bay.env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_run_local_runs_a_folder_with_your_key_as_the_platform_would(
    bay: Bay, node: Server, tmp_path: Path
) -> None:
    folder = folder_with(tmp_path, LOCAL_SCRIPT)
    work = tmp_path / "here"
    work.mkdir()

    # A real interpreter: a pyenv shim would add its own variables on the way.
    result = local(
        bay, work, str(folder), "--input", '{"day": "2026-11-27"}', "--python", sys.executable
    )

    assert result.returncode == 0, result.stderr
    assert f"me: {node.admin_email}" in result.stdout
    assert "input: {'day': '2026-11-27'}" in result.stdout
    names = next(line for line in result.stdout.splitlines() if line.startswith("names: "))
    assert names.split()[1:] == sorted(
        ["BAY_OUTPUT_DIR", "BAY_RUN_ID", "BAY_RUN_INPUT", "BAY_URL", "HOME", "INTERNAL_API_KEY",
         "LANG", "PATH", "PYTHONPATH", "PYTHONUNBUFFERED", "REPORT_CHANNEL", "TMPDIR"]
    )  # fmt: skip
    assert (work / "output" / "report.csv").read_text() == "day,users\n"
    assert "The run succeeded" in result.stdout


def test_run_local_refuses_an_invalid_folder_listing_every_problem(
    bay: Bay, tmp_path: Path
) -> None:
    folder = folder_with(
        tmp_path, "print('never')", '{"cron_frequency": "0 0 0 0 0", "script_to_run": "x.py"}'
    )

    result = local(bay, tmp_path, str(folder))

    assert_clean_failure(result)
    assert "cron.json:1:" in result.stderr
    assert "'0 0 0 0 0'" in result.stderr
    assert "x.py" in result.stderr
    assert "never" not in result.stdout


def test_run_local_exits_1_when_the_script_fails(bay: Bay, tmp_path: Path) -> None:
    folder = folder_with(tmp_path, "import sys\nprint('failing', file=sys.stderr)\nsys.exit(5)")

    result = local(bay, tmp_path, str(folder))

    assert result.returncode == 1
    assert "failing" in result.stderr
    assert "the run exited with code 5" in result.stderr
