"""`bay login`, `bay logout`, `bay whoami`: remember a server and key, forget them, check them."""

from __future__ import annotations

from typing import Annotated

import typer

from servicebay.cli.admin import USER_COLUMNS, JsonFlag
from servicebay.cli.client import Api, api_path, connect, resolve_url, target_of
from servicebay.cli.config import forget_login, login_path, save_login
from servicebay.cli.output import Column, fail, read_secret, show, success

ME_COLUMNS = (  # the user's columns but "created", then the key in use
    *USER_COLUMNS[:-1],
    Column("key", lambda me: (me.get("key") or {}).get("id")),
)


def login(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option("--url", help="The server; default: BAY_URL, else http://127.0.0.1:8600."),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option("--key", help="The API key; else read from stdin or a hidden prompt."),
    ] = None,
) -> None:
    """Check an API key against a server and save both for later commands (file mode 0600)."""
    server = resolve_url(url or target_of(ctx).url)
    secret = (key or target_of(ctx).key or read_secret("API key")).strip()
    if not secret:
        fail("no API key given", "Create one with `bay keys create` or ask an admin.")
    me = Api(server, secret).request("GET", api_path("me"))
    path = save_login(server, secret)
    role = " (admin)" if me.get("admin") else ""
    success(f"Logged in to {server} as {me['email']}{role}; saved to {path}.")


def logout() -> None:
    """Forget the saved server and key (the key itself stays valid: `bay keys revoke` ends it)."""
    path = forget_login()
    if path is None:
        typer.echo(f"Not logged in ({login_path()} does not exist).")
    else:
        success(f"Logged out: removed {path}.")


def whoami(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Show who the current key belongs to, and which server answered."""
    api = connect(ctx)
    show(api.request("GET", api_path("me")), ME_COLUMNS, as_json, message=f"Server: {api.url}")
