"""The `bay` command's entry point: global options and the command tree."""

from __future__ import annotations

from typing import Annotated

import typer

from servicebay import __version__
from servicebay.cli import (
    admin,
    audit,
    demo,
    deploy,
    instance,
    login,
    new,
    runs,
    secrets,
    services,
)
from servicebay.cli.client import Target

app = typer.Typer(
    name="bay",
    help="ServiceBay: every data source a permissioned REST service.",
    no_args_is_help=True,
    # Locals in a traceback could hold API keys or secret values.
    pretty_exceptions_show_locals=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"bay (ServiceBay) {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Server URL; else BAY_URL, the `bay login` file, http://127.0.0.1:8600.",
            show_default=False,
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="API key; else BAY_API_KEY, INTERNAL_API_KEY, the `bay login` file. "
            "Prefer those: other local users can read a process's arguments.",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """ServiceBay's command line: run an instance and administer it over its HTTP API."""
    ctx.obj = Target(url=url, key=key)


app.command(rich_help_panel="Instance")(instance.init)
app.command(rich_help_panel="Instance")(instance.serve)
app.command(rich_help_panel="Instance")(demo.demo)
app.command(rich_help_panel="Session")(login.login)
app.command(rich_help_panel="Session")(login.logout)
app.command(rich_help_panel="Session")(login.whoami)
app.add_typer(admin.users, name="users", rich_help_panel="Administration")
app.add_typer(admin.keys, name="keys", rich_help_panel="Administration")
app.command(rich_help_panel="Administration")(admin.grant)
app.command(rich_help_panel="Administration")(admin.revoke)
app.add_typer(admin.permissions, name="permissions", rich_help_panel="Administration")
app.add_typer(secrets.secrets, name="secrets", rich_help_panel="Administration")
app.add_typer(audit.audit, name="audit", rich_help_panel="Administration")
app.add_typer(services.services, name="services", rich_help_panel="Services")
app.command(rich_help_panel="Deployments")(new.new)
app.command(rich_help_panel="Deployments")(deploy.deploy)
app.add_typer(deploy.deployments, name="deployments", rich_help_panel="Deployments")
app.command(rich_help_panel="Deployments")(runs.run)
app.add_typer(runs.runs, name="runs", rich_help_panel="Deployments")

if __name__ == "__main__":
    app()
