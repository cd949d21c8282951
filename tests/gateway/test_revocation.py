"""Two `bay serve` nodes on one instance: a key revoked, a user disabled or a grant deleted
through node A is refused by node B within 5 seconds, though B had just served it.

Once on SQLite (B opens the shared fixture's home) and once on PostgreSQL (two fresh nodes
on a throwaway database).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.gateway.gateway_support import (
    REVOCATION_BOUND_SECONDS,
    assert_unauthorized,
    unique_name,
    wait_for,
)

if TYPE_CHECKING:
    from tests.conftest import Server

Nodes = tuple["Server", "Server"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def nodes(
    request: pytest.FixtureRequest,
    server: Server,
    start_server: Callable[..., Server],
    tmp_path_factory: pytest.TempPathFactory,
) -> Nodes:
    """(A, B): two processes serving the same instance; A holds the admin key."""
    if request.param == "sqlite":
        return server, start_server(server.home, init=False)
    url: str = request.getfixturevalue("postgres_url")
    home = tmp_path_factory.mktemp("postgres-instance")
    a = start_server(home, database_url=url)
    b = start_server(home, init=False, database_url=url)
    return a, b


def me_on(node: Server, key: str) -> httpx.Response:
    with node.client(key) as client:
        return client.get("/api/v1/me")


def test_a_key_revoked_on_one_node_is_refused_by_the_other_within_5_seconds(
    nodes: Nodes,
) -> None:
    a, b = nodes
    email, key = a.new_user()
    assert me_on(b, key).status_code == 200
    with a.admin() as admin:
        key_id = admin.get("/api/v1/keys", params={"user": email}).json()["data"][0]["id"]

        assert admin.delete(f"/api/v1/keys/{key_id}").status_code == 204

    answer, elapsed = wait_for(lambda: me_on(b, key), lambda r: r.status_code == 401)
    assert_unauthorized(answer, "revoked")
    assert elapsed <= REVOCATION_BOUND_SECONDS
    assert me_on(a, key).status_code == 401


def test_a_user_disabled_on_one_node_is_refused_by_the_other_within_5_seconds(
    nodes: Nodes,
) -> None:
    a, b = nodes
    email, key = a.new_user()
    assert me_on(b, key).status_code == 200
    with a.admin() as admin:
        assert admin.patch(f"/api/v1/users/{email}", json={"disabled": True}).status_code == 200

    answer, elapsed = wait_for(lambda: me_on(b, key), lambda r: r.status_code == 401)
    assert_unauthorized(answer, "disabled")
    assert elapsed <= REVOCATION_BOUND_SECONDS


def test_a_grant_deleted_on_one_node_stops_allowing_on_the_other_within_5_seconds(
    nodes: Nodes,
) -> None:
    a, b = nodes
    email, key = a.new_user()
    resource = f"service:{unique_name()}"

    def allowed_on_b() -> bool:
        with b.client(key) as client:
            check = client.get(
                "/api/v1/permissions/check", params={"resource": resource, "action": "read"}
            )
        assert check.status_code == 200, check.text
        return bool(check.json()["allowed"])

    with a.admin() as admin:
        grant = admin.post(
            "/api/v1/grants",
            json={"principal": f"user:{email}", "resource": resource, "actions": ["read"]},
        ).json()
        granted, _ = wait_for(allowed_on_b, lambda allowed: allowed)
        assert granted, "node B never saw the new grant"

        assert admin.delete(f"/api/v1/grants/{grant['id']}").status_code == 204

    still_allowed, elapsed = wait_for(allowed_on_b, lambda allowed: not allowed)
    assert not still_allowed
    assert elapsed <= REVOCATION_BOUND_SECONDS
