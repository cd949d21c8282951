"""The Slack and Salesforce connectors deployed as code services on a real `bay serve`,
against their fakes, and called through the gateway with a user's key.

Their `service.py` and README are the shipped ones, byte for byte. Salesforce's address
is a secret (`SALESFORCE_INSTANCE_URL`), so its folder deploys as shipped; Slack's
address is a setting, so the deployed copy's `service.json` adds `"env":
{"SLACK_BASE_URL": ...}` pointing at the fake, as docs/connectors.md says to.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from servicebay.connectors import folder
from servicebay.fakes.salesforce import FakeSalesforce
from servicebay.fakes.slack import FakeSlack
from tests.conftest import Server
from tests.gateway.gateway_support import assert_problem, find_event
from tests.gateway.test_apps import serving, wait_for_state
from tests.gateway.test_code_services import wait_until_mounted
from tests.gateway.test_deployments_api import deploy

SLACK_TOKEN = "xoxb-3333333333-4444444444-DeployedConnectorToken"
SALESFORCE_TOKEN = "00D5e000000TEST!AQ0AQDeployedConnectorSessionToken"
JULIUS = {
    "email": "julius@nyknicks.com",
    "first_name": "Julius",
    "last_name": "Randle",
    "address": "4 Pennsylvania Plaza",
}


@pytest.fixture(scope="module")
def slack_fake() -> Iterator[FakeSlack]:
    with FakeSlack(token=SLACK_TOKEN) as fake:
        yield fake


@pytest.fixture(scope="module")
def salesforce_fake() -> Iterator[FakeSalesforce]:
    with FakeSalesforce(token=SALESFORCE_TOKEN) as fake:
        yield fake


@pytest.fixture(autouse=True)
def fresh(slack_fake: FakeSlack, salesforce_fake: FakeSalesforce) -> None:
    slack_fake.clear()
    salesforce_fake.clear()


@pytest.fixture(scope="module")
def bay_server(launch: Callable[..., Server]) -> Iterator[Server]:
    root = Path(tempfile.mkdtemp(prefix="bay-connectors-"))
    root.chmod(0o755)
    settings = {"PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull, "BAY_AUTH_CACHE_SECONDS": "1"}
    server = launch(root / "home", settings=settings)
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def admin(bay_server: Server) -> Iterator[httpx.Client]:
    with bay_server.admin() as client:
        yield client


def set_secret(admin: httpx.Client, name: str, value: str, service: str) -> None:
    answer = admin.put(
        f"/api/v1/secrets/{name}", json={"value": value, "allow": [f"service:{service}"]}
    )
    assert answer.status_code == 200, answer.text


def deploy_connector(admin: httpx.Client, source: Path) -> None:
    version = deploy(admin, source)
    assert version["status"] == "ready", version["build_log"]
    wait_for_state(admin, version["name"], serving(version["version"]))
    wait_until_mounted(admin, version["name"], version["version"])


@pytest.fixture(scope="module")
def connectors(
    admin: httpx.Client,
    slack_fake: FakeSlack,
    salesforce_fake: FakeSalesforce,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Both connectors deployed: Salesforce's folder as shipped, Slack's with its address."""
    set_secret(admin, "SLACK_BOT_TOKEN", SLACK_TOKEN, "slack")
    set_secret(admin, "SALESFORCE_API_KEY", SALESFORCE_TOKEN, "salesforce")
    set_secret(admin, "SALESFORCE_INSTANCE_URL", salesforce_fake.base_url, "salesforce")
    slack = tmp_path_factory.mktemp("connectors") / "slack"
    shutil.copytree(folder("slack"), slack)
    config = json.loads((slack / "service.json").read_text())
    (slack / "service.json").write_text(
        json.dumps({**config, "env": {"SLACK_BASE_URL": slack_fake.base_url}})
    )
    assert (slack / "service.py").read_bytes() == (folder("slack") / "service.py").read_bytes()
    deploy_connector(admin, slack)
    deploy_connector(admin, folder("salesforce"))


@pytest.fixture(scope="module")
def analyst(bay_server: Server, admin: httpx.Client, connectors: None) -> tuple[str, str]:
    """A user holding one grant per endpoint it calls, and no other."""
    email, key = bay_server.new_user(teams=["marketing"])
    for resource, action in (
        ("service:slack/post_message_to_channel", "create"),
        ("service:salesforce/create_customer", "create"),
        ("service:salesforce/get_customer", "read"),
    ):
        granted = admin.post(
            "/api/v1/grants",
            json={"principal": f"user:{email}", "resource": resource, "actions": [action]},
        )
        assert granted.status_code == 201, granted.text
    return email, key


def test_slack_posts_through_the_gateway_in_slacks_wire_format(
    bay_server: Server, analyst: tuple[str, str], slack_fake: FakeSlack
) -> None:
    _, key = analyst
    with bay_server.client(key) as client:
        answer = client.post(
            "/slack/post_message_to_channel",
            params={"channel_name": "marketing", "message": "Followers: 7100 (+2.2%)"},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["channel"] == "C0MARKETING"
    (sent,) = slack_fake.requests_to("/api/chat.postMessage")
    assert sent.headers["authorization"] == f"Bearer {SLACK_TOKEN}"
    assert sent.json == {"channel": "marketing", "text": "Followers: 7100 (+2.2%)"}
    assert key not in json.dumps(dict(sent.headers))


def test_salesforce_creates_and_reads_a_customer_through_the_gateway(
    bay_server: Server, analyst: tuple[str, str], salesforce_fake: FakeSalesforce
) -> None:
    _, key = analyst
    with bay_server.client(key) as client:
        created = client.post("/salesforce/create_customer", params=JULIUS)
        found = client.get("/salesforce/get_customer", params={"email": JULIUS["email"]})
    assert created.status_code == 201, created.text
    assert created.json() == {"id": created.json()["id"], **JULIUS}
    assert found.json() == created.json()
    (posted,) = salesforce_fake.requests_to("/services/data/v61.0/sobjects/Contact")
    assert posted.method == "POST"
    assert posted.headers["authorization"] == f"Bearer {SALESFORCE_TOKEN}"
    assert posted.json["Email"] == JULIUS["email"]


def test_a_user_without_the_grant_gets_403_and_no_connector_is_called(
    bay_server: Server,
    admin: httpx.Client,
    analyst: tuple[str, str],
    slack_fake: FakeSlack,
    salesforce_fake: FakeSalesforce,
) -> None:
    email, key = bay_server.new_user(teams=["sales"])
    _, granted = analyst
    with bay_server.client(key) as client:
        posted = client.post(
            "/slack/post_message_to_channel", params={"channel_name": "general", "message": "x"}
        )
        deleted = client.delete("/salesforce/delete_customer", params={"email": JULIUS["email"]})
    with bay_server.client(granted) as client:  # a grant per endpoint: not delete
        not_granted = client.delete(
            "/salesforce/delete_customer", params={"email": JULIUS["email"]}
        )
    assert_problem(posted, 403, "`create` on `service:slack/post_message_to_channel`")
    assert_problem(deleted, 403, "`delete` on `service:salesforce/delete_customer`")
    assert_problem(not_granted, 403, "`delete` on `service:salesforce/delete_customer`")
    assert slack_fake.received == []
    assert salesforce_fake.received == []
    event = find_event(admin, posted.headers["x-request-id"], actor=email)
    assert (event["outcome"], event["resource"]) == (
        "denied",
        "service:slack/post_message_to_channel",
    )


def test_the_tokens_appear_in_no_answer_log_or_audit_record(
    bay_server: Server, admin: httpx.Client, analyst: tuple[str, str]
) -> None:
    _, key = analyst
    with bay_server.client(key) as client:
        answers = [
            client.post(
                "/slack/post_message_to_channel",
                params={"channel_name": "nope", "message": "hi"},
            ),
            client.get("/salesforce/get_customer", params={"email": "nobody@corp.com"}),
        ]
    texts = [answer.text + json.dumps(dict(answer.headers)) for answer in answers]
    for name in ("slack", "salesforce"):
        texts.append(
            admin.get(f"/api/v1/deployments/{name}/logs", headers={"Accept": "text/plain"}).text
        )
        texts.append(admin.get(f"/api/v1/deployments/{name}/versions/1").text)
        texts.append(admin.get(f"/{name}/openapi.json").text)
    texts.append(admin.get("/api/v1/audit", params={"limit": 500}).text)
    texts.append(bay_server.log_text())
    for text in texts:
        assert SLACK_TOKEN not in text
        assert SALESFORCE_TOKEN not in text
    assert [answer.status_code for answer in answers] == [404, 404]


def test_docs_list_the_connectors_endpoints_with_their_descriptions(
    admin: httpx.Client, connectors: None
) -> None:
    document = admin.get("/openapi.json").json()
    expected = {
        ("post", "/slack/post_message_to_channel"),
        ("get", "/salesforce/get_customer"),
        ("post", "/salesforce/create_customer"),
        ("patch", "/salesforce/update_customer"),
        ("delete", "/salesforce/delete_customer"),
    }
    for method, path in expected:
        operation = document["paths"][path][method]
        assert operation["summary"], (method, path)
        assert operation["description"], (method, path)
    names = {tag["name"]: tag["description"] for tag in document["tags"]}
    assert names["slack"].startswith("Post messages")
    assert names["salesforce"].startswith("Customers in Salesforce")
