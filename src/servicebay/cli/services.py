"""Services: register a `service.json` as a live REST service, list, show and remove them.

The document travels as written (less its comments); the server validates it and
connects to its data source, so a wrong table or a missing secret is a 400 that names
the field. A document names its secrets; their values never pass through here.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from servicebay.cli.admin import JsonFlag
from servicebay.cli.client import Api, api_path, connect
from servicebay.cli.output import (
    Column,
    Row,
    console,
    fail,
    print_json,
    print_record,
    show,
    success,
    when,
)
from servicebay.core import jsonc

services = typer.Typer(
    help="Register, list, show and delete services (registering and deleting: admin only).",
    no_args_is_help=True,
)

CONFIG_FILE = "service.json"

SERVICE_COLUMNS = (
    Column("name", "name", style="cyan"),
    Column("kind", "kind"),
    Column("version", "version"),
    Column("description", "description"),
    Column("updated", "updated_at", when),
)

Name = Annotated[str, typer.Argument(help="The service's name, as in its URL: /NAME/...")]


@services.command("register")
def register(
    ctx: typer.Context,
    path: Annotated[
        Path,
        typer.Argument(help=f"A {CONFIG_FILE} file, or a folder holding one.", show_default=False),
    ],
    as_json: JsonFlag = False,
) -> None:
    """Register a service from its service.json, or replace it as a new version.

    Comments are allowed: `#` or `//` to the end of a line, outside strings.

    Example: bay services register ./sales
    """
    document = read_document(path)
    api = connect(ctx)
    status, service = api.exchange("POST", api_path("services"), json=document)
    if as_json:
        print_json(service)
        return
    name, version = service["name"], service["version"]
    if status == 201:
        success(f"Registered service {name} (version {version}).")
    else:
        success(f"Updated service {name} to version {version}.")
    docs = f"{api.url}/{name}/openapi.json"
    lines: list[tuple[str, str]] = [("docs", docs)]
    table = first_table(api, service)
    if table:
        example = f"{api.url}/{name}/{table}" + ("?limit=5" if service["kind"] == "sql" else "")
        curl = f'curl -H "Authorization: Bearer $BAY_API_KEY" {shlex.quote(example)}'
        action = "read" if service["kind"] == "sql" else "invoke"
        grant = f"bay grant team:TEAM service:{name}/{table} {action}"
        lines += [("try", curl), ("allow", grant)]
    print_record(dict(lines), [Column(label, label) for label, _ in lines])


def read_document(path: Path) -> dict[str, Any]:
    """The service document at `path` (a file, or a folder holding `service.json`)."""
    file = path / CONFIG_FILE if path.is_dir() else path
    if not file.exists():
        if path.is_dir():
            fail(
                f"no {CONFIG_FILE} in {path}",
                "Write one there, or give the file's path: bay services register FILE",
            )
        fail(f"{path} does not exist", f"Give a {CONFIG_FILE} file or the folder holding it.")
    try:
        document = jsonc.load(file)
    except jsonc.JsoncError as error:
        fail(str(error), *error.excerpt(), "Fix the file, then run the command again.")
    if not isinstance(document, dict):
        fail(
            f"{file}: a service document is a JSON object, not {_json_type(document)}",
            'Write {"name": ..., "kind": ..., "description": ..., ...}.',
        )
    return document


def first_table(api: Api, service: Row) -> str | None:
    """The first table (or other endpoint) a GET without parameters reads, for an example:
    from the service's live OpenAPI, else the first table its document names."""
    prefix = f"/{service['name']}/"
    openapi = api.probe(f"/{service['name']}/openapi.json")
    paths = openapi.get("paths") if isinstance(openapi, dict) else None
    if isinstance(paths, dict):
        for path, operations in paths.items():
            rest = str(path).removeprefix(prefix)
            if (
                str(path).startswith(prefix)
                and rest
                and not any(c in rest for c in "/{}")
                and isinstance(operations, dict)
                and "get" in operations
            ):
                return rest
    tables = service.get("spec", {}).get("tables")
    return next((str(table) for table in tables), None) if isinstance(tables, dict) else None


@services.command("list")
def list_services(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List registered services; calling one needs a grant (`bay permissions check`)."""
    found = connect(ctx).collect(api_path("services"))
    show(found, SERVICE_COLUMNS, as_json, empty="No services.")


@services.command("show")
def show_service(ctx: typer.Context, name: Name, as_json: JsonFlag = False) -> None:
    """Show a service's version, who registered it, and its document.

    The document names the secrets it uses; their values are never shown.
    """
    api = connect(ctx)
    service = api.request("GET", api_path("services", name))
    if as_json:
        print_json(service)
        return
    docs = f"{api.url}/{service['name']}/openapi.json"
    columns = (
        *SERVICE_COLUMNS[:4],
        Column("created by", "created_by"),
        Column("created", "created_at", when),
        SERVICE_COLUMNS[4],
        Column("docs", lambda _: docs),
    )
    print_record(service, columns)
    console.print()
    console.print(Text(json.dumps(service.get("spec"), indent=2, ensure_ascii=False)))


@services.command("delete")
def delete_service(ctx: typer.Context, name: Name) -> None:
    """Delete a service: its URL stops answering. Its secrets and grants stay."""
    connect(ctx).request("DELETE", api_path("services", name))
    success(f"Deleted service {name}.")


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
