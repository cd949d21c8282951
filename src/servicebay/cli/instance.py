"""`bay init` and `bay serve`: the two commands that work on an instance directly, not over HTTP."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from servicebay.cli.admin import JsonFlag
from servicebay.cli.output import console, fail, new_key_notice, print_json, success
from servicebay.runtime.node import Role

# The server side (SQLAlchemy, Alembic, FastAPI) is imported only by the commands that
# need it: it would triple the start-up time of every other `bay` command.
if TYPE_CHECKING:
    from servicebay.core.instance import InstanceCreated
    from servicebay.core.settings import Settings

Home = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="The instance's folder (default: BAY_HOME, else ~/.servicebay).",
        show_default=False,
    ),
]


def instance_settings(
    home: Path | None,
    *,
    host: str | None = None,
    port: int | None = None,
    isolated: bool = False,
) -> Settings:
    """BAY_* settings with the command line's choices on top; bad values are a clear error.

    `isolated` ignores BAY_DATABASE_URL and BAY_MASTER_KEY, so that variables meant for a
    real instance can never point a throwaway one (the demo's) at it.
    """
    from pydantic import ValidationError

    from servicebay.core.settings import Settings

    chosen: dict[str, Any] = {
        "home": home and home.expanduser().resolve(),
        "host": host,
        "port": port,
    }
    chosen = {name: value for name, value in chosen.items() if value is not None}
    if isolated:
        chosen |= {"database_url": None, "master_key": None}
    try:
        return Settings(**chosen)
    except ValidationError as exc:
        problems = [
            f"BAY_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        ]
        fail("invalid settings", *problems)


def create_instance(settings: Settings, admin_email: str, admin_name: str) -> InstanceCreated:
    """Run core's `init_instance`, turning its expected failures into messages."""
    from sqlalchemy.exc import SQLAlchemyError

    from servicebay.core.errors import ServiceBayError
    from servicebay.core.instance import init_instance

    os.umask(0o077)  # the database holds key hashes and encrypted secrets: owner only
    try:
        return asyncio.run(init_instance(settings, admin_email=admin_email, admin_name=admin_name))
    except ServiceBayError as exc:
        fail(exc.message)
    except OSError as exc:
        fail(f"cannot create the instance in {settings.home}: {exc.strerror or exc}")
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        fail(
            f"cannot set up the database {settings.resolved_database_url_display}: {reason}",
            "Check BAY_DATABASE_URL and that its server is up.",
        )


def init(
    home: Home = None,
    admin_email: Annotated[
        str, typer.Option("--admin-email", help="The first administrator's e-mail.")
    ] = "admin@localhost",
    admin_name: Annotated[
        str, typer.Option("--admin-name", help="The first administrator's name.")
    ] = "Administrator",
    as_json: JsonFlag = False,
) -> None:
    """Create an instance: its database, master key, first admin and their API key.

    The admin key is printed once; keep it somewhere safe.
    """
    settings = instance_settings(home)
    created = create_instance(settings, admin_email, admin_name)
    if as_json:
        print_json(
            {
                "home": str(created.home),
                "database_url": created.database_url,
                "admin": {"email": created.admin_email},
                "key": {"id": created.key_id, "key": created.api_key},
            }
        )
        return
    success(f"Created a ServiceBay instance in {created.home}.")
    console.print(f"Database: {created.database_url}")
    console.print(f"Admin: {created.admin_email}, API key {created.key_id}:")
    new_key_notice(created.api_key)
    console.print("\nStart the server, then point `bay` and your scripts at it:\n")
    console.print(f"  bay serve --home {settings.home}", soft_wrap=True)
    console.print(
        f"  export BAY_URL={settings.base_url} BAY_API_KEY={created.api_key}", soft_wrap=True
    )


def serve(
    home: Home = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Address to listen on (default 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help="Port to listen on (default 8600)."),
    ] = None,
    role: Annotated[
        Role,
        typer.Option(
            "--role",
            envvar="BAY_ROLE",
            help="What this process does besides serving HTTP: all (the scheduler and run "
            "workers too), api (HTTP only), scheduler, or worker (runs queued runs).",
        ),
    ] = Role.all,
) -> None:
    """Run the platform until interrupted (Ctrl-C).

    One process plays every role by default. To scale out, point every process at one
    PostgreSQL (BAY_DATABASE_URL) and start `--role api` behind the load balancer and
    `--role worker` elsewhere.
    """
    from sqlalchemy.engine import make_url

    from servicebay.core.errors import ServiceBayError
    from servicebay.gateway.server import serve as run_gateway

    settings = instance_settings(home, host=host, port=port)
    database = make_url(settings.resolved_database_url)
    missing_sqlite = database.get_backend_name() == "sqlite" and not (
        database.database and Path(database.database).exists()
    )
    if missing_sqlite or not (settings.master_key or settings.master_key_path.exists()):
        fail(
            f"no ServiceBay instance in {settings.home}",
            f"Create one with `bay init --home {settings.home}`, or set BAY_HOME.",
        )
    try:
        run_gateway(settings, role=role)
    except ServiceBayError as exc:
        fail(exc.message)
