"""Static dashboards over a real `bay serve`: a `server_deployment.json` with `static`
(and a build command that writes it) is built once per version and served by the gateway
itself, behind the same auth, grants, audit and routing as proxied servers.

The server and its helpers are the hosted servers' (`tests/gateway/test_apps.py`).
"""

from __future__ import annotations

import http.client
import json
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import Server, bay
from tests.gateway import test_apps as hosted
from tests.gateway.gateway_support import assert_problem, find_event, hammering
from tests.gateway.test_apps import (
    DOMAIN,
    WAIT_SECONDS,
    deploy_server,
    grant,
    serving,
    wait_for_state,
)
from tests.gateway.test_deployments_api import deploy, folder_of

# The hosted servers' module fixtures: a `bay serve` of this module's own, set up the same.
alert_receiver, apps, admin = hosted.alert_receiver, hosted.apps, hosted.admin

BUILD = """\
import os
from pathlib import Path

# Only this build writes dist/: what is served is its output, not the sources.
dist = Path("dist")
(dist / "reports").mkdir(parents=True)
(dist / "empty").mkdir()
page = Path("src/index.html").read_text().replace("{{BUILT}}", "built by the build command")
(dist / "index.html").write_text(page)
(dist / "app.js").write_text("console.log('dashboard');\\n")
(dist / "style.css").write_text("body { color: navy; }\\n")
(dist / "version.txt").write_text(os.environ["SITE_VERSION"])
(dist / "reports" / "index.html").write_text("<h1>reports</h1>")
# Links that lead out of the built folder: never followed.
os.symlink("/etc/passwd", dist / "passwd")
os.symlink("../server_deployment.json", dist / "config.json")
os.symlink("app.js", dist / "alias.js")  # inside: served
"""


def site_files(name: str, version: str = "1", **config: Any) -> dict[str, str]:
    document = {
        "sub_domain": name,
        "build command": "python build.py",
        "static": "dist",
        "env": {"SITE_VERSION": version},
        **config,
    }
    return {
        "server_deployment.json": json.dumps(document),
        "build.py": BUILD,
        "src/index.html": "<!doctype html><title>site</title><p>{{BUILT}}</p>",
        "README.md": f"# {name}\n",
    }


@pytest.fixture(scope="module")
def site(apps: Server, admin: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    name = f"site_{secrets.token_hex(3)}"
    deploy_server(admin, tmp_path_factory.mktemp("site"), site_files(name))
    return name


def raw_get(server: Server, path: str, key: str) -> tuple[int, bytes]:
    """A GET with the path exactly as written (httpx would resolve `..` itself)."""
    address = urlsplit(server.url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=30)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.putheader("Authorization", f"Bearer {key}")
        connection.endheaders()
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


# --- serving ----------------------------------------------------------------------------------


def test_a_static_dashboard_is_served_by_path_and_by_host(admin: httpx.Client, site: str) -> None:
    by_path = admin.get(f"/apps/{site}/")
    by_host = admin.get("/", headers={"Host": f"{site}.{DOMAIN}"})
    script = admin.get(f"/apps/{site}/app.js")
    style = admin.get("/style.css", headers={"Host": f"{site}.{DOMAIN}"})
    bare = admin.get(f"/apps/{site}")
    folder = admin.get(f"/apps/{site}/reports")
    report = admin.get(f"/apps/{site}/reports/")
    for answer in (by_path, by_host, script, style, report):
        assert answer.status_code == 200, answer.text
    assert by_path.headers["content-type"].startswith("text/html")
    assert by_path.text == by_host.text
    assert "javascript" in script.headers["content-type"]
    assert style.headers["content-type"].startswith("text/css")
    assert (bare.status_code, bare.headers["location"]) == (307, f"/apps/{site}/")
    assert folder.status_code in (307, 302)
    assert urlsplit(folder.headers["location"]).path == f"/apps/{site}/reports/"
    assert report.text == "<h1>reports</h1>"
    shown = admin.get(f"/api/v1/deployments/{site}").json()["server"]
    assert (shown["state"], shown["version"], shown["pid"], shown["port"]) == (
        "running",
        1,
        None,
        None,
    )


def test_what_is_served_is_the_build_commands_output(admin: httpx.Client, site: str) -> None:
    page = admin.get(f"/apps/{site}/")
    assert "built by the build command" in page.text
    assert "{{BUILT}}" not in page.text
    assert_problem(admin.get(f"/apps/{site}/src/index.html"), 404)  # the sources are not
    assert_problem(admin.get(f"/apps/{site}/build.py"), 404)
    build_log = admin.get(f"/api/v1/deployments/{site}/versions/1").json()["build_log"]
    assert "running the build command: python build.py" in build_log


def test_files_revalidate_with_etags_and_answer_head(admin: httpx.Client, site: str) -> None:
    first = admin.get(f"/apps/{site}/app.js")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    again = admin.get(f"/apps/{site}/app.js", headers={"If-None-Match": etag})
    since = admin.get(f"/apps/{site}/app.js", headers={"If-Modified-Since": modified})
    head = admin.head(f"/apps/{site}/app.js")
    assert (again.status_code, again.content) == (304, b"")
    assert since.status_code == 304
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(first.content))
    assert head.headers["etag"] == etag


def test_a_missing_file_is_a_404_problem_and_folders_are_not_listed(
    admin: httpx.Client, site: str
) -> None:
    missing = assert_problem(admin.get(f"/apps/{site}/nope.txt"), 404, "nope.txt")
    assert "/" + "runtime" not in missing["detail"]  # where the files are is not said
    assert_problem(admin.get(f"/apps/{site}/empty/"), 404)
    posted = assert_problem(admin.post(f"/apps/{site}/", content=b"x"), 405)
    assert "static site" in posted["detail"]


# --- who may see it ------------------------------------------------------------------------------


def test_a_caller_without_the_grant_gets_403_audited_and_with_it_the_files(
    apps: Server, admin: httpx.Client, site: str
) -> None:
    email, key = apps.new_user()
    with apps.client(key) as client:
        refused = client.get(f"/apps/{site}/")
        with apps.client() as anonymous:
            unknown = anonymous.get(f"/apps/{site}/app.js")
        assert_problem(refused, 403, f"invoke` on `app:{site}`")
        assert_problem(unknown, 401)
        event = find_event(admin, refused.headers["x-request-id"], resource=f"app:{site}")
        assert (event["action"], event["outcome"], event["status"]) == (
            "app.invoke",
            "denied",
            403,
        )
        grant(admin, email, site)
        allowed = client.get(f"/apps/{site}/")
    assert allowed.status_code == 200, allowed.text
    event = find_event(admin, allowed.headers["x-request-id"], resource=f"app:{site}")
    assert (event["actor"], event["outcome"], event["status"]) == (email, "allowed", 200)


def test_a_public_dashboard_needs_no_key(apps: Server, admin: httpx.Client, tmp_path: Path) -> None:
    name = f"open_{secrets.token_hex(3)}"
    deploy_server(admin, tmp_path, site_files(name, auth="public"))
    with apps.client() as client:
        page = client.get(f"/apps/{name}/")
        by_host = client.get("/version.txt", headers={"Host": f"{name}.{DOMAIN}"})
    assert page.status_code == 200, page.text
    assert by_host.text == "1"


# --- nothing outside the folder -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/../../../../../../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/%2E%2E/server_deployment.json",
        "/../server_deployment.json",
        "/reports/../../build.py",
        "/passwd",
        "/config.json",
        "/%00",
    ],
)
def test_paths_that_leave_the_folder_leak_nothing(
    apps: Server, admin: httpx.Client, site: str, path: str
) -> None:
    status, body = raw_get(apps, f"/apps/{site}{path}", apps.admin_key)
    assert status in (400, 404), body
    assert status == 400 or b"has no file" in body  # refused by the site, not routed elsewhere
    assert b"root:" not in body
    assert b"sub_domain" not in body
    assert b"os.symlink" not in body


def test_a_link_inside_the_folder_is_served(admin: httpx.Client, site: str) -> None:
    assert admin.get(f"/apps/{site}/alias.js").text == "console.log('dashboard');\n"


# --- versions -----------------------------------------------------------------------------------


def test_a_redeploy_switches_atomically(apps: Server, admin: httpx.Client, tmp_path: Path) -> None:
    name = f"swap_{secrets.token_hex(3)}"
    deploy_server(admin, tmp_path, site_files(name, "1"))
    with hammering(apps, f"/apps/{name}/version.txt", lambda answer: answer.text) as hit:
        deploy_server(admin, tmp_path, site_files(name, "2"))
        hit.wait_for("2", within=WAIT_SECONDS)
    assert hit.versions == {"1", "2"}
    assert len(hit.statuses) > 10
    assert hit.failures() == []


def test_a_static_folder_the_build_did_not_write_fails_the_version(
    admin: httpx.Client, tmp_path: Path
) -> None:
    name = f"unbuilt_{secrets.token_hex(3)}"
    files = {
        "server_deployment.json": json.dumps({"sub_domain": name, "static": "dist"}),
        "README.md": "# Unbuilt\n",
    }
    version = deploy(admin, folder_of(tmp_path, files))
    assert version["status"] == "failed"
    assert "the static folder dist/ is not there after the build" in version["build_log"]


def test_the_dashboard_scaffold_deploys_as_is(
    apps: Server, admin: httpx.Client, tmp_path: Path
) -> None:
    name = f"board_{secrets.token_hex(3)}"
    folder = tmp_path / name
    made = bay("new", "dashboard", name, "--dir", str(folder), env=apps.env)
    assert made.returncode == 0, made.stderr
    assert "npm run build" in (folder / "README.md").read_text()
    as_admin = {**apps.env, "BAY_URL": apps.url, "BAY_API_KEY": apps.admin_key}
    deployed = bay("deploy", str(folder), env=as_admin)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert f"/apps/{name}/" in deployed.stdout
    wait_for_state(admin, name, serving(1))
    email, key = apps.new_user()
    grant(admin, email, name)
    with apps.client(key) as client:
        page = client.get(f"/apps/{name}/")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert f"<h1>{name}</h1>" in page.text
    assert "/api/v1/me" in page.text
