"""Property-based fuzzing of the HTTP API from its own OpenAPI document: whatever a caller
sends, the gateway never answers with a server error.

The fuzzer talks real HTTP to a server of its own, so what it creates, changes or revokes
cannot disturb other tests. It authenticates as that server's first admin: it cannot
revoke or demote that key by accident (key ids are random, and the server refuses to let
an admin disable or demote themselves).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.case import Case
from schemathesis.schemas import BaseSchema

if TYPE_CHECKING:
    from tests.conftest import Server

EXAMPLES_PER_OPERATION = 25
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)


@pytest.fixture(scope="module")
def fuzzed_server(
    launch: Callable[..., Server], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server for the fuzzing only; once fuzzed, it must still answer, log no error and
    hold an audit chain that verifies."""
    server = launch(tmp_path_factory.mktemp("fuzzed"))
    try:
        yield server
        with server.admin() as admin:
            assert admin.get("/api/v1/me").status_code == 200
            verified = admin.get("/api/v1/audit/verify").json()
        assert verified["ok"] is True, verified["problems"]
        assert verified["checked"] >= 100, "the fuzzer made hardly any request"
        errors = [
            line
            for line in server.log_text().splitlines()
            if '"level": "error"' in line or '"level": "critical"' in line
        ]
        assert not errors, errors[:3]
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed_server: Server) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json", timeout=30)


@pytest.fixture(autouse=True)
def _schemathesis_on_pytest_9(request: pytest.FixtureRequest) -> None:
    """Schemathesis 4.32 reads and renames `item._nodeid`, which pytest 9.2 no longer has
    (it keeps `item._id`): give it the attribute it expects."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@FUZZ_SETTINGS
def test_no_request_of_an_admin_gets_a_server_error(case: Case, fuzzed_server: Server) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {fuzzed_server.admin_key}"},
        checks=[not_a_server_error],
        timeout=30,
    )


@schema.parametrize()
@FUZZ_SETTINGS
def test_no_request_without_a_key_gets_a_server_error(case: Case) -> None:
    case.call_and_validate(checks=[not_a_server_error], timeout=30)
