"""Every connector folder is a deployable, documented code service, as shipped."""

from __future__ import annotations

import json
from importlib import import_module
from pathlib import Path

import pytest

from servicebay.connectors import CONNECTORS, folder
from servicebay.runtime.config import ServiceConfig, check_folder
from servicebay.runtime.sdk_stage import stage_sdk
from servicebay.sdk import Service
from tests.connectors.conftest import Connector

STANDARD_LIBRARY_ONLY = {
    "slack": {"SLACK_BOT_TOKEN": "xoxb-1"},
    "salesforce": {"SALESFORCE_API_KEY": "00D!x", "SALESFORCE_INSTANCE_URL": "https://x.example"},
    "github": {"GITHUB_TOKEN": "ghp_1"},
    "instagram": {"INSTAGRAM_ACCESS_TOKEN": "EAAG1", "INSTAGRAM_USER_ID": "1"},
    "email": {"SMTP_HOST": "127.0.0.1", "EMAIL_FROM": "a@corp.com"},
}
"""The connectors with nothing in requirements.txt, and settings they start with."""


def test_the_six_connectors_are_shipped() -> None:
    assert set(CONNECTORS) == {*STANDARD_LIBRARY_ONLY, "spreadsheets"}


@pytest.mark.parametrize("name", CONNECTORS)
def test_the_folder_deploys_as_a_code_service(name: str) -> None:
    check = check_folder(folder(name))
    assert check.ok, check.problems
    assert isinstance(check.config, ServiceConfig)
    assert check.config.kind == "code"
    assert check.config.name == name
    assert check.config.start_command == "python service.py"


@pytest.mark.parametrize("name", CONNECTORS)
def test_the_readme_documents_every_endpoint_and_setting(name: str) -> None:
    """The module imports without its settings (they are read at start), so its OpenAPI
    document is there to compare with the README."""
    app = import_module(f"servicebay.connectors.{name}.service").app
    assert isinstance(app, Service)
    assert app.name == name
    document = app.openapi()
    readme = (folder(name) / "README.md").read_text()
    for path, operations in document["paths"].items():
        for method in operations:
            assert f"{method.upper()} /{name}{path}" in readme, (method, path)
    config = json.loads((folder(name) / "service.json").read_text())
    assert config["description"]
    for variable in [*config.get("secrets", []), *config.get("env", {})]:
        assert f"`{variable}`" in readme


@pytest.mark.parametrize("name", sorted(STANDARD_LIBRARY_ONLY))
def test_it_runs_on_the_staged_sdk_and_the_standard_library_alone(
    name: str, tmp_path: Path
) -> None:
    """As deployed: its folder, the SDK the platform stages, nothing installed."""
    requirements = (folder(name) / "requirements.txt").read_text().splitlines()
    assert all(line.startswith("#") for line in requirements)
    connector = Connector(name, STANDARD_LIBRARY_ONLY[name], sdk_only=stage_sdk(tmp_path))
    try:
        assert connector.client.get("/openapi.json").json()["info"]["title"] == name
        assert connector.call("GET", "/nowhere").status_code == 404
        assert connector.call("GET", "/nowhere", identity="").status_code == 401
    finally:
        connector.stop()
