"""Hosted servers over a real `bay serve`: a Flask app and a FastAPI app (under uvicorn),
deployed from folders, supervised as real processes and reached through the gateway's
identity-aware proxy at `/apps/{name}/` and at host `{name}.{BAY_DOMAIN}`.

pip installs Flask, FastAPI and uvicorn offline from `.venv/wheels` (`make install`
downloads them), never from an index.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as websocket_connect

from servicebay.sdk.identity import verify_identity
from tests.conftest import Server, bay, offline_wheels
from tests.gateway.gateway_support import assert_problem, find_event, hammering, wait_for
from tests.gateway.test_deployments_api import (
    ALERTS_PATH,
    deploy,
    folder_of,
    wait_for_alert,
)
from tests.runtime.test_alerts import Receiver

DOMAIN = "bay.test"
WAIT_SECONDS = 90

FLASK_APP = """\
import os, time
from flask import Flask, Response, jsonify, request
from servicebay.sdk.identity import identity_key_from_environment, verify_identity

app = Flask(__name__)
SEEN = []


@app.before_request
def remember():
    SEEN.append({"path": request.full_path, "headers": dict(request.headers)})


@app.get("/healthz")
def healthz():
    return {"ok": True}


@app.route("/echo", methods=["GET", "POST"])
def echo():
    return jsonify(
        version=os.environ["APP_VERSION"],
        path=request.path,
        args=request.args,
        headers=dict(request.headers),
        cookies=request.cookies,
        body=request.get_data(as_text=True),
    )


@app.get("/whoami")
def whoami():
    caller = verify_identity(
        request.headers.get("X-Bay-Identity", ""), identity_key_from_environment(),
        service=os.environ["APP_NAME"],
    )
    return {"user": caller.user, "teams": list(caller.teams)}


@app.get("/env")
def env():
    return dict(os.environ)


@app.get("/seen")
def seen():
    return jsonify(SEEN)


@app.get("/cookies")
def cookies():
    answer = jsonify(set=True)
    answer.set_cookie("bay_session", "planted")
    answer.set_cookie("theme", "dark")
    return answer


@app.get("/pid")
def pid():
    return {"pid": os.getpid()}


@app.get("/stream")
def stream():
    def lines():
        for number in range(5):
            yield f"line {number}\\n"
            time.sleep(0.05)
    return Response(lines(), mimetype="text/plain")


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ["PORT"]), threaded=True)
"""

FASTAPI_APP = """\
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import StreamingResponse

app = FastAPI()


@app.get("/healthz")
async def healthz():
    return {"ok": True}


@app.get("/hello")
async def hello(request: Request):
    return {"kind": "fastapi", "prefix": request.headers.get("x-forwarded-prefix"),
            "user": request.headers.get("x-bay-user")}


@app.post("/count")
async def count(request: Request):
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return {"bytes": size}


@app.get("/stream")
async def stream():
    async def parts():
        for number in range(3):
            yield f"part {number}\\n".encode()
    return StreamingResponse(parts(), media_type="text/plain")


@app.websocket("/ws")
async def echo(socket: WebSocket):
    await socket.accept()
    while True:
        text = await socket.receive_text()
        await socket.send_text(f"echo: {text}")
"""


def flask_files(name: str, version: str = "1", **config: Any) -> dict[str, str]:
    document = {
        "sub_domain": name,
        "start command": "python app.py",
        "health_path": "/healthz",
        "env": {"APP_VERSION": version, "APP_NAME": name},
        **config,
    }
    return {
        "server_deployment.json": json.dumps(document),
        "app.py": FLASK_APP,
        "requirements.txt": "flask\n",
        "README.md": f"# {name}\n",
    }


@pytest.fixture(scope="module")
def alert_receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


@pytest.fixture(scope="module")
def apps(launch: Callable[..., Server], alert_receiver: Receiver) -> Iterator[Server]:
    """A server of this module's own: its home is passable by the run users (the tests may
    run as root), pip installs from the downloaded wheels, alerts go to the receiver."""
    wheels = offline_wheels("flask", "fastapi", "uvicorn")
    root = Path(tempfile.mkdtemp(prefix="bay-apps-"))
    root.chmod(0o755)
    settings = {
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheels),
        "PIP_CONFIG_FILE": os.devnull,
        "BAY_DOMAIN": DOMAIN,
        "BAY_AUTH_CACHE_SECONDS": "1",
        "BAY_ALERT_WEBHOOK_URL": alert_receiver.url + ALERTS_PATH,
    }
    server = launch(root / "home", settings=settings)
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def admin(apps: Server) -> Iterator[httpx.Client]:
    with apps.admin() as client:
        yield client


def wait_for_state(
    client: httpx.Client, name: str, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_SECONDS
    shown: dict[str, Any] = {}
    while time.monotonic() < deadline:
        shown = client.get(f"/api/v1/deployments/{name}").json()
        if shown.get("server") and done(shown["server"]):
            return shown
        time.sleep(0.2)
    logs = client.get(f"/api/v1/deployments/{name}/logs", headers={"Accept": "text/plain"})
    raise AssertionError(f"{name} never got there: {shown}\n{logs.text}")


def serving(version: int) -> Callable[[dict[str, Any]], bool]:
    return lambda server: server["state"] == "running" and server["version"] == version


def deploy_server(client: httpx.Client, parent: Path, files: dict[str, str]) -> dict[str, Any]:
    version = deploy(client, folder_of(parent, files))
    assert version["status"] == "ready", version["build_log"]
    return wait_for_state(client, version["name"], serving(version["version"]))


@pytest.fixture(scope="module")
def flask_app(apps: Server, admin: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    name = f"flask_{secrets.token_hex(3)}"
    deploy_server(admin, tmp_path_factory.mktemp("flask"), flask_files(name))
    return name


@pytest.fixture(scope="module")
def fastapi_app(apps: Server, admin: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    name = f"fastapi_{secrets.token_hex(3)}"
    files = {
        "server_deployment.json": json.dumps(
            {
                "sub_domain": name,
                "start_command": "uvicorn main:app --host 127.0.0.1 --port $PORT",
                "health_path": "/healthz",
                "auth": "public",
            }
        ),
        "main.py": FASTAPI_APP,
        "requirements.txt": "fastapi\nuvicorn\nwebsockets\n",
        "README.md": f"# {name}\n",
    }
    deploy_server(admin, tmp_path_factory.mktemp("fastapi"), files)
    return name


def grant(admin: httpx.Client, email: str, name: str) -> None:
    answer = admin.post(
        "/api/v1/grants",
        json={"principal": f"user:{email}", "resource": f"app:{name}", "actions": ["invoke"]},
    )
    assert answer.status_code == 201, answer.text


# --- answering through both routing styles --------------------------------------------------


def test_a_flask_app_answers_at_its_path_and_its_host(apps: Server, flask_app: str) -> None:
    with apps.admin() as client:
        by_path = client.get(f"/apps/{flask_app}/echo", params={"q": "1"})
        by_host = client.get("/echo", headers={"Host": f"{flask_app}.{DOMAIN}"})
        bare = client.get(f"/apps/{flask_app}")
    assert by_path.status_code == 200, by_path.text
    assert by_path.json()["path"] == "/echo"
    assert by_path.json()["args"] == {"q": "1"}
    headers = by_path.json()["headers"]
    assert headers["X-Forwarded-Prefix"] == f"/apps/{flask_app}"
    assert headers["X-Forwarded-Proto"] == "http"
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Bay-Request-Id"] == by_path.headers["x-request-id"]
    assert by_host.status_code == 200, by_host.text
    assert by_host.json()["path"] == "/echo"
    assert "X-Forwarded-Prefix" not in by_host.json()["headers"]
    assert by_host.json()["headers"]["X-Forwarded-Host"] == f"{flask_app}.{DOMAIN}"
    assert bare.status_code == 307
    assert bare.headers["location"] == f"/apps/{flask_app}/"


def test_a_fastapi_app_answers_at_its_path_and_its_host(apps: Server, fastapi_app: str) -> None:
    with apps.client() as client:  # public: no key needed
        by_path = client.get(f"/apps/{fastapi_app}/hello")
        by_host = client.get("/hello", headers={"Host": f"{fastapi_app}.{DOMAIN}"})
    assert by_path.status_code == 200, by_path.text
    assert by_path.json() == {"kind": "fastapi", "prefix": f"/apps/{fastapi_app}", "user": None}
    assert by_host.status_code == 200, by_host.text
    assert by_host.json()["kind"] == "fastapi"


def test_bodies_stream_both_ways(apps: Server, flask_app: str, fastapi_app: str) -> None:
    sent = 3 * 1024 * 1024

    def chunks() -> Iterator[bytes]:
        for _ in range(sent // 65536):
            yield b"x" * 65536

    with apps.admin() as client:
        counted = client.post(f"/apps/{fastapi_app}/count", content=chunks())
        with client.stream("GET", f"/apps/{flask_app}/stream") as streamed:
            assert streamed.status_code == 200
            lines = list(streamed.iter_lines())
        parts = client.get(f"/apps/{fastapi_app}/stream")
    assert counted.status_code == 200, counted.text
    assert counted.json() == {"bytes": sent}
    assert lines == [f"line {number}" for number in range(5)]
    assert parts.text == "part 0\npart 1\npart 2\n"


def test_a_websocket_needs_a_key_like_any_call(apps: Server, flask_app: str) -> None:
    url = apps.url.replace("http://", "ws://") + f"/apps/{flask_app}/ws"
    with pytest.raises(InvalidStatus) as refused:
        websocket_connect(url, open_timeout=10)
    assert refused.value.response.status_code == 403


def test_a_websocket_passes_through_and_is_audited(
    apps: Server, admin: httpx.Client, fastapi_app: str
) -> None:
    url = apps.url.replace("http://", "ws://") + f"/apps/{fastapi_app}/ws"
    request_id = f"websocket-{secrets.token_hex(6)}"
    headers = {"X-Request-ID": request_id}
    with websocket_connect(url, open_timeout=10, additional_headers=headers) as socket:
        for text in ("one", "two"):
            socket.send(text)
            assert socket.recv(timeout=10) == f"echo: {text}"
    deadline = time.monotonic() + WAIT_SECONDS  # written when the socket closes
    while time.monotonic() < deadline:
        listed = admin.get("/api/v1/audit", params={"resource": f"app:{fastapi_app}"}).json()
        found = [event for event in listed["data"] if event["request_id"] == request_id]
        if found:
            break
        time.sleep(0.2)
    assert found, listed
    assert (found[0]["action"], found[0]["method"], found[0]["outcome"]) == (
        "app.invoke",
        "WEBSOCKET",
        "allowed",
    )


# --- who may call, and what the app learns ----------------------------------------------------


def test_a_caller_without_the_grant_is_refused_and_the_app_never_sees_it(
    apps: Server, admin: httpx.Client, flask_app: str
) -> None:
    _, key = apps.new_user()
    marker = secrets.token_hex(8)
    with apps.client(key) as client:
        refused = client.get(f"/apps/{flask_app}/echo", params={"marker": marker})
    with apps.client() as client:
        anonymous = client.get(f"/apps/{flask_app}/echo", params={"marker": marker})
    assert_problem(refused, 403, f"invoke` on `app:{flask_app}`")
    assert_problem(anonymous, 401)
    event = find_event(admin, refused.headers["x-request-id"], resource=f"app:{flask_app}")
    assert (event["action"], event["outcome"], event["status"]) == ("app.invoke", "denied", 403)
    seen = admin.get(f"/apps/{flask_app}/seen").json()
    assert marker not in json.dumps(seen)


def test_the_app_sees_who_calls_and_can_verify_it(
    apps: Server, admin: httpx.Client, flask_app: str
) -> None:
    email, key = apps.new_user(teams=["marketing", "sales"])
    grant(admin, email, flask_app)
    with apps.client(key) as client:
        whoami = client.get(f"/apps/{flask_app}/whoami")
        echoed = client.get(f"/apps/{flask_app}/echo")
    assert whoami.status_code == 200, whoami.text
    assert whoami.json() == {"user": email, "teams": ["marketing", "sales"]}
    headers = echoed.json()["headers"]
    assert headers["X-Bay-User"] == email
    assert headers["X-Bay-Teams"] == "marketing,sales"
    identity_key = admin.get(f"/apps/{flask_app}/env").json()["BAY_IDENTITY_KEY"]
    verified = verify_identity(headers["X-Bay-Identity"], identity_key.encode(), service=flask_app)
    assert verified.user == email
    event = find_event(admin, echoed.headers["x-request-id"], resource=f"app:{flask_app}")
    assert (event["actor"], event["outcome"], event["status"]) == (email, "allowed", 200)


def test_the_callers_key_and_platform_cookies_never_reach_the_app(
    apps: Server, admin: httpx.Client, flask_app: str
) -> None:
    email, key = apps.new_user()
    grant(admin, email, flask_app)
    forged = "v1.forged.signature"
    for headers, params in (
        ({"Authorization": f"Bearer {key}"}, {}),
        ({"X-API-Key": key}, {}),
        ({}, {"api_key": key}),
    ):
        with apps.client() as client:
            answer = client.get(
                f"/apps/{flask_app}/echo",
                params={**params, "keep": "me"},
                headers={
                    **headers,
                    "Cookie": "bay_session=platform; theme=dark",
                    "X-Bay-User": "forged@example.com",
                    "X-Bay-Identity": forged,
                },
            )
        assert answer.status_code == 200, answer.text
        seen = answer.json()
        assert key not in json.dumps(seen)
        assert seen["args"] == {"keep": "me"}
        assert seen["cookies"] == {"theme": "dark"}
        assert seen["headers"]["X-Bay-User"] == email
        assert seen["headers"]["X-Bay-Identity"] != forged


def test_an_app_cannot_set_the_platforms_cookies(admin: httpx.Client, flask_app: str) -> None:
    answer = admin.get(f"/apps/{flask_app}/cookies")
    assert answer.status_code == 200
    assert dict(answer.cookies) == {"theme": "dark"}


def test_the_server_environment_holds_no_platform_secret(
    apps: Server, admin: httpx.Client, flask_app: str
) -> None:
    environment = admin.get(f"/apps/{flask_app}/env").json()
    assert environment["PORT"].isdigit()
    assert environment["BAY_APP_PREFIX"] == f"/apps/{flask_app}"
    master_key = (apps.home / "master.key").read_text().strip()
    dumped = json.dumps(environment)
    for secret in (master_key, master_key.rstrip("="), apps.admin_key):
        assert secret not in dumped
    given = {"PATH", "LANG", "HOME", "TMPDIR", "PYTHONUNBUFFERED", "PYTHONPATH", "PORT"}
    given |= {"BAY_URL", "BAY_APP_PREFIX", "BAY_IDENTITY_KEY", "INTERNAL_API_KEY"}
    given |= {"APP_VERSION", "APP_NAME"}
    added = {"PWD", "SHLVL", "_", "WERKZEUG_SERVER_FD"}  # by the shell and Flask themselves
    assert set(environment) - given - added == set()


# --- supervision --------------------------------------------------------------------------------


def test_a_redeploy_under_continuous_requests_loses_none(
    apps: Server, admin: httpx.Client, tmp_path: Path
) -> None:
    name = f"steady_{secrets.token_hex(3)}"
    deploy_server(admin, tmp_path, flask_files(name, "1"))
    with hammering(apps, f"/apps/{name}/echo", lambda answer: answer.json()["version"]) as hit:
        deploy_server(admin, tmp_path, flask_files(name, "2"))
        hit.wait_for("2", within=WAIT_SECONDS)
        time.sleep(2)  # the old process is stopped meanwhile
    assert hit.versions == {"1", "2"}
    assert len(hit.statuses) > 20
    assert hit.failures() == []
    server = admin.get(f"/api/v1/deployments/{name}").json()["server"]
    assert (server["state"], server["version"]) == ("running", 2)


def test_a_killed_server_is_started_again(
    apps: Server, admin: httpx.Client, flask_app: str
) -> None:
    before = admin.get(f"/api/v1/deployments/{flask_app}").json()["server"]
    pid = admin.get(f"/apps/{flask_app}/pid").json()["pid"]
    old_key = admin.get(f"/apps/{flask_app}/env").json()["INTERNAL_API_KEY"]
    with apps.client(old_key) as client:  # the server acts as its owner while it runs
        assert client.get("/api/v1/me").json()["email"] == apps.admin_email
    os.kill(pid, signal.SIGKILL)
    after = wait_for_state(
        admin,
        flask_app,
        lambda server: server["state"] == "running" and server["restarts"] > before["restarts"],
    )
    assert after["server"]["pid"] != before["pid"]
    assert admin.get(f"/apps/{flask_app}/pid").json()["pid"] != pid
    new_key = admin.get(f"/apps/{flask_app}/env").json()["INTERNAL_API_KEY"]
    with apps.client(old_key) as client:  # the killed process's key went with it
        assert_problem(client.get("/api/v1/me"), 401)
    with apps.client(new_key) as client:
        assert client.get("/api/v1/me").status_code == 200
    deadline = time.monotonic() + WAIT_SECONDS  # the log is stored every half second
    while time.monotonic() < deadline:
        logs = admin.get(
            f"/api/v1/deployments/{flask_app}/logs", headers={"Accept": "text/plain"}
        ).text
        if "killed by SIGKILL" in logs or "exited with code" in logs:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the crash is not in the log:\n{logs}")


def test_a_server_that_crashes_at_start_stops_retrying_alerts_and_says_why(
    apps: Server, admin: httpx.Client, alert_receiver: Receiver, tmp_path: Path
) -> None:
    name = f"crashy_{secrets.token_hex(3)}"
    files = {
        "server_deployment.json": json.dumps(
            {"sub_domain": name, "start_command": "python crash.py"}
        ),
        "crash.py": "import sys\nprint('cannot connect to the warehouse')\nsys.exit(3)\n",
        "README.md": "# Crashes\n",
    }
    version = deploy(admin, folder_of(tmp_path, files))
    assert version["status"] == "ready", version["build_log"]
    shown = wait_for_state(admin, name, lambda server: server["state"] == "crash_looping")
    reason = shown["server"]["reason"]
    assert "crash loop" in reason
    assert "exited with code 3" in reason
    alert = wait_for_alert(alert_receiver, name)
    assert alert["event"] == "server.crash_looping"
    assert any("cannot connect to the warehouse" in line for line in alert["log_tail"])
    with apps.admin() as client:
        down = client.get(f"/apps/{name}/")
    assert_problem(down, 503, "crash_looping")


def test_a_literal_port_that_is_taken_fails_the_deploy_suggesting_port(
    admin: httpx.Client, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        name = f"fixed_{secrets.token_hex(3)}"
        files = {
            "server_deployment.json": json.dumps(
                {"sub_domain": name, "start_command": "python -m http.server 8080", "port": port}
            ),
            "README.md": "# Fixed\n",
        }
        version = deploy(admin, folder_of(tmp_path, files))
    assert version["status"] == "failed"
    assert f"port {port}" in version["build_log"]
    assert "$PORT" in version["build_log"]


def test_server_logs_are_kept_and_readable(
    apps: Server, admin: httpx.Client, flask_app: str
) -> None:
    def text_of(page: httpx.Response) -> str:
        return "".join(chunk["text"] for chunk in page.json()["chunks"])

    # The supervisor stores a process's lines in chunks, a moment after they are printed.
    page, _ = wait_for(
        lambda: admin.get(f"/api/v1/deployments/{flask_app}/logs"),
        lambda page: page.status_code != 200 or "is healthy" in text_of(page),
        within=WAIT_SECONDS,
    )
    assert page.status_code == 200, page.text
    assert "[servicebay] starting version 1" in text_of(page)
    assert "is healthy" in text_of(page)
    later = admin.get(
        f"/api/v1/deployments/{flask_app}/logs",
        params={"after": page.json()["chunks"][-1]["id"]},
    )
    assert all(chunk["id"] > page.json()["chunks"][-1]["id"] for chunk in later.json()["chunks"])


def test_a_deleted_server_stops_and_answers_404(
    apps: Server, admin: httpx.Client, tmp_path: Path
) -> None:
    name = f"gone_{secrets.token_hex(3)}"
    files = {
        "server_deployment.json": json.dumps(
            {"sub_domain": name, "start_command": "python -m http.server $PORT"}
        ),
        "README.md": "# Gone soon\n",
    }
    pid = deploy_server(admin, tmp_path, files)["server"]["pid"]
    assert admin.delete(f"/api/v1/deployments/{name}").status_code == 204
    deadline = time.monotonic() + WAIT_SECONDS
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists()
    assert_problem(admin.get(f"/apps/{name}/"), 404, f"no app {name!r}")


def test_the_server_scaffold_deploys_and_greets_its_caller(
    apps: Server, admin: httpx.Client, tmp_path: Path
) -> None:
    name = f"scaffold_{secrets.token_hex(3)}"
    folder = tmp_path / name
    made = bay("new", "server", name, "--dir", str(folder), env=apps.env)
    assert made.returncode == 0, made.stderr
    version = deploy(admin, folder)
    assert version["status"] == "ready", version["build_log"]
    wait_for_state(admin, name, serving(1))
    email, key = apps.new_user(teams=["marketing"])
    grant(admin, email, name)
    with apps.client(key) as client:
        greeted = client.get(f"/apps/{name}/")
    assert greeted.status_code == 200, greeted.text
    assert greeted.json() == {"hello": email, "teams": ["marketing"], "home": f"/apps/{name}/"}
