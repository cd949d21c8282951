"""`bay init`, `bay serve` and `bay demo`: real instances in temporary homes, real processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from servicebay.cli.demo import CONNECTOR_CALLS, IG_USER, Fakes
from servicebay.connectors import CONNECTORS
from tests.cli.cli_support import BAY, Bay, assert_clean_failure
from tests.conftest import offline_wheels


@pytest.fixture
def local(tmp_path: Path) -> Bay:
    """`bay` with no server in mind: for the commands that work on an instance directly."""
    return Bay("http://127.0.0.1:9", None, tmp_path / "config")


def test_init_prints_the_admin_key_once_with_how_to_use_it(local: Bay, tmp_path: Path) -> None:
    home = tmp_path / "home"

    created = local("init", "--home", str(home), "--admin-email", "boss@example.com")

    assert created.returncode == 0, created.stderr
    keys = re.findall(r"bay_[A-Za-z0-9_-]{20,}", created.stdout)
    assert len(set(keys)) == 1
    assert "not shown again" in created.stdout
    assert "boss@example.com" in created.stdout
    assert f"bay serve --home {home}" in created.stdout
    assert f"export BAY_URL=http://127.0.0.1:8600 BAY_API_KEY={keys[0]}" in created.stdout

    again = local("init", "--home", str(home))

    assert_clean_failure(again)
    assert "already exists" in again.stderr
    assert keys[0] not in again.stdout + again.stderr


def test_init_json_and_private_files(local: Bay, tmp_path: Path) -> None:
    home = tmp_path / "home"

    created = local("init", "--home", str(home), "--json")

    assert created.returncode == 0, created.stderr
    answer = json.loads(created.stdout)
    assert set(answer) == {"home", "database_url", "admin", "key"}
    assert answer["home"] == str(home)
    assert answer["database_url"].startswith("sqlite:")
    assert answer["admin"] == {"email": "admin@localhost"}
    assert answer["key"]["id"].startswith("key_")
    assert answer["key"]["key"].startswith("bay_")
    for name in ("master.key", "servicebay.db"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name


def test_serve_without_an_instance_says_to_init(local: Bay, tmp_path: Path) -> None:
    home = tmp_path / "empty"

    result = local("serve", "--home", str(home))

    assert_clean_failure(result)
    assert f"bay init --home {home}" in result.stderr


def test_serve_offers_only_the_roles_that_exist(local: Bay, tmp_path: Path) -> None:
    result = local("serve", "--home", str(tmp_path), "--role", "builder")

    words = " ".join(result.stderr.replace("│", " ").split())  # unwrap Rich's error box
    assert result.returncode == 2
    assert "'builder' is not one of 'all', 'api', 'scheduler', 'worker'" in words


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _demo(local: Bay, *args: str) -> Iterator[tuple[dict[str, str], str, subprocess.Popen[str]]]:
    """A running `bay demo`, once its panel is printed: the variables the panel exports,
    the panel's text (no border, continued lines joined) and the process."""
    process = subprocess.Popen(
        [BAY, "demo", *args],
        env=local.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        panel = []
        for line in process.stdout:
            panel.append(line)
            if "starts over" in line:
                break
        assert process.poll() is None, "".join(panel) + process.stderr.read()  # type: ignore[union-attr]
        exported = dict(re.findall(r"export (\w+)=(\S+)", "".join(panel)))
        text = "\n".join(line.strip().strip("│╭╮╰╯─").strip() for line in panel)
        yield exported, text.replace("\\\n", " "), process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def _me(url: str, key: str) -> str:
    answer = httpx.get(f"{url}/api/v1/me", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["email"])


@pytest.fixture
def demo_home() -> Iterator[Path]:
    """A home the build and run users may reach (pytest's tmp_path is 0700 when the tests
    run as root, and the demo deploys)."""
    root = Path(tempfile.mkdtemp(prefix="bay-demo-"))
    root.chmod(0o755)
    yield root / "demo"
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def offline(local: Bay) -> Bay:
    """The demo's builds install from the wheels `make install` downloaded, never an index."""
    wheels = offline_wheels("flask", "openpyxl")
    local.env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels), PIP_CONFIG_FILE=os.devnull)
    return local


def _demo_ports() -> int:
    """A port for the demo whose next ones (its fakes') are free as well."""
    while True:
        port = _free_port()
        try:
            for taken in Fakes.ports(port)[1:]:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", taken))
        except OSError:
            continue
        return port


def test_demo_serves_a_seeded_instance_and_reuses_it(
    offline: Bay, demo_home: Path, tmp_path: Path
) -> None:
    local, home, port = offline, demo_home, _demo_ports()
    args = ("--home", str(home), "--port", str(port))

    with _demo(local, *args) as (exported, panel, first):
        url = exported["BAY_URL"]
        assert url == f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/readyz").status_code == 200
        assert _me(url, exported["ANN_KEY"]) == "ann@example.com"
        assert _me(url, exported["BO_KEY"]) == "bo@example.com"
        assert _me(url, exported["BAY_API_KEY"]) == "admin@example.com"
        demo_bay = Bay(url, exported["BAY_API_KEY"], tmp_path / "config")
        ann = demo_bay("permissions", "check", "ann@example.com", "service:instagram", "invoke")
        bo = demo_bay("permissions", "check", "bo@example.com", "service:instagram", "invoke")
        assert (ann.returncode, bo.returncode) == (0, 1)
        assert "INSTAGRAM_ACCESS_TOKEN" in demo_bay("secrets", "list").stdout
        _check_the_sales_curls(exported, panel)
        _check_the_deployments(exported, panel)
        _check_the_connectors(exported, panel, home)
    assert first.returncode == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/readyz")  # the server child stopped with the demo
    assert stat.S_IMODE((home / "demo.json").stat().st_mode) == 0o600

    with _demo(local, *args) as (again, panel_again, _):
        assert again == exported
        assert _me(url, again["ANN_KEY"]) == "ann@example.com"
        _check_the_sales_curls(again, panel_again)
        services = json.loads(demo_bay("services", "list", "--json").stdout)
        assert [(row["name"], row["version"]) for row in services if row["kind"] == "sql"] == [
            ("sales", 1)
        ]
        deployments = json.loads(demo_bay("deployments", "list", "--json").stdout)
        assert sorted((row["name"], row["active_version"]) for row in deployments) == sorted(
            [(name, 1) for name in ("hello", "sales_dashboard", "weekly_report", *CONNECTORS)]
        )
        instagram = _call(again, "ANN_KEY", "GET", "/instagram/get_follower_count")
        assert instagram.json()["followers_count"] == 7100  # the connectors serve again
        _tamper_with_the_audit_log(home / "servicebay.db")
        broken = demo_bay("audit", "verify")
        assert broken.returncode == 1
        assert "BROKEN" in broken.stderr
        as_json = demo_bay("audit", "verify", "--json")
        assert as_json.returncode == 1
        assert [p["seq"] for p in json.loads(as_json.stdout)["problems"]] == [1]


def _check_the_sales_curls(exported: dict[str, str], panel: str) -> None:
    """Each sales curl the panel prints answers its own user, and the grants decide others."""
    url = exported["BAY_URL"]
    curls = re.findall(r'Bearer \$(\w+)" +"\$BAY_URL(/sales/[^"]+)"', panel)
    assert [path.split("?")[0] for _, path in curls] == [
        "/sales/customer/julius@nyknicks.com",
        "/sales/orders",
        "/sales/queries/daily_active_users",
    ]

    def status(variable: str, path: str) -> int:
        headers = {"Authorization": f"Bearer {exported[variable]}"}
        return httpx.get(f"{url}{path}", headers=headers).status_code

    (ann, customer), (bo, orders), (_, query) = curls
    assert (ann, bo) == ("ANN_KEY", "BO_KEY")
    found = httpx.get(f"{url}{customer}", headers={"Authorization": f"Bearer {exported[ann]}"})
    assert found.status_code == 200, found.text
    assert found.json()["name"] == "Julius Randle"
    assert status(bo, customer) == 200  # data_science may invoke the whole service
    assert [status(bo, orders), status(ann, orders)] == [200, 403]
    assert [status(bo, query), status(ann, query)] == [200, 403]
    listed = httpx.get(f"{url}{orders}", headers={"Authorization": f"Bearer {exported[bo]}"})
    amounts = [float(row["amount"]) for row in listed.json()["data"]]
    assert len(amounts) == 5
    assert amounts == sorted(amounts, reverse=True)
    assert min(amounts) > 100


def _check_the_deployments(exported: dict[str, str], panel: str) -> None:
    """One of each kind runs: the weekly report ran once and told the Slack fake, the
    article's webhook answers, and the dashboard shows data_science who it is."""
    url = exported["BAY_URL"]
    report = re.search(r"#marketing got: Weekly sales report: 50 orders.*?(run_\w+)", panel)
    assert report is not None, panel
    admin = {"Authorization": f"Bearer {exported['BAY_API_KEY']}"}
    run = httpx.get(f"{url}/api/v1/runs/{report[1]}", headers=admin).json()
    assert run["status"] == "succeeded", run
    artifacts = httpx.get(f"{url}/api/v1/runs/{report[1]}/artifacts", headers=admin).json()
    assert [artifact["path"] for artifact in artifacts["data"]] == ["weekly_report.xlsx"]
    hello = httpx.post(f"{url}/hooks/hello", json={"from": "the test"}, timeout=30)
    assert hello.json() == {"hello": "world", "you_sent": {"from": "the test"}}
    dashboard = f"{url}/apps/sales_dashboard/"
    seen = httpx.get(dashboard, headers={"Authorization": f"Bearer {exported['BO_KEY']}"})
    assert seen.status_code == 200, seen.text
    assert "Hello, bo@example.com." in seen.text
    assert "Revenue by plan" in seen.text
    refused = httpx.get(dashboard, headers={"Authorization": f"Bearer {exported['ANN_KEY']}"})
    assert refused.status_code == 403


def _call(
    exported: dict[str, str], variable: str, method: str, path: str, body: str | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {exported[variable]}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    answer = httpx.request(
        method, f"{exported['BAY_URL']}{path}", headers=headers, content=body, timeout=30
    )
    assert answer.is_success, answer.text
    return answer


def _check_the_connectors(exported: dict[str, str], panel: str, home: Path) -> None:
    """The panel shows one call of each connector, and each answers its user through the
    gateway from the demo's fakes (the report's Slack post went through `slack`)."""
    assert set(CONNECTORS) <= set(re.findall(r'"\$BAY_URL/(\w+)/\w+', panel))
    answers = {}
    for who, method, path, body in CONNECTOR_CALLS:
        assert f'Bearer ${who.upper()}_KEY"' in panel
        assert f'"$BAY_URL{path}"' in panel
        answers[path.split("/")[1]] = _call(exported, f"{who.upper()}_KEY", method, path, body)
    assert answers["instagram"].json() == {"followers_count": 7100, "user_id": IG_USER}
    assert answers["slack"].json()["channel"] == "C0MARKETING"
    assert answers["email"].json()["accepted"] == ["bo@example.com"]
    assert answers["spreadsheets"].json()["rows"][0]["team"] == "marketing"
    assert answers["salesforce"].json()["email"] == "og@nyknicks.com"
    assert answers["github"].json()["count"] == 2
    refused = httpx.get(
        f"{exported['BAY_URL']}/github/open_pull_requests?owner=servicebay&repo=analytics",
        headers={"Authorization": f"Bearer {exported['ANN_KEY']}"},
    )
    assert refused.status_code == 403  # marketing may not read GitHub
    appended = _call(
        exported, "ANN_KEY", "POST", "/spreadsheets/append_row?table=campaigns",
        '{"campaign": "Finals", "channel": "slack", "clicks": 12}',
    )  # fmt: skip
    assert appended.status_code == 201
    assert (home / "spreadsheets" / "campaigns.csv").read_bytes().endswith(b"Finals,slack,12\r\n")


def _tamper_with_the_audit_log(database: Path) -> None:
    """What an intruder with file access could do: drop the guard, then edit an event."""
    with sqlite3.connect(database) as db:
        db.execute("DROP TRIGGER audit_events_no_update")
        db.execute("UPDATE audit_events SET actor = 'mallory@example.com' WHERE seq = 1")


def test_demo_reset_refuses_a_folder_it_did_not_make(local: Bay, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")

    result = local("demo", "--home", str(precious), "--reset", "--port", str(_free_port()))

    assert_clean_failure(result)
    assert (precious / "thesis.txt").exists()


def test_demo_on_a_busy_port_says_so(local: Bay, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        result = local("demo", "--home", str(tmp_path / "demo"), "--port", str(port))

    assert_clean_failure(result)
    assert f"port {port}" in result.stderr
