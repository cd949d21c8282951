"""Every connector folder is a deployable, documented code service, as shipped."""

from __future__ import annotations

import json
from importlib import import_module

import pytest

from servicebay.connectors import CONNECTORS, folder
from servicebay.runtime.config import ServiceConfig, check_folder
from servicebay.sdk import Service


def test_the_six_connectors_are_shipped() -> None:
    assert set(CONNECTORS) <= {
        "slack",
        "salesforce",
        "github",
        "instagram",
        "email",
        "spreadsheets",
    }
    assert CONNECTORS


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
