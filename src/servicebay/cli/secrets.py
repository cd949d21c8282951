"""Secrets: named credentials stored encrypted and injected only where allowed.

A value never travels as a command-line argument (the process list and shell history
would keep it): it comes from stdin or a hidden prompt, and nothing here prints it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from servicebay.cli.admin import JsonFlag
from servicebay.cli.client import api_path, connect
from servicebay.cli.output import Column, fail, read_secret, show, success, when

secrets = typer.Typer(
    help="Set, list, delete and allow secrets (admin only).", no_args_is_help=True
)

SECRET_COLUMNS = (
    Column("name", "name", style="cyan"),
    Column("allowed for", "allow"),
    Column("created", "created_at", when),
    Column("updated", "updated_at", when),
)

Name = Annotated[str, typer.Argument(help="The secret's name, e.g. SALESFORCE_API_KEY.")]


@secrets.command("set")
def set_secret(
    ctx: typer.Context,
    name: Name,
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow",
            help="A resource that may receive it, e.g. service:salesforce; repeat for several. "
            "Replaces the allow-list; without it an existing secret keeps its list.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create or replace a secret; the value is read from stdin or a hidden prompt.

    Example: printf %s "$TOKEN" | bay secrets set SALESFORCE_API_KEY --allow service:salesforce
    """
    api = connect(ctx)
    value = read_secret(f"Value of {name}", confirm=True)
    if not value:
        fail(
            "the secret's value is empty",
            f'Pipe it in, e.g. printf %s "$VALUE" | bay secrets set {name}',
        )
    if allow is None:
        existing = {item["name"]: item["allow"] for item in api.collect(api_path("secrets"))}
        allow = list(existing.get(name, []))
    stored = api.request("PUT", api_path("secrets", name), json={"value": value, "allow": allow})
    show(stored, SECRET_COLUMNS, as_json, message=f"Stored secret {stored['name']}.")


@secrets.command("list")
def list_secrets(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List secrets' names and allow-lists (never their values)."""
    found = connect(ctx).collect(api_path("secrets"))
    show(found, SECRET_COLUMNS, as_json, empty="No secrets.")


@secrets.command("delete")
def delete_secret(ctx: typer.Context, name: Name) -> None:
    """Delete a secret; deployments that used it no longer receive it."""
    connect(ctx).request("DELETE", api_path("secrets", name))
    success(f"Deleted secret {name}.")


@secrets.command("allow")
def allow_secret(
    ctx: typer.Context,
    name: Name,
    resources: Annotated[
        list[str], typer.Argument(help="Resources, e.g. service:salesforce deployment:report.")
    ],
    remove: Annotated[
        bool, typer.Option("--remove", help="Take these resources off the list instead.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Add resources to a secret's allow-list (or take them off with --remove)."""
    api = connect(ctx)
    current: list[str] = api.request("GET", api_path("secrets", name))["allow"]
    if remove:
        wanted = [item for item in current if item not in resources]
    else:
        wanted = current + [item for item in dict.fromkeys(resources) if item not in current]
    stored = api.request("PATCH", api_path("secrets", name), json={"allow": wanted})
    show(stored, SECRET_COLUMNS, as_json, message=f"Updated the allow-list of {name}.")
