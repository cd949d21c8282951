"""`/api/v1/templates`: every authenticated user may list the templates and fetch one as a
tar.gz; the organisation's come from the folder BAY_TEMPLATES_DIR names, and nothing from
outside a template's own folder is ever served."""

from __future__ import annotations

import io
import json
import secrets
import shutil
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.gateway.gateway_support import assert_problem, assert_unauthorized

if TYPE_CHECKING:
    from tests.conftest import Server

REPORT_MANIFEST = {
    "kind": "cron",
    "description": "A weekly report, posted to Slack.",
    "parameters": {
        "channel": {"prompt": "Slack channel", "default": "marketing", "pattern": "^[a-z-]+$"}
    },
}


@pytest.fixture(scope="module")
def templates_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("organisation-templates")


@pytest.fixture(scope="module")
def instance(
    launch: Callable[..., Server], tmp_path_factory: pytest.TempPathFactory, templates_dir: Path
) -> Iterator[Server]:
    """A server whose organisation templates live in `templates_dir` (BAY_TEMPLATES_DIR)."""
    running = launch(
        tmp_path_factory.mktemp("templates-instance"),
        settings={"BAY_TEMPLATES_DIR": str(templates_dir)},
    )
    yield running
    running.stop()


@pytest.fixture
def user(instance: Server) -> Iterator[httpx.Client]:
    """A member without admin rights, teams or grants."""
    _, key = instance.new_user()
    with instance.client(key) as client:
        yield client


def add_template(
    root: Path, files: dict[str, str], manifest: dict[str, Any] | str = REPORT_MANIFEST
) -> tuple[str, Path]:
    """An organisation template with a fresh name: (name, folder)."""
    name = f"report-{secrets.token_hex(4)}"
    folder = root / name
    folder.mkdir()
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    (folder / "template.json").write_text(text)
    for path, content in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(content)
    return name, folder


def listed(client: httpx.Client) -> dict[str, dict[str, Any]]:
    response = client.get("/api/v1/templates")
    assert response.status_code == 200, response.text
    assert response.json()["next"] is None
    return {item["name"]: item for item in response.json()["data"]}


def unpacked(response: httpx.Response) -> dict[str, tuple[bytes, int]]:
    """A bundle's members: name -> (content, mode); asserts each is a plain file."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/gzip"
    members: dict[str, tuple[bytes, int]] = {}
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
        for member in archive:
            assert member.isfile(), member.name
            extracted = archive.extractfile(member)
            assert extracted is not None
            members[member.name] = (extracted.read(), member.mode)
    return members


def test_listing_and_bundles_need_a_key(instance: Server, templates_dir: Path) -> None:
    name, _ = add_template(templates_dir, {"README.md.j2": "# {{ name }}\n"})

    with instance.client() as anonymous:
        listing = anonymous.get("/api/v1/templates")
        bundle = anonymous.get(f"/api/v1/templates/{name}/bundle")
        builtin = anonymous.get("/api/v1/templates/cron/bundle")

    for response in (listing, bundle, builtin):
        assert_unauthorized(response, "an API key is required")
        assert b"README" not in response.content


def test_every_user_sees_the_builtin_templates_then_the_organisations(
    user: httpx.Client, templates_dir: Path
) -> None:
    name, _ = add_template(templates_dir, {"README.md.j2": "# {{ name }}\n"})
    (templates_dir / "NOTES.md").write_text("a loose file is not a template")
    (templates_dir / ".git").mkdir(exist_ok=True)

    found = listed(user)

    names = list(found)
    assert names[:6] == ["code-service", "cron", "dashboard", "server", "service", "webhook"]
    assert names[6:] == sorted(names[6:])
    for kind in ("cron", "server", "service", "webhook"):
        assert found[kind]["builtin"] is True
        assert found[kind]["kind"] == kind
        assert found[kind]["problem"] is None
    assert found[name] == {
        "name": name,
        "kind": "cron",
        "description": "A weekly report, posted to Slack.",
        "parameters": {
            "channel": {"prompt": "Slack channel", "default": "marketing", "pattern": "^[a-z-]+$"}
        },
        "builtin": False,
        "problem": None,
    }
    assert "NOTES.md" not in found
    assert ".git" not in found


@pytest.mark.parametrize(
    ("manifest", "problem"),
    [
        (
            '{"kind": "cron", "description": "x",}',
            "template.json:1:37: Expecting property name enclosed in double quotes",
        ),
        (
            {"kind": "crontab", "description": "x"},
            "template.json: kind: Input should be 'cron', 'webhook', 'service', 'server' or "
            "'dashboard'",
        ),
        (
            {"kind": "cron", "description": "x",
             "parameters": {"c": {"prompt": "C", "pattern": "("}}},
            "parameters.c.pattern: not a regular expression",
        ),
        (
            {"kind": "cron", "description": "x",
             "parameters": {"c": {"prompt": "C", "default": "Big", "pattern": "^[a-z]+$"}}},
            "parameters.c: the default does not fit: 'Big' does not match the pattern ^[a-z]+$",
        ),
        (
            {"kind": "cron", "description": "x", "parameters": {"name": {"prompt": "N"}}},
            "'name' is the NAME argument of `bay new`",
        ),
        ({"kind": "cron", "description": "x", "colour": "red"}, "colour: Extra inputs"),
    ],
)  # fmt: skip
def test_a_broken_manifest_is_listed_with_its_problem_and_not_served(
    user: httpx.Client, templates_dir: Path, manifest: dict[str, Any] | str, problem: str
) -> None:
    good, _ = add_template(templates_dir, {"README.md": "# report\n"})
    broken, _ = add_template(templates_dir, {"README.md": "# report\n"}, manifest)

    found = listed(user)
    bundle = user.get(f"/api/v1/templates/{broken}/bundle")

    assert found[good]["problem"] is None
    assert found[broken]["kind"] is None
    assert problem in found[broken]["problem"]
    assert f"fix template.json in the template folder '{broken}'" in found[broken]["problem"]
    body = assert_problem(bundle, 409, f"template {broken!r} cannot be used")
    assert problem in body["detail"]


def test_a_folder_without_a_manifest_is_listed_with_the_fix(
    user: httpx.Client, templates_dir: Path
) -> None:
    folder = templates_dir / f"bare-{secrets.token_hex(4)}"
    folder.mkdir()

    found = listed(user)

    assert found[folder.name]["problem"] == (
        f"template {folder.name!r} has no template.json: write one in its folder: "
        '{"kind": "cron", "description": "What it makes"}'
    )


def test_the_bundle_holds_the_template_folder(user: httpx.Client, templates_dir: Path) -> None:
    name, folder = add_template(
        templates_dir,
        {"{{ name }}.py.j2": "print('{{ channel }}')\n", "data/regions.csv": "region\n"},
    )
    (folder / "run.sh").write_text("#!/bin/sh\n")
    (folder / "run.sh").chmod(0o755)
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")

    first = user.get(f"/api/v1/templates/{name}/bundle")
    again = user.get(f"/api/v1/templates/{name}/bundle")

    members = unpacked(first)
    assert sorted(members) == ["data/regions.csv", "run.sh", "template.json", "{{ name }}.py.j2"]
    assert members["{{ name }}.py.j2"] == (b"print('{{ channel }}')\n", 0o644)
    assert members["run.sh"][1] == 0o755
    assert json.loads(members["template.json"][0]) == REPORT_MANIFEST
    assert first.headers["content-disposition"] == f'attachment; filename="{name}.tar.gz"'
    assert again.content == first.content  # the same folder packs to the same bytes


def test_a_builtin_template_is_served_too(user: httpx.Client) -> None:
    members = unpacked(user.get("/api/v1/templates/cron/bundle"))

    assert sorted(members) == [
        "README.md.j2",
        "cron.json.j2",
        "requirements.txt",
        "template.json",
        "{{ name }}.py.j2",
    ]


def test_an_organisation_template_cannot_take_a_builtin_name(
    user: httpx.Client, templates_dir: Path
) -> None:
    folder = templates_dir / "webhook"
    folder.mkdir()
    (folder / "template.json").write_text(json.dumps(REPORT_MANIFEST))
    try:
        listing = user.get("/api/v1/templates").json()["data"]
        served = unpacked(user.get("/api/v1/templates/webhook/bundle"))
    finally:
        shutil.rmtree(folder)

    both = [item for item in listing if item["name"] == "webhook"]
    assert [(item["builtin"], item["kind"]) for item in both] == [(True, "webhook"), (False, None)]
    assert both[1]["problem"] == (
        "'webhook' is the name of a built-in template: rename the folder, e.g. to our-webhook"
    )
    assert "webhook.json.j2" in served  # the built-in one, not the organisation's


@pytest.mark.parametrize(
    "name",
    ["%2E%2E", "%2E", "%2Fetc", "..%2F..%2Fetc", "no-such-template", "Report", "a%00b"],
)
def test_only_a_template_name_reaches_the_file_system(user: httpx.Client, name: str) -> None:
    response = user.get(f"/api/v1/templates/{name}/bundle")

    assert_problem(response, 404)
    assert "root:" not in response.text


def test_an_unknown_name_says_where_to_look(user: httpx.Client) -> None:
    response = user.get("/api/v1/templates/%2E%2E/bundle")

    assert_problem(response, 404, "there is no template named '..'; `bay new --list` shows")


def test_a_link_out_of_the_template_is_never_followed(
    user: httpx.Client, templates_dir: Path
) -> None:
    name, folder = add_template(templates_dir, {"README.md.j2": "# {{ name }}\n"})
    (folder / "passwd.j2").symlink_to("/etc/passwd")

    found = listed(user)
    bundle = user.get(f"/api/v1/templates/{name}/bundle")

    assert found[name]["problem"].startswith(
        f"{name}/passwd.j2 is a link that leads out of the template"
    )
    assert_problem(bundle, 409, "is a link that leads out of the template")
    assert b"root:" not in bundle.content


def test_a_link_to_a_folder_is_refused(user: httpx.Client, templates_dir: Path) -> None:
    name, folder = add_template(templates_dir, {"README.md.j2": "# {{ name }}\n"})
    (folder / "etc").symlink_to("/etc", target_is_directory=True)

    bundle = user.get(f"/api/v1/templates/{name}/bundle")

    assert_problem(bundle, 409, f"{name}/etc is a link to a folder")


def test_a_link_to_a_file_inside_the_template_is_served_as_that_file(
    user: httpx.Client, templates_dir: Path
) -> None:
    name, folder = add_template(templates_dir, {"README.md.j2": "# {{ name }}\n"})
    (folder / "README.txt.j2").symlink_to(folder / "README.md.j2")

    members = unpacked(user.get(f"/api/v1/templates/{name}/bundle"))

    assert members["README.txt.j2"] == members["README.md.j2"]
