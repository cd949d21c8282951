"""Users, API keys, grants and permission checks: who may call what, over `/api/v1`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.text import Text

from servicebay.cli.client import api_path, connect
from servicebay.cli.output import (
    EXIT_NO,
    Column,
    Row,
    console,
    fail,
    new_key_notice,
    print_json,
    print_record,
    show,
    success,
    when,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table.")]

users = typer.Typer(help="Add, list, disable and enable users (admin only).", no_args_is_help=True)
keys = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
permissions = typer.Typer(help="List grants and check who may do what.", no_args_is_help=True)

USER_COLUMNS = (
    Column("email", "email", style="cyan"),
    Column("name", "name"),
    Column("teams", "teams"),
    Column("admin", "admin"),
    Column("disabled", "disabled"),
    Column("created", "created_at", when),
)


def _key_status(key: Row) -> str:
    if key.get("revoked_at"):
        return "revoked"
    expires = key.get("expires_at")
    if expires and datetime.fromisoformat(expires) <= datetime.now(UTC):
        return "expired"
    return "active"


KEY_COLUMNS = (
    Column("id", "id", style="cyan"),
    Column("user", "user"),
    Column("name", "name"),
    Column("prefix", "prefix"),
    Column("status", _key_status),
    Column("created", "created_at", when),
    Column("expires", "expires_at", when),
    Column("last used", "last_used_at", when),
)

GRANT_COLUMNS = (
    Column("id", "id", style="cyan"),
    Column("principal", "principal"),
    Column("resource", "resource"),
    Column("actions", "actions"),
    Column("created by", "created_by"),
    Column("created", "created_at", when),
)

CHECK_COLUMNS = (Column("reason", "reason"), Column("grant", "grant"))


def principal_of(text: str) -> str:
    """Accept a bare e-mail where a principal is expected: `ann@corp` means `user:ann@corp`."""
    if ":" in text or text == "*" or "@" not in text:
        return text
    return f"user:{text}"


@users.command("add")
def add_user(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The user's e-mail; it identifies them.")],
    name: Annotated[str, typer.Option("--name", help="Their full name.")],
    team: Annotated[
        list[str] | None, typer.Option("--team", help="A team to join; repeat for several.")
    ] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Make them an administrator.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Add a user; give them a key next with `bay keys create --user EMAIL`."""
    body = {"email": email, "name": name, "teams": team or [], "admin": admin}
    user = connect(ctx).request("POST", api_path("users"), json=body)
    show(user, USER_COLUMNS, as_json, message=f"Added user {user['email']}.")


@users.command("list")
def list_users(
    ctx: typer.Context,
    team: Annotated[str | None, typer.Option("--team", help="Only members of this team.")] = None,
    include_disabled: Annotated[
        bool, typer.Option("--all", help="Include disabled users.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """List active users (all of them with --all)."""
    params = {"team": team, "include_disabled": "true" if include_disabled else None}
    show(connect(ctx).collect(api_path("users"), params), USER_COLUMNS, as_json, empty="No users.")


def _set_disabled(ctx: typer.Context, email: str, disabled: bool, as_json: bool) -> None:
    user = connect(ctx).request("PATCH", api_path("users", email), json={"disabled": disabled})
    verb = "Disabled" if disabled else "Enabled"
    show(user, USER_COLUMNS, as_json, message=f"{verb} user {user['email']}.")


@users.command("disable")
def disable_user(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The user's e-mail.")],
    as_json: JsonFlag = False,
) -> None:
    """Disable a user: their keys stop working within seconds.

    Users are never deleted, so the audit log keeps pointing at someone.
    """
    _set_disabled(ctx, email, True, as_json)


@users.command("enable")
def enable_user(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The user's e-mail.")],
    as_json: JsonFlag = False,
) -> None:
    """Enable a disabled user again; their unrevoked keys work again."""
    _set_disabled(ctx, email, False, as_json)


@keys.command("create")
def create_key(
    ctx: typer.Context,
    user: Annotated[
        str | None, typer.Option("--user", help="Whose key (admin only); default: yours.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="What it is for, e.g. laptop.")] = None,
    expires_in_days: Annotated[
        int | None, typer.Option("--expires-in-days", min=1, help="Expire after D days.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create an API key and print it, the only time it is ever shown."""
    body = {"user": user, "name": name, "expires_in_days": expires_in_days}
    created: dict[str, Any] = connect(ctx).request(
        "POST", api_path("keys"), json={k: v for k, v in body.items() if v is not None}
    )
    if as_json:
        print_json(created)
        return
    success(f"Created key {created['id']} for {created['user']}.")
    new_key_notice(created["key"])


@keys.command("list")
def list_keys(
    ctx: typer.Context,
    user: Annotated[
        str | None, typer.Option("--user", help="Whose keys (admin only); default: yours.")
    ] = None,
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List keys' metadata (never the keys themselves)."""
    params = {"user": user, "include_revoked": "true" if include_revoked else None}
    show(connect(ctx).collect(api_path("keys"), params), KEY_COLUMNS, as_json, empty="No keys.")


@keys.command("revoke")
def revoke_key(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id (key_...).")],
) -> None:
    """Revoke a key: it stops working on every node within seconds."""
    connect(ctx).request("DELETE", api_path("keys", key_id))
    success(f"Revoked key {key_id}.")


def grant(
    ctx: typer.Context,
    principal: Annotated[
        str, typer.Argument(help="user:EMAIL (or a bare e-mail), team:NAME, or * for everyone.")
    ],
    resource: Annotated[
        str, typer.Argument(help="service:NAME[/GLOB], webhook:NAME, app:NAME, deployment:NAME.")
    ],
    actions: Annotated[
        list[str], typer.Argument(help="invoke, read, create, update, delete or manage.")
    ],
    as_json: JsonFlag = False,
) -> None:
    """Allow PRINCIPAL to do ACTIONS on RESOURCE.

    Example: bay grant team:marketing service:instagram invoke
    """
    body = {
        "principal": principal_of(principal),
        "resource": resource,
        "actions": [action for word in actions for action in word.split(",") if action],
    }
    created = connect(ctx).request("POST", api_path("grants"), json=body)
    show(created, GRANT_COLUMNS, as_json, message=f"Created grant {created['id']}.")


def revoke(
    ctx: typer.Context,
    target: Annotated[
        list[str],
        typer.Argument(
            metavar="GRANT_ID | PRINCIPAL RESOURCE",
            help="A grant's id, or a principal and resource whose grants all go.",
        ),
    ],
) -> None:
    """Delete a grant by id, or every grant of PRINCIPAL on exactly RESOURCE.

    Exit code 1 when no grant matched.
    """
    api = connect(ctx)
    if len(target) == 1:
        api.request("DELETE", api_path("grants", target[0]))
        success(f"Revoked grant {target[0]}.")
        return
    if len(target) != 2:
        raise typer.BadParameter("give a grant id, or a principal and a resource")
    principal, resource = principal_of(target[0]), target[1]
    found = api.collect(api_path("grants"), {"principal": principal, "resource": resource})
    matching = [g for g in found if g["principal"] == principal and g["resource"] == resource]
    if not matching:
        fail(
            f"no grant gives {principal} anything on {resource}",
            "See `bay permissions list` for the grants that exist.",
            code=EXIT_NO,
        )
    for match in matching:
        api.request("DELETE", api_path("grants", match["id"]))
    ids = ", ".join(match["id"] for match in matching)
    plural = "" if len(matching) == 1 else "s"
    success(f"Revoked {len(matching)} grant{plural} of {principal} on {resource} ({ids}).")


@permissions.command("list")
def list_grants(
    ctx: typer.Context,
    principal: Annotated[str | None, typer.Option("--principal", help="Only this one's.")] = None,
    resource: Annotated[str | None, typer.Option("--resource", help="Only on this.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List grants (members see those that apply to them)."""
    params = {"principal": principal and principal_of(principal), "resource": resource}
    found = connect(ctx).collect(api_path("grants"), params)
    show(found, GRANT_COLUMNS, as_json, empty="No grants.")


@permissions.command("check")
def check(
    ctx: typer.Context,
    principal: Annotated[str, typer.Argument(help="user:EMAIL (or a bare e-mail) or team:NAME.")],
    resource: Annotated[str, typer.Argument(help="e.g. service:instagram.")],
    action: Annotated[str, typer.Argument(help="e.g. invoke.")],
    as_json: JsonFlag = False,
) -> None:
    """Say whether PRINCIPAL may do ACTION on RESOURCE, why, and which grant decided.

    Exit code 0 when allowed, 1 when denied, 2 when the check itself failed.
    """
    who = principal_of(principal)
    params = {"principal": who, "resource": resource, "action": action}
    verdict = connect(ctx).request("GET", api_path("permissions", "check"), params=params)
    allowed = bool(verdict["allowed"])
    if as_json:
        print_json(verdict)
    else:
        verb = "may" if allowed else "may not"
        console.print(
            Text.assemble(
                ("allowed:" if allowed else "denied:", "green" if allowed else "red"),
                f" {who} {verb} {action} {resource}",
            )
        )
        print_record(verdict, CHECK_COLUMNS)
    raise typer.Exit(0 if allowed else EXIT_NO)
