"""The article's Salesforce service, a Flask app, deployed as a code service.

It is the article's code minus its own `has_permission` (the gateway checks the caller's
grant for `service:salesforce/create_customer` before the app sees anything) and reading
`$PORT`; its route is relative to the service's mount (`/create_customer`, reached at
`/salesforce/create_customer`). Flask serves no OpenAPI of its own, so the folder carries
an `openapi.json` file documenting the endpoint: the platform reads it when the program
answers 404 at `/openapi.json`, and refuses a version with an undocumented operation, or
with no document at all.

pip installs Flask offline from `.venv/wheels` (`make install` downloads it).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from servicebay.fakes.salesforce import FakeSalesforce
from tests.conftest import Server
from tests.gateway.code_support import JULIUS, code_server, deploy_service, grant, store_secret
from tests.gateway.gateway_support import assert_problem
from tests.gateway.test_apps import wait_for_state
from tests.gateway.test_code_services import deploy_refused
from tests.gateway.test_deployments_api import folder_of

TOKEN = "00D5e000000TEST!AQ0AQArticleFlaskSessionToken"

ARTICLE_SERVICE = """\
# /services/salesforce.py, as the article writes it, minus has_permission: the gateway
# checks who may call before the request gets here. It listens on $PORT.
import os

from flask import Flask, request
from salesforce_sdk import Salesforce

app = Flask(__name__)
salesforce_api_key = os.environ.get('SALESFORCE_API_KEY')


def user_object_validation(email, address, first_name, last_name):
    if not email or '@' not in email:
        return False, 'email must be an e-mail address'
    if not first_name or not last_name:
        return False, 'first_name and last_name are required'
    return True, None


@app.post('/create_customer')
def create_customer():
    # Able to pull query parameters, supplied in documentation
    email = request.args.get('email')
    address = request.args.get('address')
    first_name = request.args.get('first_name')
    last_name = request.args.get('last_name')

    # Function to validate these user inputs
    is_valid, error_message = user_object_validation(
        email=email,
        address=address,
        first_name=first_name,
        last_name=last_name,
    )

    if not is_valid:
        return error_message, 400

    Salesforce(salesforce_api_key).create_customer(
        email=email,
        address=address,
        first_name=first_name,
        last_name=last_name
    )
    return 'customer added', 200


if __name__ == '__main__':
    app.run(host='127.0.0.1', port=int(os.environ['PORT']))
"""

SALESFORCE_SDK = """\
# The article's `salesforce_sdk`: creates a Contact with Salesforce's REST API.
import json, os, urllib.request


class Salesforce:
    def __init__(self, api_key):
        self.api_key = api_key
        self.instance = os.environ['SALESFORCE_INSTANCE_URL'].rstrip('/')

    def create_customer(self, *, email, address, first_name, last_name):
        body = {'Email': email, 'FirstName': first_name, 'LastName': last_name,
                'MailingStreet': address}
        sent = urllib.request.Request(
            f'{self.instance}/services/data/v61.0/sobjects/Contact',
            data=json.dumps(body).encode(), method='POST',
            headers={'Authorization': f'Bearer {self.api_key}',
                     'Content-Type': 'application/json'})
        with urllib.request.urlopen(sent, timeout=10) as answer:
            return json.load(answer)
"""

QUERY = ("email", "address", "first_name", "last_name")


def openapi(*, undocumented_delete: bool = False) -> dict[str, Any]:
    create = {
        "summary": "Create a customer.",
        "description": "Adds a Contact in Salesforce; answers 400 with what is invalid.",
        "parameters": [
            {
                "name": name,
                "in": "query",
                "required": name != "address",
                "schema": {"type": "string"},
            }
            for name in QUERY
        ],
        "responses": {"200": {"description": "`customer added`"}},
    }
    paths: dict[str, Any] = {"/create_customer": {"post": create}}
    if undocumented_delete:
        paths["/delete_customer"] = {"delete": {"responses": {"204": {"description": "Gone."}}}}
    return {"openapi": "3.1.0", "info": {"title": "salesforce", "version": "1"}, "paths": paths}


def article_files(name: str, document: dict[str, Any] | None) -> dict[str, str]:
    files = {
        "service.json": json.dumps(
            {
                "name": name,
                "kind": "code",
                "start command": "python service.py",
                "secrets": ["SALESFORCE_API_KEY", "SALESFORCE_INSTANCE_URL"],
                "description": "Customers in Salesforce",
            }
        ),
        "service.py": ARTICLE_SERVICE,
        "salesforce_sdk.py": SALESFORCE_SDK,
        "requirements.txt": "flask\n",
        "README.md": f"# {name}\n\n`POST /{name}/create_customer?email=&first_name=&last_name=`\n",
    }
    if document is not None:
        files["openapi.json"] = json.dumps(document)
    return files


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeSalesforce]:
    with FakeSalesforce(token=TOKEN) as fake:
        yield fake


@pytest.fixture(scope="module")
def bay_server() -> Iterator[Server]:
    with code_server("bay-flask-service-", "flask") as server:
        yield server


@pytest.fixture(scope="module")
def admin(bay_server: Server) -> Iterator[httpx.Client]:
    with bay_server.admin() as client:
        yield client


def allow_secrets(admin: httpx.Client, name: str, fake: FakeSalesforce) -> None:
    store_secret(admin, "SALESFORCE_API_KEY", TOKEN, name)
    store_secret(admin, "SALESFORCE_INSTANCE_URL", fake.base_url, name)


@pytest.fixture(scope="module")
def salesforce(
    admin: httpx.Client, fake: FakeSalesforce, tmp_path_factory: pytest.TempPathFactory
) -> str:
    allow_secrets(admin, "salesforce", fake)
    deploy_service(
        admin, tmp_path_factory.mktemp("article"), article_files("salesforce", openapi())
    )
    return "salesforce"


@pytest.fixture(autouse=True)
def fresh(fake: FakeSalesforce) -> None:
    fake.clear()


def test_the_articles_flask_service_creates_a_customer_for_a_granted_caller(
    bay_server: Server, admin: httpx.Client, salesforce: str, fake: FakeSalesforce
) -> None:
    _, key = bay_server.new_user(teams=["sales"])
    grant(admin, "team:sales", "service:salesforce/create_customer", "create")
    with bay_server.client(key) as client:
        created = client.post("/salesforce/create_customer", params={**JULIUS, "api_key": key})
        invalid = client.post("/salesforce/create_customer", params={"email": "julius"})
    assert created.status_code == 200, created.text
    assert created.text == "customer added"
    assert invalid.status_code == 400
    assert invalid.text == "email must be an e-mail address"
    (posted,) = fake.requests_to("/services/data/v61.0/sobjects/Contact")
    assert posted.headers["authorization"] == f"Bearer {TOKEN}"
    assert posted.json["Email"] == JULIUS["email"]
    assert TOKEN not in created.text + invalid.text


def test_a_caller_without_the_grant_is_refused_before_flask_sees_the_call(
    bay_server: Server, salesforce: str, fake: FakeSalesforce
) -> None:
    _, key = bay_server.new_user(teams=["marketing"])
    with bay_server.client(key) as client:
        refused = client.post("/salesforce/create_customer", params=JULIUS)
    assert_problem(refused, 403, "`create` on `service:salesforce/create_customer`")
    assert fake.received == []


def test_docs_show_the_flask_service_from_its_folders_openapi_file(
    admin: httpx.Client, salesforce: str
) -> None:
    paths = admin.get("/openapi.json").json()["paths"]
    operation = paths["/salesforce/create_customer"]["post"]
    assert operation["summary"] == "Create a customer."
    assert [parameter["name"] for parameter in operation["parameters"]] == list(QUERY)


def test_an_operation_without_a_description_refuses_the_deploy_naming_it(
    admin: httpx.Client, fake: FakeSalesforce, tmp_path: Path
) -> None:
    name = f"crm_{secrets.token_hex(3)}"
    allow_secrets(admin, name, fake)
    documented = openapi(undocumented_delete=True)
    refused = deploy_refused(admin, folder_of(tmp_path, article_files(name, documented)))
    assert "DELETE /delete_customer has none" in refused["build_log"]
    shown = wait_for_state(admin, name, lambda server: server["state"] == "refused")
    assert "DELETE /delete_customer" in shown["server"]["reason"]
    assert admin.post(f"/{name}/create_customer", params=JULIUS).status_code == 404


def test_a_flask_service_without_any_openapi_is_refused_saying_how_to_document_it(
    admin: httpx.Client, fake: FakeSalesforce, tmp_path: Path
) -> None:
    name = f"crm_{secrets.token_hex(3)}"
    allow_secrets(admin, name, fake)
    refused = deploy_refused(admin, folder_of(tmp_path, article_files(name, None)))
    assert "GET /openapi.json answered 404" in refused["build_log"]
    assert "an openapi.json file in the folder" in refused["build_log"]
