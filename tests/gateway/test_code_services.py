"""Code services over a real `bay serve`: folders with a `service.json` of kind `code`,
deployed, supervised as real processes with their allowed secrets, mounted at
`/{name}/...` behind per-endpoint grants, audit and signed identity, and documented in
`/docs` from the OpenAPI each version serves (or refused when an endpoint is undocumented).

The services here use the SDK's framework or the standard library only, so they build
without an index.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from servicebay.runtime.bundle import build_bundle
from servicebay.templates.catalog import builtin_template
from servicebay.templates.render import render, write
from tests.conftest import Server
from tests.gateway.code_support import (
    code_server,
    deploy_service,
    grant,
    serve_folders,
    store_secret,
    wait_until_mounted,
)
from tests.gateway.gateway_support import assert_problem, find_event, hammering
from tests.gateway.test_apps import serving, wait_for_state
from tests.gateway.test_deployments_api import deploy, folder_of, upload

TOKEN_VARIABLE = "RECORDER_TOKEN"

RECORDER = """\
import hashlib, os
from typing import Any
from servicebay.sdk import Identity, Service

app = Service(os.environ["SERVICE_NAME"], description="Remembers what it sees")
SEEN: list[dict[str, Any]] = []


def _token_digest() -> str | None:
    token = os.environ.get("RECORDER_TOKEN")
    return None if token is None else hashlib.sha256(token.encode()).hexdigest()


@app.get("/whoami")
def whoami(caller: Identity) -> dict[str, Any]:
    \"\"\"Who the gateway says is calling.\"\"\"
    SEEN.append({"endpoint": "whoami", "user": caller.user})
    return {"user": caller.user, "teams": list(caller.teams), "service": caller.service,
            "request_id": caller.request_id}


@app.post("/create_note", status=201)
def create_note(note: dict[str, Any], caller: Identity) -> dict[str, Any]:
    \"\"\"Keep a note.\"\"\"
    SEEN.append({"endpoint": "create_note", "user": caller.user, "note": note})
    return {"created": note, "by": caller.user}


@app.get("/note/{number}")
def get_note(number: int, caller: Identity) -> dict[str, Any]:
    \"\"\"One note, by number.\"\"\"
    SEEN.append({"endpoint": "note", "user": caller.user})
    return {"number": number}


@app.get("/environment")
def environment(caller: Identity) -> dict[str, Any]:
    \"\"\"The variables this process got (the secret's digest only, never its value).\"\"\"
    names = sorted(os.environ)
    return {"names": names, "token_sha256": _token_digest()}


@app.get("/seen")
def seen(caller: Identity) -> list[dict[str, Any]]:
    \"\"\"Every call that reached the service, in order.\"\"\"
    return SEEN


if __name__ == "__main__":
    app.run()
"""

PLAIN = """\
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DOCUMENT = open("openapi.json").read().encode()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = DOCUMENT if self.path == "/openapi.json" else json.dumps(
            {"hello": os.environ["GREETING"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def plain_files(
    name: str, greeting: str, *, described: bool, also: str | None = None
) -> dict[str, str]:
    """A standard-library HTTP server documenting itself from an `openapi.json` file;
    `also` documents one more (GET) path."""
    operation: dict[str, Any] = {"responses": {"200": {"description": "A greeting."}}}
    if described:
        operation["summary"] = "Say hello."
    paths = {"/hello": {"get": operation}}
    if also is not None:
        paths[also] = {"get": {**operation, "summary": "Say hello again."}}
    document = {"openapi": "3.1.0", "info": {"title": name, "version": "1"}, "paths": paths}
    return {
        "service.json": json.dumps(
            {
                "name": name,
                "kind": "code",
                "description": "Greets",
                "start command": "python server.py",
                "env": {"GREETING": greeting},
            }
        ),
        "server.py": PLAIN,
        "openapi.json": json.dumps(document),
        "README.md": f"# {name}\n",
    }


def recorder_files(name: str, *, secret: bool = True) -> dict[str, str]:
    document = {
        "name": name,
        "kind": "code",
        "description": "Remembers what it sees",
        "start command": "python service.py",
        "env": {"SERVICE_NAME": name},
        # The build prints its whole environment: the secret must not be in it.
        **({"secrets": [TOKEN_VARIABLE], "build command": "env"} if secret else {}),
    }
    return {
        "service.json": json.dumps(document),
        "service.py": RECORDER,
        "README.md": f"# {name}\n\nRemembers what it sees.\n",
    }


@pytest.fixture(scope="module")
def bay_server() -> Iterator[Server]:
    with code_server("bay-code-") as server:
        yield server


@pytest.fixture(scope="module")
def admin(bay_server: Server) -> Iterator[httpx.Client]:
    with bay_server.admin() as client:
        yield client


@pytest.fixture(scope="module")
def token() -> str:
    return f"tok-{secrets.token_hex(16)}"


@pytest.fixture(scope="module")
def recorder(
    bay_server: Server, admin: httpx.Client, token: str, tmp_path_factory: pytest.TempPathFactory
) -> str:
    name = f"recorder_{secrets.token_hex(3)}"
    store_secret(admin, TOKEN_VARIABLE, token, name)
    deploy_service(admin, tmp_path_factory.mktemp("recorder"), recorder_files(name))
    return name


# --- (a) deployed and supervised with its secrets ----------------------------------------------


def test_a_code_service_gets_its_secret_and_nothing_of_the_platform(
    bay_server: Server, admin: httpx.Client, recorder: str, token: str
) -> None:
    shown = admin.get(f"/api/v1/deployments/{recorder}").json()
    assert shown["kind"] == "service"
    assert shown["server"]["state"] == "running"
    assert shown["server"]["url"].endswith(f"/{recorder}/")
    environment = admin.get(f"/{recorder}/environment").json()
    assert environment["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
    # Exactly what docs/services/code.md lists, its config's `env` and its secret: no
    # master key, database URL, home or other variable of the platform's own.
    assert set(environment["names"]) == {
        *("PATH", "LANG", "HOME", "TMPDIR", "PYTHONUNBUFFERED", "PYTHONPATH"),
        *("PORT", "INTERNAL_API_KEY", "BAY_URL", "BAY_IDENTITY_KEY"),
        "SERVICE_NAME",
        TOKEN_VARIABLE,
        "PWD",  # set by the shell that runs the start command
    }


def test_the_secret_reaches_no_build_other_deployment_answer_log_or_audit_record(
    bay_server: Server, admin: httpx.Client, recorder: str, token: str, tmp_path: Path
) -> None:
    other = f"other_{secrets.token_hex(3)}"
    deploy_service(admin, tmp_path, recorder_files(other, secret=False))
    elsewhere = admin.get(f"/{other}/environment").json()
    assert elsewhere["token_sha256"] is None
    assert TOKEN_VARIABLE not in elsewhere["names"]
    build = admin.get(f"/api/v1/deployments/{recorder}/versions/1").json()["build_log"]
    assert "PATH=" in build  # the build command printed its environment
    texts = [
        admin.get(f"/api/v1/deployments/{recorder}/logs", headers={"Accept": "text/plain"}).text,
        admin.get(f"/api/v1/deployments/{recorder}/versions/1").text,
        admin.get(f"/api/v1/deployments/{recorder}").text,
        admin.get("/api/v1/audit", params={"limit": 500}).text,
        admin.get(f"/api/v1/secrets/{TOKEN_VARIABLE}").text,
        bay_server.log_text(),
    ]
    for text in texts:
        assert token not in text


# --- (b) mounted at /{name}/... behind per-endpoint grants ---------------------------------------


def test_only_an_admin_or_a_manager_of_the_service_may_create_a_code_service(
    bay_server: Server, admin: httpx.Client, token: str, tmp_path: Path
) -> None:
    """A new code service answers at /{name}/... and gets the secrets allowed for
    service:{name}: an analyst may not claim a name an admin set secrets aside for."""
    name = f"claimed_{secrets.token_hex(3)}"
    store_secret(admin, TOKEN_VARIABLE, token, name)
    email, key = bay_server.new_user()
    folder = folder_of(tmp_path, recorder_files(name))
    with bay_server.client(key) as analyst:
        refused = upload(analyst, build_bundle(folder).data)
        body = assert_problem(refused, 403, f"manage on service:{name}")
        assert f"bay grant user:{email} service:{name} manage" in body["detail"]
        assert admin.get(f"/api/v1/deployments/{name}").status_code == 404
        grant(admin, f"user:{email}", f"service:{name}", "manage")
        (shown,) = serve_folders(analyst, folder)
    assert shown["owner"] == email
    event = find_event(admin, refused.headers["x-request-id"], outcome="denied")
    assert event["actor"] == email


def test_a_caller_with_the_endpoint_grant_reaches_it_as_themselves(
    bay_server: Server, admin: httpx.Client, recorder: str
) -> None:
    email, key = bay_server.new_user(teams=["sales"])
    grant(admin, f"user:{email}", f"service:{recorder}/whoami", "read")
    with bay_server.client(key) as client:
        answer = client.get(f"/{recorder}/whoami", headers={"X-Bay-User": "forged@corp.com"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "user": email,
        "teams": ["sales"],
        "service": recorder,
        "request_id": answer.headers["x-request-id"],
    }
    event = find_event(admin, answer.headers["x-request-id"], resource=f"service:{recorder}/whoami")
    assert (event["action"], event["outcome"], event["actor"]) == ("service.read", "allowed", email)


def test_a_caller_without_the_grant_gets_403_and_the_service_never_sees_the_call(
    bay_server: Server, admin: httpx.Client, recorder: str
) -> None:
    email, key = bay_server.new_user()
    grant(admin, f"user:{email}", f"service:{recorder}/whoami", "read")  # not create_note
    with bay_server.client(key) as client:
        refused = client.post(f"/{recorder}/create_note", json={"text": "secret plan"})
        unknown = client.get(f"/{recorder}/no_such_endpoint")
        keyless = httpx.post(f"{bay_server.url}/{recorder}/create_note", json={"text": "x"})
    problem = assert_problem(refused, 403, f"`create` on `service:{recorder}/create_note`")
    assert "denied by default" in problem["detail"]
    assert_problem(unknown, 404)
    assert keyless.status_code == 401
    seen = admin.get(f"/{recorder}/seen").json()
    assert not [call for call in seen if call.get("user") == email]
    assert not [call for call in seen if call["endpoint"] == "create_note"]
    event = find_event(
        admin, refused.headers["x-request-id"], resource=f"service:{recorder}/create_note"
    )
    assert (event["action"], event["outcome"]) == ("service.create", "denied")


def test_actions_follow_the_method_and_the_key_never_reaches_the_service(
    bay_server: Server, admin: httpx.Client, recorder: str
) -> None:
    email, key = bay_server.new_user(teams=["notes"])
    grant(admin, "team:notes", f"service:{recorder}/create_note", "create")
    grant(admin, "team:notes", f"service:{recorder}/note", "read")
    with bay_server.client(key) as client:
        created = client.post(
            f"/{recorder}/create_note", params={"api_key": key}, json={"text": "hi"}
        )
        read = client.get(f"/{recorder}/note/7")
        wrong_method = client.delete(f"/{recorder}/note/7")
    assert created.status_code == 201, created.text
    assert created.json() == {"created": {"text": "hi"}, "by": email}
    assert read.json() == {"number": 7}
    assert_problem(wrong_method, 405)
    seen = admin.get(f"/{recorder}/seen").json()
    assert {"endpoint": "create_note", "user": email, "note": {"text": "hi"}} in seen
    assert key not in json.dumps(seen)


# --- (c) documented, or refused ----------------------------------------------------------------


def test_docs_list_every_endpoint_of_a_code_service_with_its_description(
    admin: httpx.Client, recorder: str
) -> None:
    document = admin.get("/openapi.json").json()
    paths = document["paths"]
    assert paths[f"/{recorder}/create_note"]["post"]["summary"] == "Keep a note."
    assert paths[f"/{recorder}/note/{{number}}"]["get"]["summary"] == "One note, by number."
    assert paths[f"/{recorder}/whoami"]["get"]["tags"] == [recorder]
    assert {"name": recorder, "description": "Remembers what it sees"} in document["tags"]
    own = admin.get(f"/{recorder}/openapi.json").json()
    assert f"/{recorder}/whoami" in own["paths"]


def test_an_undocumented_endpoint_refuses_the_version_and_the_previous_one_keeps_serving(
    admin: httpx.Client, tmp_path: Path
) -> None:
    name = f"plain_{secrets.token_hex(3)}"
    deploy_service(admin, tmp_path, plain_files(name, "v1", described=True))
    assert admin.get(f"/{name}/hello").json() == {"hello": "v1"}
    # It builds, starts and answers its health check; then its OpenAPI is read.
    refused = deploy_refused(admin, folder_of(tmp_path, plain_files(name, "v2", described=False)))
    assert "version 2 is refused" in refused["build_log"]
    assert "GET /hello has none" in refused["build_log"]
    shown = wait_for_state(admin, name, serving(1))
    assert shown["active_version"] == 1
    assert admin.get(f"/{name}/hello").json() == {"hello": "v1"}


def test_a_first_version_without_descriptions_never_serves(
    admin: httpx.Client, tmp_path: Path
) -> None:
    name = f"bare_{secrets.token_hex(3)}"
    refused = deploy_refused(admin, folder_of(tmp_path, plain_files(name, "v1", described=False)))
    assert "GET /hello has none" in refused["build_log"]
    shown = wait_for_state(admin, name, lambda server: server["state"] == "refused")
    assert shown["active_version"] is None
    assert "GET /hello" in shown["server"]["reason"]
    assert admin.get(f"/{name}/hello").status_code == 404


def deploy_refused(client: httpx.Client, folder: Path) -> dict[str, Any]:
    """Deploy a folder whose version builds and is then refused; the failed version."""
    answer = upload(client, build_bundle(folder).data)
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    return wait_for_version(
        client, accepted["name"], accepted["version"], lambda version: version["status"] == "failed"
    )


def wait_for_version(
    client: httpx.Client, name: str, number: int, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    version: dict[str, Any] = {}
    while time.monotonic() < deadline:
        version = client.get(f"/api/v1/deployments/{name}/versions/{number}").json()
        if done(version):
            return version
        time.sleep(0.2)
    raise AssertionError(f"{name} version {number} never got there: {version}")


def test_the_code_service_template_deploys_as_is_and_greets_its_caller(
    bay_server: Server, admin: httpx.Client, tmp_path: Path
) -> None:
    name = f"greeter_{secrets.token_hex(3)}"
    template = builtin_template("code-service")
    folder = tmp_path / name
    write(folder, render(template, {"name": name}))
    version = deploy(admin, folder)
    assert version["status"] == "ready", version["build_log"]
    wait_for_state(admin, name, serving(1))
    wait_until_mounted(admin, name, 1)
    email, key = bay_server.new_user()
    grant(admin, f"user:{email}", f"service:{name}/hello", "read")
    with bay_server.client(key) as client:
        answer = client.get(f"/{name}/hello")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"greeting": f"Hello, {email}!", "asked_by": email}


def test_a_redeploy_and_a_rollback_each_serve_and_document_their_own_version(
    admin: httpx.Client, tmp_path: Path
) -> None:
    name = f"versions_{secrets.token_hex(3)}"
    deploy_service(admin, tmp_path, plain_files(name, "v1", described=True))
    deploy_service(admin, tmp_path, plain_files(name, "v2", described=True, also="/again"))
    assert admin.get(f"/{name}/hello").json() == {"hello": "v2"}
    wait_for_documented(admin, name, "/again", present=True)
    assert f"/{name}/again" in admin.get("/openapi.json").json()["paths"]
    rolled = admin.post(f"/api/v1/deployments/{name}/rollback", json={"version": 1})
    assert rolled.status_code == 200, rolled.text
    wait_for_state(admin, name, serving(1))
    wait_for_documented(admin, name, "/again", present=False)
    assert admin.get(f"/{name}/hello").json() == {"hello": "v1"}
    assert_problem(admin.get(f"/{name}/again"), 404)


def wait_for_documented(client: httpx.Client, name: str, path: str, *, present: bool) -> None:
    """The gateway's registry follows a newly published document within its cache time."""
    deadline = time.monotonic() + 30
    while (f"/{name}{path}" in client.get(f"/{name}/openapi.json").json()["paths"]) != present:
        assert time.monotonic() < deadline, f"{path} never {'came' if present else 'went'}"
        time.sleep(0.2)


def test_a_redeploy_under_continuous_calls_loses_none(
    bay_server: Server, admin: httpx.Client, tmp_path: Path
) -> None:
    name = f"steady_{secrets.token_hex(3)}"
    deploy_service(admin, tmp_path, plain_files(name, "v1", described=True))
    with hammering(bay_server, f"/{name}/hello", lambda answer: answer.json()["hello"]) as hit:
        deploy_service(admin, tmp_path, plain_files(name, "v2", described=True))
        hit.wait_for("v2", within=30)
    assert hit.statuses
    assert hit.failures() == []
    assert hit.versions == {"v1", "v2"}
