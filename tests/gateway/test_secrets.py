"""Secrets are write-only: every answer is metadata, and the value appears nowhere else."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.gateway.gateway_support import assert_problem, unique_name

if TYPE_CHECKING:
    from tests.conftest import Server

METADATA_FIELDS = {"name", "allow", "created_at", "updated_at"}


def secret_name() -> str:
    return unique_name("SECRET").upper()


def distinctive_value() -> str:
    return f"s3cr3t-{secrets.token_hex(12)}"


def test_put_creates_a_secret_and_answers_with_its_metadata_only(admin: httpx.Client) -> None:
    name, value = secret_name(), distinctive_value()

    put = admin.put(
        f"/api/v1/secrets/{name}",
        json={
            "value": value,
            "allow": ["service:salesforce", "deployment:etl", "service:salesforce"],
        },
    )

    assert put.status_code == 200, put.text
    assert set(put.json()) == METADATA_FIELDS
    assert put.json()["name"] == name
    assert put.json()["allow"] == ["deployment:etl", "service:salesforce"]
    assert value not in put.text


def test_a_new_secret_without_allow_list_is_allowed_for_nothing(admin: httpx.Client) -> None:
    name = secret_name()

    put = admin.put(f"/api/v1/secrets/{name}", json={"value": distinctive_value()})

    assert put.status_code == 200, put.text
    assert put.json()["allow"] == []


def test_put_again_replaces_the_value_and_keeps_the_allow_list_when_omitted(
    admin: httpx.Client,
) -> None:
    name = secret_name()
    first = admin.put(
        f"/api/v1/secrets/{name}", json={"value": distinctive_value(), "allow": ["service:crm"]}
    ).json()

    second = admin.put(f"/api/v1/secrets/{name}", json={"value": distinctive_value()})

    assert second.status_code == 200, second.text
    assert second.json()["allow"] == ["service:crm"]
    assert second.json()["created_at"] == first["created_at"]
    assert second.json()["updated_at"] >= first["updated_at"]


def test_patch_replaces_the_allow_list(admin: httpx.Client) -> None:
    name = secret_name()
    admin.put(f"/api/v1/secrets/{name}", json={"value": "v", "allow": ["service:crm"]})

    patched = admin.patch(f"/api/v1/secrets/{name}", json={"allow": ["deployment:report"]})

    assert patched.status_code == 200, patched.text
    assert patched.json()["allow"] == ["deployment:report"]
    assert admin.get(f"/api/v1/secrets/{name}").json()["allow"] == ["deployment:report"]


def test_list_and_get_show_the_same_metadata(admin: httpx.Client) -> None:
    name = secret_name()
    put = admin.put(f"/api/v1/secrets/{name}", json={"value": "v", "allow": ["service:crm"]})

    listed = admin.get("/api/v1/secrets")
    shown = admin.get(f"/api/v1/secrets/{name}")

    assert listed.status_code == 200, listed.text
    assert listed.json()["next"] is None
    assert next(item for item in listed.json()["data"] if item["name"] == name) == put.json()
    assert shown.json() == put.json()


def test_a_deleted_secret_is_gone(admin: httpx.Client) -> None:
    name = secret_name()
    admin.put(f"/api/v1/secrets/{name}", json={"value": "v"})

    assert admin.delete(f"/api/v1/secrets/{name}").status_code == 204

    assert_problem(admin.get(f"/api/v1/secrets/{name}"), 404, name)
    assert_problem(admin.patch(f"/api/v1/secrets/{name}", json={"allow": []}), 404, name)
    assert_problem(admin.delete(f"/api/v1/secrets/{name}"), 404, name)
    assert name not in {item["name"] for item in admin.get("/api/v1/secrets").json()["data"]}


@pytest.mark.parametrize("name", ["lowercase", "HAS-DASH", "1STARTS_WITH_DIGIT", "A" * 129])
def test_a_secret_name_must_be_an_environment_variable_name(admin: httpx.Client, name: str) -> None:
    answer = admin.put(f"/api/v1/secrets/{name}", json={"value": "v"})

    problem = assert_problem(answer, 400)
    assert problem["errors"][0]["loc"] == ["path", "name"]


@pytest.mark.parametrize(
    "allow",
    [["everyone"], ["service:"], ["service:Bad"], ["user:a@b"], ["webhook:hook"], ["alerts:x"]],
)
def test_an_allow_entry_must_name_a_service_a_deployment_or_the_alerts(
    admin: httpx.Client, allow: list[str]
) -> None:
    name = secret_name()

    answer = admin.put(f"/api/v1/secrets/{name}", json={"value": "v", "allow": allow})

    problem = assert_problem(answer, 400, "allow-list")
    assert problem["errors"][0]["loc"] == ["body", "allow"]
    assert_problem(admin.get(f"/api/v1/secrets/{name}"), 404)


@pytest.mark.parametrize(("value", "why"), [("", "empty"), ("x" * (64 * 1024 + 1), "limited")])
def test_a_value_must_be_between_1_byte_and_64_kib(
    admin: httpx.Client, value: str, why: str
) -> None:
    answer = admin.put(f"/api/v1/secrets/{secret_name()}", json={"value": value})

    problem = assert_problem(answer, 400, why)
    assert problem["errors"][0]["loc"] == ["body", "value"]


def test_every_secret_change_is_audited_without_its_value(admin: httpx.Client) -> None:
    name, value = secret_name(), distinctive_value()
    admin.put(f"/api/v1/secrets/{name}", json={"value": value, "allow": ["service:crm"]})
    admin.put(f"/api/v1/secrets/{name}", json={"value": value})
    admin.patch(f"/api/v1/secrets/{name}", json={"allow": []})
    admin.delete(f"/api/v1/secrets/{name}")

    events = admin.get("/api/v1/audit", params={"resource": f"secret:{name}"})

    assert [event["action"] for event in events.json()["data"]] == [
        "secret.delete", "secret.allow", "secret.update", "secret.create",
    ]  # fmt: skip
    assert value not in events.text


def test_a_secret_value_is_never_returned_logged_or_audited(
    server: Server, admin: httpx.Client, member: tuple[str, str]
) -> None:
    name, value = secret_name(), distinctive_value()
    path = f"/api/v1/secrets/{name}"
    answers: list[httpx.Response] = [
        admin.put(path, json={"value": value, "allow": ["service:crm"]}),
        admin.put(path, json={"value": value}),
        admin.patch(path, json={"allow": ["service:crm", "deployment:etl"]}),
        admin.get("/api/v1/secrets"),
        admin.get(path),
    ]
    assert [answer.status_code for answer in answers] == [200] * len(answers)
    refused: list[tuple[httpx.Response, int]] = [
        (admin.put(path, json={"value": value, "allow": ["not an entry"]}), 400),
        (admin.put("/api/v1/secrets/bad-name", json={"value": value}), 400),
        (admin.put(path, json={"value": value, "allow": "service:crm"}), 400),
        (admin.put(path, json={"value": [value]}), 400),
        (admin.put(path, json={"value": {"nested": value}}), 400),
        (admin.put(path, json={"value": "v", "note": value}), 400),
        (admin.put(path, json={"value": value + "x" * 64 * 1024}), 400),
        (admin.put(path, content=f'{{"value": "{value}", "allow": [}}'.encode(),
                   headers={"content-type": "application/json"}), 400),
        (admin.put(path, content=f'{{"value": "{value}"'.encode(),
                   headers={"content-type": "application/json"}), 400),
        (httpx.put(server.url + path, json={"value": value}), 401),
    ]  # fmt: skip
    with server.client(member[1]) as client:
        refused.append((client.put(path, json={"value": value}), 403))
    for answer, status in refused:
        assert_problem(answer, status)
        answers.append(answer)
    answers += [
        admin.get("/api/v1/audit", params={"limit": 200}),
        admin.get("/api/v1/audit/export"),
        admin.get("/metrics"),
        admin.get("/openapi.json"),
    ]

    for answer in answers:
        assert value not in answer.text, (answer.request.method, answer.request.url)
        assert all(value not in header for header in answer.headers.values())
    assert value not in server.log_text()


def test_a_secret_is_stored_encrypted(server: Server, admin: httpx.Client) -> None:
    value = distinctive_value()

    assert admin.put(f"/api/v1/secrets/{secret_name()}", json={"value": value}).status_code == 200

    for file in server.home.glob("servicebay.db*"):
        assert value.encode() not in file.read_bytes(), file.name
