"""Running a connector as the platform will: its folder's `service.py` as a real process.

`run_connector` starts `python service.py` in the connector's folder with only what the
platform would give it (PORT, BAY_IDENTITY_KEY, its secrets and settings) plus the
source tree on PYTHONPATH, and `Connector.call` signs an identity for each call as the
gateway does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from servicebay.connectors import folder
from servicebay.sdk import sign_identity

SOURCE = Path(__file__).resolve().parents[2] / "src"
IDENTITY_KEY = "connector-tests-identity-key-0123456789abcdef"
LISTENING = re.compile(r"listening on (http://\S+)")


class Connector:
    """A connector process; `call` talks to it as the gateway would."""

    def __init__(
        self, name: str, settings: dict[str, str], *, sdk_only: Path | None = None
    ) -> None:
        """`sdk_only`: a staged SDK to run on alone, in an interpreter without site-packages
        (`-S`), as a deployment with an empty requirements.txt would."""
        self.name = name
        self.log = Path(tempfile.mkstemp(prefix=f"connector-{name}-", suffix=".log")[1])
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(sdk_only or SOURCE),
            "PORT": "0",
            "BAY_IDENTITY_KEY": IDENTITY_KEY,
            **settings,
        }
        flags = ["-S", "-B"] if sdk_only else []
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, *flags, "service.py"],
                cwd=folder(name),
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.url = self._wait_for_address()
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def _wait_for_address(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = LISTENING.search(self.log_text())
            if found:
                return found[1]
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited at start:\n{self.log_text()}")
            time.sleep(0.05)
        raise AssertionError(f"{self.name} did not start within 30 s:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def identity(self, user: str = "ana@corp.com", service: str | None = None) -> str:
        return sign_identity(
            IDENTITY_KEY.encode(),
            user=user,
            teams=["marketing"],
            request_id="req-connector-test",
            service=service or self.name,
        )

    def call(
        self, method: str, path: str, *, identity: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """A call carrying a fresh signed identity (or the `identity` header given)."""
        header = self.identity() if identity is None else identity
        headers = {"X-Bay-Identity": header} if header else {}
        return self.client.request(method, path, headers=headers, **kwargs)

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.unlink(missing_ok=True)


RunConnector = Callable[[str, dict[str, str]], Connector]
"""The `run_connector` fixture: start a connector by name with its settings."""


@pytest.fixture(scope="module")
def run_connector() -> Iterator[RunConnector]:
    """Start connectors for a module; all are stopped when the module ends."""
    started: list[Connector] = []

    def start(name: str, settings: dict[str, str]) -> Connector:
        connector = Connector(name, settings)
        started.append(connector)
        return connector

    yield start
    for connector in started:
        connector.stop()


def assert_problem(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    """`response` is an RFC 9457 problem with `status` whose detail says each of `words`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    for word in words:
        assert word in problem["detail"], problem
    return problem


def assert_documented(connector: Connector, endpoints: set[tuple[str, str]]) -> None:
    """`/openapi.json` (served without an identity) lists exactly `endpoints`, each with a
    summary and a description."""
    document = connector.client.get("/openapi.json").json()
    listed = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    assert listed == endpoints
    assert document["info"]["description"]
    for operations in document["paths"].values():
        for operation in operations.values():
            assert operation["summary"], operation
            assert operation["description"], operation


def assert_identity_required(connector: Connector, method: str, path: str) -> None:
    """Without the gateway's signed identity, or with one for another service or signed
    with another key, the call is a 401 and reaches no vendor."""
    forged = sign_identity(
        b"not-the-key", user="eve@corp.com", teams=[], request_id="r", service=connector.name
    )
    for header in ("", forged, connector.identity(service="other")):
        answer = connector.call(method, path, identity=header)
        assert answer.status_code == 401, answer.text
        assert "WWW-Authenticate" in answer.headers
