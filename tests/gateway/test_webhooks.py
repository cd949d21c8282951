"""Webhooks over a real `bay serve`: folders deployed through the API, called over HTTP.

A webhook answers at `/hooks/{name}[/...]` and at host `{name}.{BAY_DOMAIN}`; its
`auth` says who may call (an API key with `invoke`, anyone, or a signed body) and its
`mode` whether the caller gets the script's answer (sync) or the queued run (async). Every
call is a run of the deployment, logged and recorded, and the caller's key never reaches
the script.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from servicebay.gateway.signatures import sign
from tests.conftest import Server
from tests.gateway.gateway_support import (
    assert_problem,
    assert_unauthorized,
    find_event,
    unique_name,
    wait_for,
)
from tests.gateway.test_deployments_api import deploy, folder_of

DOMAIN = "bay.test"
FINAL = {"succeeded", "failed", "timed_out", "cancelled"}

ARTICLE_SCRIPT = '''\
import os
from internal_sdk import webhook_response

"""
This is our internal template for python scripts that run via a webhook.

Step 1) Pull in relevant data sources: see <internal_docs_url> for available
apis.
Step 2) Perform analysis
Step 3) Serve Response back to the Web Request
"""

# Step 1 -- Pull Data from EaaS sources
# ... same as above

# Step 2 -- Perform Analysis
# ... same as above
# ... analysis for other social platforms

# Step 3
"""
Example Code of How to Respond:
"""
payload = {"hello": "world"}
headers = {"content-type": "application/json"}
status_code = 200

webhook_response.send_response(data=payload, headers=headers, status_code=status_code)
'''

ECHO = """\
from servicebay.webhook import request, webhook_response

print("handled", request.method, request.path)
webhook_response.send_response(
    data={
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "body": request.text,
        "user": request.headers.get("x-bay-user"),
    },
    headers={"X-Answered-By": "echo"},
    status_code=201,
)
"""

RAW_CALL = """\
import os
from servicebay.webhook import webhook_response

with open(os.environ["BAY_WEBHOOK_REQUEST"]) as call:
    webhook_response.send_response(data=call.read())
"""


@pytest.fixture(scope="module")
def node(launch: Callable[..., Server]) -> Iterator[Server]:
    """A server of this module's own, whose home the build and run users may reach, with a
    domain for host-based routing; builds install nothing from an index."""
    root = Path(tempfile.mkdtemp(prefix="bay-hooks-"))
    root.chmod(0o755)
    settings = {"PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": "/dev/null", "BAY_DOMAIN": DOMAIN}
    server = launch(root / "home", settings=settings)
    yield server
    server.stop()
    shutil.rmtree(root)


@pytest.fixture(scope="module")
def owner(node: Server) -> tuple[str, str]:
    """The analyst who deploys this module's webhooks: (email, key)."""
    return node.new_user(teams=["analytics"])


def hook_folder(parent: Path, name: str, script: str, **config: Any) -> Path:
    settings = {"sub_domain": name, "script_to_run": "hook.py", **config}
    return folder_of(
        parent,
        {
            "webhook.json": json.dumps(settings),
            "hook.py": script,
            "README.md": f"# {name}\n",
            "requirements.txt": "",
        },
    )


def deploy_hook(node: Server, key: str, parent: Path, script: str, **config: Any) -> str:
    """Deploy a webhook folder as the holder of `key`; its name, once it is ready."""
    name = str(config.pop("name", None) or unique_name("hook"))
    with node.client(key) as client:
        version = deploy(client, hook_folder(parent, name, script, **config))
    assert version["status"] == "ready", version["build_log"]
    return name


def ended(client: httpx.Client, run_id: str) -> dict[str, Any]:
    run, _ = wait_for(lambda: client.get(f"/api/v1/runs/{run_id}").json(),
                      lambda run: run["status"] in FINAL, within=30)  # fmt: skip
    assert run["status"] in FINAL, run
    return run


def log_of(client: httpx.Client, run_id: str) -> str:
    return client.get(f"/api/v1/runs/{run_id}/logs", headers={"Accept": "text/plain"}).text


# Answers


def test_the_articles_webhook_answers_hello_world_with_its_headers_and_status(
    node: Server, owner: tuple[str, str], tmp_path: Path
) -> None:
    """The article's folder as written (its `import requests` aside: these tests install
    nothing), with the article's two-line webhook.json: an API key, answered in sync."""
    email, key = owner
    folder = folder_of(
        tmp_path,
        {
            "webhook.json": '{"sub_domain": "salesforce_data_lookup", '
            '"script_to_run": "webhook_microservice.py"}',
            "webhook_microservice.py": ARTICLE_SCRIPT,
            "README.md": "# Salesforce data lookup\n",
            "requirements.txt": "",
        },
    )
    with node.client(key) as client:
        assert deploy(client, folder)["status"] == "ready"
        answer = client.get("/hooks/salesforce_data_lookup")
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"hello": "world"}
        assert answer.headers["content-type"] == "application/json"
        run = client.get(f"/api/v1/runs/{answer.headers['x-bay-run-id']}").json()
    assert (run["deployment"], run["trigger"], run["status"]) == (
        "salesforce_data_lookup",
        "webhook",
        "succeeded",
    )
    assert run["actor"] == email
    assert run["input"] is None  # a sync call is handed over, not stored


def test_the_call_reaches_the_script_and_its_answer_the_caller_with_the_run_logged(
    node: Server, owner: tuple[str, str], tmp_path: Path
) -> None:
    email, key = owner
    name = deploy_hook(node, key, tmp_path, ECHO)
    with node.client(key) as client:
        answer = client.post(f"/hooks/{name}/orders/7?expand=lines&expand=notes", content="hi")
        assert answer.status_code == 201, answer.text
        assert answer.json() == {
            "method": "POST",
            "path": "/orders/7",
            "query": [["expand", "lines"], ["expand", "notes"]],
            "body": "hi",
            "user": email,
        }
        assert answer.headers["x-answered-by"] == "echo"
        run_id = answer.headers["x-bay-run-id"]
        assert ended(client, run_id)["status"] == "succeeded"
        log = log_of(client, run_id)
    assert "stdout handled POST /orders/7" in log
    assert f"[servicebay] run {run_id} of {name} v1 (attempt 1, webhook) started" in log


@pytest.mark.parametrize(
    ("script", "status", "run_status", "exit_code", "reason"),
    [
        ("print('done, silently')\n", 200, "succeeded", 0, "exited with code 0"),
        ("raise SystemExit(3)\n", 500, "failed", 3, "exited with code 3"),
    ],
)
def test_a_script_that_sends_no_answer_gets_a_summary_of_its_run(
    node: Server,
    owner: tuple[str, str],
    tmp_path: Path,
    script: str,
    status: int,
    run_status: str,
    exit_code: int,
    reason: str,
) -> None:
    """200 if the run succeeded, 500 if not."""
    _, key = owner
    name = deploy_hook(node, key, tmp_path, script)
    with node.client(key) as client:
        answer = client.post(f"/hooks/{name}")
        assert answer.status_code == status, answer.text
        run_id = answer.headers["x-bay-run-id"]
        assert answer.json() == {"run": run_id, "status": run_status, "exit_code": exit_code}
        assert ended(client, run_id)["reason"] == reason


def test_a_script_past_its_timeout_is_stopped_and_the_caller_gets_a_504_naming_the_run(
    node: Server, owner: tuple[str, str], tmp_path: Path
) -> None:
    _, key = owner
    name = deploy_hook(node, key, tmp_path, "import time\ntime.sleep(60)\n", timeout_seconds=1)
    with node.client(key) as client:
        answer = client.get(f"/hooks/{name}")
        body = assert_problem(answer, 504, "did not answer within 1 s")
        run_id = answer.headers["x-bay-run-id"]
        assert run_id in body["detail"]
        run = ended(client, run_id)
    assert run["status"] == "timed_out"
    assert "timed out after 1" in run["reason"]


def test_an_answer_keeps_its_repeated_headers_and_loses_those_of_one_connection(
    node: Server, owner: tuple[str, str], tmp_path: Path
) -> None:
    """Written as any program could write it, not through the SDK (which refuses them)."""
    _, key = owner
    answer_file = {
        "status_code": 418,
        "headers": [
            ["Connection", "close, X-Hop"],
            ["X-Hop", "only to the next hop"],
            ["Transfer-Encoding", "chunked"],
            ["Content-Length", "999"],
            ["Set-Cookie", "a=1"],
            ["Set-Cookie", "b=2"],
        ],
        "body_base64": "dGVhcG90",
    }
    script = (
        "import json, os\n"
        "with open(os.environ['BAY_WEBHOOK_RESPONSE'], 'w') as out:\n"
        f"    json.dump({answer_file!r}, out)\n"
    )
    name = deploy_hook(node, key, tmp_path, script)
    with node.client(key) as client:
        answer = client.get(f"/hooks/{name}")
    assert (answer.status_code, answer.text) == (418, "teapot")
    assert answer.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert answer.headers["content-length"] == "6"
    for dropped in ("connection", "x-hop", "transfer-encoding"):
        assert dropped not in answer.headers


def test_an_answer_file_that_cannot_be_sent_is_a_502_saying_why(
    node: Server, owner: tuple[str, str], tmp_path: Path
) -> None:
    _, key = owner
    script = (
        "import json, os\n"
        "with open(os.environ['BAY_WEBHOOK_RESPONSE'], 'w') as out:\n"
        "    json.dump({'status_code': 200, 'headers': [['X-Evil', 'a\\r\\nSet-Cookie: x=1']],"
        " 'body_base64': ''}, out)\n"
    )
    name = deploy_hook(node, key, tmp_path, script)
    with node.client(key) as client:
        answer = client.get(f"/hooks/{name}")
    assert_problem(answer, 502, "'X-Evil' is not a valid HTTP header")
    assert "set-cookie" not in answer.headers
    assert answer.headers["x-bay-run-id"].startswith("run_")


# Who may call


def test_an_api_key_webhook_admits_its_owner_admins_and_invoke_grants_and_audits_refusals(
    node: Server, owner: tuple[str, str], tmp_path: Path
) -> None:
    _, key = owner
    name = deploy_hook(node, key, tmp_path, "print('ok')\n")
    with node.client() as anonymous:
        assert_unauthorized(anonymous.get(f"/hooks/{name}"), "an API key is required")
    with node.admin() as admin:
        assert admin.get(f"/hooks/{name}").status_code == 200
    colleague_email, colleague = node.new_user(teams=["marketing"])
    with node.client(colleague) as client:
        refused = client.get(f"/hooks/{name}")
    assert_problem(refused, 403, f"you need `invoke` on `webhook:{name}`")
    with node.admin() as admin:
        event = find_event(admin, refused.headers["x-request-id"], actor=colleague_email)
        assert (event["action"], event["resource"], event["outcome"]) == (
            "webhook.invoke",
            f"webhook:{name}",
            "denied",
        )
        granted = admin.post(
            "/api/v1/grants",
            json={"principal": "team:marketing", "resource": f"webhook:{name}",
                  "actions": ["invoke"]},
        )  # fmt: skip
        assert granted.status_code == 201, granted.text
    with node.client(colleague) as client:
        admitted, _ = wait_for(lambda: client.get(f"/hooks/{name}"),
                               lambda answer: answer.status_code == 200)  # fmt: skip
    assert admitted.status_code == 200, admitted.text
    assert admitted.json()["status"] == "succeeded"


def test_a_public_webhook_needs_no_key_and_looks_at_none(
    node: Server, owner: tuple[str, str], tmp_path: Path
) -> None:
    _, key = owner
    name = deploy_hook(node, key, tmp_path, ECHO, auth="public")
    with node.client() as anonymous:
        answer = anonymous.post(f"/hooks/{name}", content="from anyone")
        with_bad_key = anonymous.post(f"/hooks/{name}", headers={"X-API-Key": "bay_nonsense"})
    assert answer.status_code == 201, answer.text
    assert (answer.json()["body"], answer.json()["user"]) == ("from anyone", None)
    assert with_bad_key.status_code == 201, with_bad_key.text
    with node.client(key) as client:
        assert client.get(f"/api/v1/runs/{answer.headers['x-bay-run-id']}").json()["actor"] is None


def test_a_signed_webhook_takes_github_and_stripe_signatures_and_refuses_the_rest(
    node: Server, owner: tuple[str, str], tmp_path: Path
) -> None:
    _, key = owner
    name = unique_name("signed")
    secret_name, signing_key = f"HOOK_{secrets.token_hex(4).upper()}", secrets.token_hex(16)
    with node.admin() as admin:
        stored = admin.put(
            f"/api/v1/secrets/{secret_name}",
            json={"value": signing_key, "allow": [f"deployment:{name}"]},
        )
        assert stored.status_code in (200, 201), stored.text
    deploy_hook(node, key, tmp_path, ECHO, name=name, auth="hmac-sha256", secret=secret_name)
    body = b'{"action": "opened"}'
    stamp = str(int(time.time()))
    stripe = hmac.new(signing_key.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
    with node.client() as sender:
        github = sender.post(
            f"/hooks/{name}", content=body, headers={"X-Hub-Signature-256": sign(signing_key, body)}
        )
        assert github.status_code == 201, github.text
        assert github.json()["body"] == body.decode()
        by_stripe = sender.post(
            f"/hooks/{name}",
            content=body,
            headers={"Stripe-Signature": f"t={stamp},v1={stripe.hexdigest()}"},
        )
        assert by_stripe.status_code == 201, by_stripe.text
        forged = sender.post(
            f"/hooks/{name}",
            content=b'{"action": "closed"}',
            headers={"X-Hub-Signature-256": sign(signing_key, body)},
        )
        assert_problem(forged, 401, "X-Hub-Signature-256 does not match the body")
        assert forged.headers["www-authenticate"].startswith("HMAC-SHA256")
        unsigned = sender.post(f"/hooks/{name}", content=body)
        assert_problem(unsigned, 401, "this webhook needs a signed call")
        replayed = sender.post(
            f"/hooks/{name}",
            content=body,
            headers={"Stripe-Signature": f"t={int(stamp) - 3600},v1={stripe.hexdigest()}"},
        )
        assert_problem(replayed, 401, "more than 300 s from now")
    with node.admin() as admin:
        event = find_event(admin, forged.headers["x-request-id"], action="webhook.invoke")
    assert (event["resource"], event["outcome"]) == (f"webhook:{name}", "denied")


def test_a_signing_secret_the_webhook_may_not_use_is_a_503_that_says_how_to_allow_it(
    node: Server, owner: tuple[str, str], tmp_path: Path
) -> None:
    _, key = owner
    secret_name, signing_key = f"HOOK_{secrets.token_hex(4).upper()}", secrets.token_hex(16)
    with node.admin() as admin:
        admin.put(
            f"/api/v1/secrets/{secret_name}",
            json={"value": signing_key, "allow": ["service:elsewhere"]},
        ).raise_for_status()
    name = deploy_hook(node, key, tmp_path, ECHO, auth="hmac-sha256", secret=secret_name)
    unset = deploy_hook(node, key, tmp_path, ECHO, auth="hmac-sha256", secret="NO_SUCH_SECRET")
    body = b"{}"
    with node.client() as sender:
        refused = sender.post(
            f"/hooks/{name}", content=body, headers={"X-Hub-Signature-256": sign(signing_key, body)}
        )
        missing = sender.post(f"/hooks/{unset}", content=body)
    problem = assert_problem(refused, 503, f"not allowed for deployment:{name}")
    assert f"bay secrets allow {secret_name} deployment:{name}" in problem["detail"]
    assert signing_key not in refused.text
    assert_problem(missing, 503, "no secret named NO_SUCH_SECRET")


# Async


def test_an_async_webhook_answers_202_with_the_queued_run_which_then_succeeds(
    node: Server, owner: tuple[str, str], tmp_path: Path
) -> None:
    email, key = owner
    script = (
        "import os, shutil\n"
        "from servicebay.webhook import request\n"
        "out = os.environ['BAY_OUTPUT_DIR']\n"
        "open(os.path.join(out, 'body.txt'), 'w').write(request.text)\n"
    )
    name = deploy_hook(node, key, tmp_path, script, mode="async")
    with node.client(key) as client:
        answer = client.post(f"/hooks/{name}?api_key={key}", content="later, please")
        assert answer.status_code == 202, answer.text
        run_id = answer.json()["run"]
        assert answer.json() == {"run": run_id, "status": "queued"}
        assert answer.headers["location"] == f"/api/v1/runs/{run_id}"
        run = ended(client, run_id)
        assert run["status"] == "succeeded", log_of(client, run_id)
        assert (run["trigger"], run["actor"]) == ("webhook", email)
        stored = json.dumps(run["input"])
        assert key not in stored  # the queued call keeps no key, even from ?api_key=
        kept = client.get(f"/api/v1/runs/{run_id}/artifacts/body.txt")
    assert kept.text == "later, please"


# Routing and what the script sees


def test_a_webhook_answers_at_its_host_under_the_domain_with_the_path_passed_through(
    node: Server, owner: tuple[str, str], tmp_path: Path
) -> None:
    email, key = owner
    name = deploy_hook(node, key, tmp_path, ECHO)
    with node.client(key) as client:
        answer = client.get("/orders/7?x=1", headers={"Host": f"{name}.{DOMAIN}"})
        assert answer.status_code == 201, answer.text
        assert (answer.json()["path"], answer.json()["query"]) == ("/orders/7", [["x", "1"]])
        unknown = client.get("/", headers={"Host": f"nosuchhook.{DOMAIN}:8600"})
        assert_problem(unknown, 404, "there is no webhook 'nosuchhook'")
        other = client.get("/api/v1/me", headers={"Host": f"api.other.{DOMAIN}"})
        assert other.json()["email"] == email  # not a webhook's host: the platform answers


def test_unknown_names_and_deployments_that_are_not_ready_webhooks_say_so(
    node: Server, owner: tuple[str, str], tmp_path: Path
) -> None:
    _, key = owner
    broken = unique_name("broken")
    with node.client(key) as client:
        assert_problem(client.get("/hooks/nosuchhook"), 404, "there is no webhook 'nosuchhook'")
        cron = folder_of(
            tmp_path,
            {
                "cron.json": '{"cron_frequency": "@daily", "script_to_run": "main.py"}',
                "main.py": "print('daily')\n",
                "README.md": "# Daily\n",
            },
        )
        cron_name = deploy(client, cron, unique_name("daily"))["name"]
        assert_problem(client.get(f"/hooks/{cron_name}"), 404, "a cron deployment")
        failed = deploy(
            client,
            folder_of(
                tmp_path,
                {
                    "webhook.json": json.dumps({"sub_domain": broken, "script_to_run": "h.py"}),
                    "h.py": "",
                    "README.md": "# Broken\n",
                    "requirements.txt": "no-such-package-anywhere==1.0\n",
                },
            ),
        )
        assert failed["status"] == "failed"
        assert_problem(client.get(f"/hooks/{broken}"), 503, "its newest version is failed")


def test_the_callers_key_never_reaches_the_script(
    node: Server, owner: tuple[str, str], tmp_path: Path
) -> None:
    email, key = owner
    name = deploy_hook(node, key, tmp_path, RAW_CALL)
    with node.client(key) as client:
        answer = client.get(
            f"/hooks/{name}",
            params={"api_key": key, "Api_Key": key, "kept": "yes"},
            headers={"X-API-Key": key, "X-Bay-User": "someone-else@example.com"},
        )
    assert answer.status_code == 200, answer.text
    assert key not in answer.text
    call = json.loads(answer.text)
    headers = dict(call["headers"])
    assert "authorization" not in headers
    assert "x-api-key" not in headers
    assert headers["x-bay-user"] == email  # set by the platform, not by the caller
    assert headers["x-bay-request-id"] == answer.headers["x-request-id"]
    assert call["query"] == [["kept", "yes"]]


def test_a_new_version_answers_within_seconds_of_its_deploy(
    node: Server, owner: tuple[str, str], tmp_path: Path
) -> None:
    _, key = owner
    name = deploy_hook(node, key, tmp_path, "from servicebay.webhook import webhook_response\n"
                       "webhook_response.send_response(data='one')\n")  # fmt: skip
    with node.client(key) as client:
        assert client.get(f"/hooks/{name}").text == "one"
        second = hook_folder(tmp_path, name, "from servicebay.webhook import webhook_response\n"
                             "webhook_response.send_response(data='two')\n")  # fmt: skip
        assert deploy(client, second)["version"] == 2
        answer, _ = wait_for(lambda: client.get(f"/hooks/{name}"),
                             lambda answer: answer.text == "two")  # fmt: skip
        assert answer.text == "two"
        rolled = client.post(f"/api/v1/deployments/{name}/rollback")
        assert rolled.status_code == 200, rolled.text
        answer, _ = wait_for(lambda: client.get(f"/hooks/{name}"),
                             lambda answer: answer.text == "one")  # fmt: skip
    assert answer.text == "one"


def test_a_node_that_only_serves_the_api_answers_sync_webhooks_itself(
    node: Server, owner: tuple[str, str], tmp_path: Path, start_server: Callable[..., Server]
) -> None:
    _, key = owner
    name = deploy_hook(node, key, tmp_path, ARTICLE_SCRIPT)
    api_only = start_server(node.home, init=False, settings={**_settings(node), "BAY_ROLE": "api"})
    with api_only.client(key) as client:
        answer = client.get(f"/hooks/{name}")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"hello": "world"}


def _settings(node: Server) -> dict[str, str]:
    return {name: value for name, value in node.env.items() if name.startswith(("BAY_", "PIP_"))}
