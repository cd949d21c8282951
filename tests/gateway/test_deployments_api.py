"""`/api/v1/deployments` over a real `bay serve`: a folder's bundle in, a built version out.

The server checks every upload again, builds a virtual environment per distinct
requirements (from a local folder of wheels: pip's own PIP_* settings, never an index),
reuses it on a redeploy, keeps the previous version active when a build fails, and lets
only owners, admins and `manage` grants change a deployment, auditing every change.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from servicebay.runtime.bundle import build_bundle
from tests.conftest import Server
from tests.gateway.gateway_support import assert_problem, find_event, unique_name
from tests.runtime.test_alerts import Receiver
from tests.runtime.test_builder import make_wheel

DOMAIN = "bay.test"
ALERTS_PATH = "/alerts"
BUILD_SECONDS = 180


@pytest.fixture(scope="module")
def alert_receiver() -> Iterator[Receiver]:
    """Where the module's server posts its alerts (its alert webhook)."""
    running = Receiver()
    yield running
    running.close()


@pytest.fixture(scope="module")
def deploys(launch: Callable[..., Server], alert_receiver: Receiver) -> Iterator[Server]:
    """A server of this module's own: its home is reachable by the build user (pytest's
    tmp_path is not, when the tests run as root), pip installs from local wheels, and
    alerts go to `alert_receiver`."""
    root = Path(tempfile.mkdtemp(prefix="bay-deploys-"))
    root.chmod(0o755)
    wheels = root / "wheels"
    make_wheel(wheels, "baytiny", "1.0")
    settings = {
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheels),
        "PIP_CONFIG_FILE": os.devnull,
        "BAY_DOMAIN": DOMAIN,
        "BAY_ALERT_WEBHOOK_URL": alert_receiver.url + ALERTS_PATH,
    }
    server = launch(root / "home", settings=settings)
    yield server
    server.stop()
    shutil.rmtree(root)


@pytest.fixture
def admin(deploys: Server) -> Iterator[httpx.Client]:
    with deploys.admin() as client:
        yield client


def folder_of(parent: Path, files: dict[str, str]) -> Path:
    folder = parent / secrets.token_hex(4)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def cron_files(**extra: str) -> dict[str, str]:
    return {
        "cron.json": '// every Friday\n{"cron_frequency": "0 9 * * 5", "script_to_run": "main.py"}',
        "main.py": "print('weekly report')\n",
        "README.md": "# Weekly report\n",
        **extra,
    }


def upload(client: httpx.Client, data: bytes, name: str | None = None) -> httpx.Response:
    form = {"name": name} if name is not None else {}
    return client.post(
        "/api/v1/deployments",
        files={"bundle": ("bundle.tar.gz", data, "application/gzip")},
        data=form,
    )


def deploy(client: httpx.Client, folder: Path, name: str | None = None) -> dict[str, Any]:
    """Deploy `folder` and follow its build to the end; the finished version."""
    answer = upload(client, build_bundle(folder).data, name)
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert accepted["status"] == "building"
    return wait_for_build(client, accepted["name"], accepted["version"])


def wait_for_build(client: httpx.Client, name: str, version: int) -> dict[str, Any]:
    """Poll as `bay deploy` does, reading the log from where the last poll ended; the
    finished version with its whole log."""
    offset, log = 0, ""
    deadline = time.monotonic() + BUILD_SECONDS
    while time.monotonic() < deadline:
        polled = client.get(
            f"/api/v1/deployments/{name}/versions/{version}", params={"log_offset": offset}
        )
        assert polled.status_code == 200, polled.text
        body: dict[str, Any] = polled.json()
        assert body["log_offset"] == offset
        log += body["build_log"]
        offset = body["log_end"]
        if body["status"] != "building":
            whole = client.get(f"/api/v1/deployments/{name}/versions/{version}").json()
            assert whole["build_log"] == log  # the pieces add up to the whole log
            return whole
        time.sleep(0.2)
    raise AssertionError(f"{name} version {version} still building after {BUILD_SECONDS} s")


def wait_for_alert(receiver: Receiver, name: str) -> dict[str, Any]:
    """The alert the server posted about deployment `name` (alerts are sent in the background)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for body in receiver.bodies(ALERTS_PATH):
            if body.get("deployment", {}).get("name") == name:
                return body
        time.sleep(0.1)
    raise AssertionError(f"no alert about {name}: {receiver.bodies(ALERTS_PATH)}")


def environment_of(server: Server, version: dict[str, Any]) -> Path:
    return server.home / "runtime" / "environments" / version["requirements_digest"]


# Deploying and building


def test_a_deploy_answers_202_and_its_version_builds_and_becomes_active(
    deploys: Server, admin: httpx.Client, tmp_path: Path
) -> None:
    name = unique_name("weekly")
    folder = folder_of(tmp_path, cron_files())
    answer = upload(admin, build_bundle(folder).data, name)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {
        "name": name,
        "version": 1,
        "kind": "cron",
        "status": "building",
        "created": True,
    }
    version = wait_for_build(admin, name, 1)
    assert version["status"] == "ready", version["build_log"]
    assert version["active"] is True
    assert version["config"]["cron_frequency"] == "0 9 * * 5"
    assert version["config"]["timezone"] == "UTC"  # defaults filled in
    assert "environment" in version["build_log"]

    shown = admin.get(f"/api/v1/deployments/{name}").json()
    assert (shown["owner"], shown["active_version"], shown["kind"]) == (
        deploys.admin_email,
        1,
        "cron",
    )
    assert shown["domain_url"] is None  # a cron job has no URL
    assert [v["version"] for v in shown["versions"]] == [1]
    source = deploys.home / "runtime" / "deployments" / name / "v1"
    assert (source / "main.py").read_text() == "print('weekly report')\n"
    event = find_event(admin, answer.headers["x-request-id"], action="deployment.create")
    assert (event["resource"], event["outcome"]) == (f"deployment:{name}", "allowed")
    assert event["detail"]["version"] == 1


def test_a_redeploy_with_the_same_requirements_reuses_the_environment(
    deploys: Server, admin: httpx.Client, tmp_path: Path
) -> None:
    name = unique_name("cached")
    # Requirements of this test's own: tests run at once share the server's cache.
    folder = folder_of(tmp_path, cron_files(**{"requirements.txt": "baytiny>=1\n"}))
    first = deploy(admin, folder, name)
    assert first["status"] == "ready", first["build_log"]
    environment = environment_of(deploys, first)
    before = environment.stat()
    assert (environment / "bin" / "python").exists()

    (folder / "requirements.txt").write_text("# any version\nbaytiny>=1   # the wheel\n")
    second = deploy(admin, folder, name)
    assert second["status"] == "ready", second["build_log"]
    assert second["requirements_digest"] == first["requirements_digest"]
    assert "reusing environment" in second["build_log"]
    assert "pip install" not in second["build_log"]
    after = environment.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_changed_requirements_build_another_environment_and_a_failed_build_keeps_the_last(
    deploys: Server, admin: httpx.Client, tmp_path: Path, alert_receiver: Receiver
) -> None:
    name = unique_name("pinned")
    folder = folder_of(tmp_path, cron_files())
    plain = deploy(admin, folder, name)
    (folder / "requirements.txt").write_text("baytiny==1.0\n")
    pinned = deploy(admin, folder, name)
    assert pinned["status"] == "ready", pinned["build_log"]
    assert pinned["requirements_digest"] != plain["requirements_digest"]
    assert "Successfully installed baytiny-1.0" in pinned["build_log"]
    assert environment_of(deploys, pinned).is_dir()
    assert environment_of(deploys, plain).is_dir()

    (folder / "requirements.txt").write_text("baytiny==9.9\n")
    failed = deploy(admin, folder, name)
    assert failed["status"] == "failed"
    assert failed["active"] is False
    assert "No matching distribution found for baytiny==9.9" in failed["build_log"]
    assert not environment_of(deploys, failed).exists()
    alert = wait_for_alert(alert_receiver, name)
    assert alert["event"] == "build.failed"
    assert alert["version"]["version"] == 3
    assert any("baytiny==9.9" in line for line in alert["log_tail"])
    shown = admin.get(f"/api/v1/deployments/{name}").json()
    assert shown["active_version"] == 2
    assert [(v["version"], v["status"]) for v in shown["versions"]] == [
        (3, "failed"),
        (2, "ready"),
        (1, "ready"),
    ]


def test_a_webhook_is_named_by_its_sub_domain_and_served_under_the_domain(
    admin: httpx.Client, tmp_path: Path
) -> None:
    name = unique_name("lookup")
    folder = folder_of(
        tmp_path,
        {
            "webhook.json": f'{{"sub_domain": "{name}", "script_to_run": "hook.py"}}',
            "hook.py": "",
            "README.md": "# Lookup\n",
        },
    )
    version = deploy(admin, folder)
    assert (version["name"], version["kind"], version["status"]) == (name, "webhook", "ready")
    shown = admin.get(f"/api/v1/deployments/{name}").json()
    assert shown["domain_url"] == f"https://{name}.{DOMAIN}"
    mismatch = upload(admin, build_bundle(folder).data, "another_name")
    assert_problem(mismatch, 400, f"names this deployment {name!r}")


# Bad input


def test_an_upload_that_is_not_a_tar_gz_is_a_400_naming_the_bundle(admin: httpx.Client) -> None:
    body = assert_problem(upload(admin, b"just some text", "notatar"), 400, "not a usable bundle")
    assert body["errors"][0]["loc"] == ["body", "bundle"]
    missing = admin.post("/api/v1/deployments", data={"name": "nobundle"})
    assert missing.status_code == 400


def test_a_hostile_tarball_is_refused_and_writes_nothing(
    deploys: Server, admin: httpx.Client
) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as archive:
        for member_name in ("README.md", "../../escaped.txt"):
            content = b"# gotcha\n"
            entry = tarfile.TarInfo(member_name)
            entry.size = len(content)
            archive.addfile(entry, io.BytesIO(content))
    assert_problem(upload(admin, raw.getvalue(), "hostile"), 400, "climbs out of the bundle")
    link = io.BytesIO()
    with tarfile.open(fileobj=link, mode="w:gz") as archive:
        entry = tarfile.TarInfo("README.md")
        entry.type, entry.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(entry)
    assert_problem(upload(admin, link.getvalue(), "hostile"), 400, "outside the bundle")
    runtime = deploys.home / "runtime"
    assert not list(runtime.rglob("escaped.txt"))
    assert not (deploys.home / "escaped.txt").exists()
    assert list((runtime / "uploads").iterdir()) == []


def test_a_folder_without_a_readme_is_refused_with_the_fix(
    admin: httpx.Client, tmp_path: Path
) -> None:
    files = cron_files()
    del files["README.md"]
    answer = upload(admin, build_bundle(folder_of(tmp_path, files)).data, "undocumented")
    body = assert_problem(answer, 400, "README.md")
    [error] = body["errors"]
    assert error["file"] == "README.md"
    assert "documentation is required" in error["msg"]
    assert "write README.md" in error["fix"]
    assert admin.get("/api/v1/deployments/undocumented").status_code == 404


def test_the_articles_comma_less_server_config_gets_its_line_and_column(
    admin: httpx.Client, tmp_path: Path
) -> None:
    article = (
        "# server_deployment.json\n"
        "{\n"
        '"sub_domain" : "my_flask_server"\n'
        '"build command" : "pip install -r requirements.txt",\n'
        '"start command" : "flask run --port 8080 --host 0.0.0.0",\n'
        '"port" : 8080\n'
        "}\n"
    )
    folder = folder_of(tmp_path, {"server_deployment.json": article, "README.md": "# App\n"})
    body = assert_problem(upload(admin, build_bundle(folder).data), 400, "missing comma")
    [error] = body["errors"]
    assert (error["file"], error["line"], error["column"]) == ("server_deployment.json", 3, 33)
    assert error["fix"] == "add ',' at the end of line 3"


def test_the_articles_impossible_cron_line_names_the_field_and_a_fix(
    admin: httpx.Client, tmp_path: Path
) -> None:
    article = (
        "# cron.json\n"
        "{\n"
        '"cron_frequency" : "0 0 0 0 0", # cron syntax\n'
        '"script_to_run" : "instagram_followers_to_slack.py"\n'
        "}\n"
    )
    folder = folder_of(
        tmp_path,
        {
            "cron.json": article,
            "instagram_followers_to_slack.py": "",
            "README.md": "# Followers\n",
        },
    )
    body = assert_problem(upload(admin, build_bundle(folder).data, "followers"), 400)
    [error] = body["errors"]
    assert (error["file"], error["field"], error["line"], error["column"]) == (
        "cron.json",
        "cron_frequency",
        3,
        20,
    )
    assert "day of month (field 3): 0 is out of range 1-31" in error["msg"]
    assert "'0 0 * * 0'" in error["fix"]


def test_a_code_service_cannot_take_a_name_the_platform_routes_itself(
    admin: httpx.Client, tmp_path: Path
) -> None:
    folder = folder_of(
        tmp_path,
        {
            "service.json": '{"name": "docs", "kind": "code", "description": "Docs", '
            '"start command": "python service.py"}',
            "service.py": "print('serving')\n",
            "README.md": "# Docs\n",
        },
    )
    assert_problem(upload(admin, build_bundle(folder).data), 400, "'docs' is reserved")


def test_a_code_service_needing_a_secret_it_may_not_have_is_refused_naming_the_fix(
    admin: httpx.Client, tmp_path: Path
) -> None:
    folder = folder_of(
        tmp_path,
        {
            "service.json": '{"name": "crm_code", "kind": "code", "description": "CRM", '
            '"start command": "python service.py", "secrets": ["CRM_TOKEN", "CRM_OTHER"]}',
            "service.py": "print('serving')\n",
            "README.md": "# CRM\n",
        },
    )
    stored = admin.put("/api/v1/secrets/CRM_OTHER", json={"value": "x", "allow": []})
    assert stored.status_code == 200, stored.text
    problem = assert_problem(
        upload(admin, build_bundle(folder).data),
        400,
        "bay secrets set CRM_TOKEN --allow service:crm_code",
    )
    assert "bay secrets allow CRM_OTHER service:crm_code" in problem["detail"]
    assert admin.get("/api/v1/deployments/crm_code").status_code == 404


def test_an_upload_over_the_body_limit_is_a_413(admin: httpx.Client) -> None:
    answer = upload(admin, os.urandom(11 * 1024 * 1024), "huge")
    assert_problem(answer, 413)


def test_deploying_needs_a_key(deploys: Server, tmp_path: Path) -> None:
    with deploys.client() as anonymous:
        answer = upload(anonymous, build_bundle(folder_of(tmp_path, cron_files())).data, "x")
    assert answer.status_code == 401


# Who may do what


def test_owners_manage_their_own_and_a_manage_grant_lets_others_in(
    deploys: Server, admin: httpx.Client, tmp_path: Path
) -> None:
    owner_email, owner_key = deploys.new_user()
    other_email, other_key = deploys.new_user()
    name = unique_name("owned")
    folder = folder_of(tmp_path, cron_files())
    with deploys.client(owner_key) as owner, deploys.client(other_key) as other:
        assert deploy(owner, folder, name)["status"] == "ready"
        assert owner.get(f"/api/v1/deployments/{name}").json()["owner"] == owner_email

        refused = upload(other, build_bundle(folder).data, name)
        body = assert_problem(refused, 403, f"manage on deployment:{name}")
        assert owner_email in body["detail"]
        event = find_event(admin, refused.headers["x-request-id"], outcome="denied")
        assert (event["action"], event["resource"]) == ("deployment.create", f"deployment:{name}")
        assert_problem(other.get(f"/api/v1/deployments/{name}"), 403)
        assert_problem(other.post(f"/api/v1/deployments/{name}/rollback"), 403)
        assert_problem(other.delete(f"/api/v1/deployments/{name}"), 403)
        assert name not in names(other)
        assert name in names(owner)
        assert name in names(admin)

        granted = admin.post(
            "/api/v1/grants",
            json={
                "principal": f"user:{other_email}",
                "resource": f"deployment:{name}",
                "actions": ["manage"],
            },
        )
        assert granted.status_code == 201, granted.text
        accepted = retry_until_allowed(lambda: upload(other, build_bundle(folder).data, name))
        assert accepted.json()["version"] == 2
        assert accepted.json()["created"] is False
        assert name in names(other)
        assert wait_for_build(other, name, 2)["created_by"] == other_email
        # Ownership stays with whoever created it.
        assert other.get(f"/api/v1/deployments/{name}").json()["owner"] == owner_email


def names(client: httpx.Client) -> list[str]:
    listed = client.get("/api/v1/deployments", params={"limit": 500})
    assert listed.status_code == 200, listed.text
    return [item["name"] for item in listed.json()["data"]]


def retry_until_allowed(call: Callable[[], httpx.Response]) -> httpx.Response:
    """Grants reach the authorizer's cache within seconds."""
    deadline = time.monotonic() + 10
    while True:
        answer = call()
        if answer.status_code != 403 or time.monotonic() > deadline:
            assert answer.status_code == 202, answer.text
            return answer
        time.sleep(0.2)


def test_the_list_pages_by_name(admin: httpx.Client, tmp_path: Path) -> None:
    prefix = unique_name("paged")
    folder = folder_of(tmp_path, cron_files())
    for suffix in "abc":
        assert upload(admin, build_bundle(folder).data, f"{prefix}_{suffix}").status_code == 202
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = admin.get("/api/v1/deployments", params=params).json()
        assert len(page["data"]) <= 2
        seen += [item["name"] for item in page["data"]]
        if page["next"] is None:
            break
        params["cursor"] = page["next"]
    assert [name for name in seen if name.startswith(prefix)] == [
        f"{prefix}_a",
        f"{prefix}_b",
        f"{prefix}_c",
    ]
    assert seen == sorted(seen)


# Rollback and delete


def test_rollback_to_the_previous_or_a_named_version_and_never_to_a_failed_one(
    admin: httpx.Client, tmp_path: Path
) -> None:
    name = unique_name("rolled")
    folder = folder_of(tmp_path, cron_files())
    deploy(admin, folder, name)
    deploy(admin, folder, name)
    (folder / "requirements.txt").write_text("baytiny==9.9\n")
    assert deploy(admin, folder, name)["status"] == "failed"

    back = admin.post(f"/api/v1/deployments/{name}/rollback")
    assert back.status_code == 200, back.text
    assert back.json()["active_version"] == 1
    event = find_event(admin, back.headers["x-request-id"], action="deployment.rollback")
    assert event["resource"] == f"deployment:{name}"
    assert (event["detail"]["version"], event["detail"]["previous"]) == (1, 2)

    forward = admin.post(f"/api/v1/deployments/{name}/rollback", json={"version": 2})
    assert forward.json()["active_version"] == 2
    assert_problem(
        admin.post(f"/api/v1/deployments/{name}/rollback", json={"version": 3}), 409, "failed"
    )
    assert_problem(admin.post(f"/api/v1/deployments/{name}/rollback", json={"version": 9}), 404)
    assert admin.get(f"/api/v1/deployments/{name}").json()["active_version"] == 2


def test_delete_removes_the_deployment_and_its_files(
    deploys: Server, admin: httpx.Client, tmp_path: Path
) -> None:
    name = unique_name("gone")
    deploy(admin, folder_of(tmp_path, cron_files()), name)
    source = deploys.home / "runtime" / "deployments" / name
    assert source.is_dir()
    deleted = admin.delete(f"/api/v1/deployments/{name}")
    assert deleted.status_code == 204
    event = find_event(admin, deleted.headers["x-request-id"], action="deployment.delete")
    assert event["resource"] == f"deployment:{name}"
    assert_problem(admin.get(f"/api/v1/deployments/{name}"), 404, "no deployment named")
    assert not source.exists()
    assert_problem(admin.delete(f"/api/v1/deployments/{name}"), 404)
    again = upload(admin, build_bundle(folder_of(tmp_path, cron_files())).data, name)
    assert again.json()["version"] == 1  # a new deployment of that name starts over
