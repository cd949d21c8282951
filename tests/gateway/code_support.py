"""Setup shared by the tests that deploy code services on a real `bay serve`: the server
(installing offline), secrets allowed for a service, grants, and deploys that wait until
each version serves and the gateway has mounted it.

Its own module rather than `gateway_support`, which the modules imported here import.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from servicebay.runtime.bundle import build_bundle
from tests.conftest import WHEELS, Server, launch_server, offline_wheels
from tests.gateway.test_apps import serving, wait_for_state
from tests.gateway.test_deployments_api import folder_of, upload, wait_for_build

MOUNT_SECONDS = 30.0

JULIUS = {
    "email": "julius@nyknicks.com",
    "first_name": "Julius",
    "last_name": "Randle",
    "address": "4 Pennsylvania Plaza",
}
"""The article's customer, as the Salesforce tests create him."""


@contextmanager
def code_server(prefix: str, *wheels: str) -> Iterator[Server]:
    """A `bay serve` whose builds never reach an index (pip finds `wheels`, packages
    `make install` downloads, offline), in a folder the services' own users may enter."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    settings = {"PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull, "BAY_AUTH_CACHE_SECONDS": "1"}
    if wheels:
        offline_wheels(*wheels)
        settings["PIP_FIND_LINKS"] = str(WHEELS)
    server = launch_server(root / "home", settings=settings)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def store_secret(admin: httpx.Client, name: str, value: str, service: str) -> None:
    """Store the secret `name`, allowed for `service` as well as for whom it already was."""
    current = admin.get(f"/api/v1/secrets/{name}")
    allow = current.json()["allow"] if current.status_code == 200 else []
    stored = admin.put(
        f"/api/v1/secrets/{name}", json={"value": value, "allow": [*allow, f"service:{service}"]}
    )
    assert stored.status_code == 200, stored.text


def grant(admin: httpx.Client, principal: str, resource: str, *actions: str) -> None:
    answer = admin.post(
        "/api/v1/grants",
        json={"principal": principal, "resource": resource, "actions": list(actions)},
    )
    assert answer.status_code == 201, answer.text


def serve_folders(client: httpx.Client, *folders: Path) -> list[dict[str, Any]]:
    """Deploy the folders (all uploaded first, so they build side by side), then wait until
    each version serves and is mounted; each deployment as shown then."""
    accepted = []
    for folder in folders:
        answer = upload(client, build_bundle(folder).data)
        assert answer.status_code == 202, answer.text
        accepted.append(answer.json())
    shown = []
    for version in accepted:
        built = wait_for_build(client, version["name"], version["version"])
        assert built["status"] == "ready", built["build_log"]
        shown.append(wait_for_state(client, built["name"], serving(built["version"])))
        wait_until_mounted(client, built["name"], built["version"])
    return shown


def deploy_service(client: httpx.Client, parent: Path, files: dict[str, str]) -> dict[str, Any]:
    """Deploy a code-service folder made of `files`, then wait until it serves."""
    (shown,) = serve_folders(client, folder_of(parent, files))
    return shown


def wait_until_mounted(client: httpx.Client, name: str, version: int) -> None:
    """The gateway's registry sees a published service within its cache time."""
    deadline = time.monotonic() + MOUNT_SECONDS
    while time.monotonic() < deadline:
        listed = client.get(f"/{name}/openapi.json")
        if listed.status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} version {version} never got mounted: {listed.text}")
