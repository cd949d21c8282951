"""`bay new`: scaffold a deployment folder from a template.

Built-in templates (`bay new --list`: cron, webhook, server, dashboard, service,
code-service) render on this machine, without a server.
An organisation template (`--template`) comes from the instance as a bundle; `bay new`
asks for each of its parameters (or takes them from `--param`) and renders it with the
deployment's name. Nothing is written until every file has rendered, and never into a
folder that already holds something.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.text import Text

from servicebay.cli.client import Api, api_path, resolve_key, resolve_url, target_of
from servicebay.cli.output import Column, console, errors, fail, print_json, print_table, success
from servicebay.core import jsonc
from servicebay.services.spec import RESERVED_NAMES
from servicebay.templates import catalog, render
from servicebay.templates.catalog import Template, TemplateFile
from servicebay.templates.manifest import Manifest, TemplateError

KINDS = ("cron", "webhook", "service", "server", "dashboard")

TEMPLATE_COLUMNS = (
    Column("template", "name", style="cyan"),
    Column("kind", "kind"),
    Column("from", lambda row: "built-in" if row.get("builtin") else "organisation"),
    Column("parameters", lambda row: list(row.get("parameters") or {})),
    Column(
        "description",
        lambda row: (
            f"cannot be used: {row['problem']}" if row.get("problem") else row["description"]
        ),
    ),
)


class TemplateSource(Api):
    """The instance's template catalogue: `Api`, plus a template's bundle as raw bytes."""

    def bundle(self, name: str) -> bytes:
        path = api_path("templates", name, "bundle")
        with self._guard():
            response = self._http.get(path)
        if response.is_error:
            self._fail(response)
        return response.content


def new(
    ctx: typer.Context,
    kind: Annotated[
        str | None,
        typer.Argument(help="cron, webhook, server, dashboard or service.", show_default=False),
    ] = None,
    name: Annotated[
        str | None,
        typer.Argument(
            help="The deployment's name: lowercase letters, digits, '-', '_'; it becomes "
            "its URL, sub-domain and script name.",
            show_default=False,
        ),
    ] = None,
    template: Annotated[
        str | None,
        typer.Option(
            "--template",
            "-t",
            help="An organisation template from the instance (see --list).",
            show_default=False,
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="KEY=VALUE for a template parameter; repeat for several. Missing ones are "
            "asked for (with a terminal) or taken from their defaults.",
            show_default=False,
        ),
    ] = None,
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="The folder to create; default ./NAME.", show_default=False),
    ] = None,
    list_templates: Annotated[
        bool, typer.Option("--list", help="List the kinds and the organisation's templates.")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print {"path", "kind", "files"} for scripts (with --list: the templates).',
        ),
    ] = False,
) -> None:
    """Scaffold a deployment folder: its config file, a script in three steps (pull
    through the services, analyse, output), README.md and requirements.txt.

    Examples:
      bay new cron weekly-report
      bay new webhook customer-lookup --dir hooks/customer-lookup
      bay new service crm --template code-service
      bay new dashboard sales-board
      bay new cron digest --template slack-digest --param channel=marketing
      bay new --list
    """
    if list_templates:
        _list(ctx, as_json)
        return
    if kind is None or name is None:
        fail(
            "give a kind and a name, e.g. bay new cron weekly-report",
            "`bay new --list` shows the kinds and your organisation's templates.",
        )
    folder = directory or Path(name)
    with _reported():
        render.check_name(name)
        _check_kind(kind, name)
        render.check_destination(folder)
    given = _parse_params(param or [])
    if template is None:
        if given:
            fail(
                "--param is for organisation templates (--template); built-in ones take "
                "only the name",
                f"Run: bay new {kind} {name}",
            )
        with _reported():
            chosen = catalog.builtin_template(kind)
    else:
        if template in catalog.builtin_names():  # e.g. code-service: no instance needed
            with _reported():
                chosen = catalog.builtin_template(template)
        else:
            chosen = _fetch(ctx, template)
        if chosen.manifest.kind != kind:
            fail(
                f"template {template!r} makes a {chosen.manifest.kind}, not a {kind}",
                f"Run: bay new {chosen.manifest.kind} {name} --template {template}",
            )
    values = {"name": name, **_answers(chosen, given)}
    with _reported():
        files = render.render(chosen, values)
        render.write(folder, files)
    paths = [file.path.as_posix() for file in files]
    if as_json:
        print_json({"path": str(folder.resolve()), "kind": kind, "files": paths})
        return
    origin = f"template {template!r}" if template else f"the built-in {kind} template"
    success(f"Created {folder}/ from {origin}:")
    for path in paths:
        console.print(Text(f"  {folder / path}"))
    console.print()
    console.print(Text("Next:", style="bold"))
    for number, step in enumerate(_next_steps(kind, name, folder, files), start=1):
        console.print(Text(f"  {number}. {step}"))


def _check_kind(kind: str, name: str) -> None:
    if kind not in KINDS:
        raise TemplateError(
            f"{kind!r} is not a kind of deployment",
            f"choose one of {', '.join(KINDS)}; `bay new --list` shows every template",
        )
    if kind == "service" and name in RESERVED_NAMES:
        raise TemplateError(
            f"{name!r} is reserved for the platform's own routes, so no service can be called that",
            "choose another name",
        )


def _parse_params(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            fail(f"--param {pair!r} is not KEY=VALUE", "Write it like --param channel=marketing")
        if key.strip() in values:
            fail(f"--param {key.strip()} is given twice", "Give each parameter once.")
        values[key.strip()] = value
    return values


def _source(ctx: typer.Context) -> TemplateSource | None:
    """The instance's catalogue, or None when no API key is configured."""
    target = target_of(ctx)
    key = resolve_key(target.key)
    return TemplateSource(resolve_url(target.url), key) if key else None


def _fetch(ctx: typer.Context, name: str) -> Template:
    source = _source(ctx)
    if source is None:
        fail(
            "organisation templates come from your ServiceBay instance, and no API key is set",
            "Run `bay login`, or set BAY_API_KEY (and BAY_URL), then try again.",
        )
    data = source.bundle(name)
    try:
        return catalog.unpack(name, data)
    except TemplateError as error:
        _fail_with(error)


def _answers(template: Template, given: dict[str, str]) -> dict[str, str]:
    """A value for every parameter: from --param, else asked at the terminal, else the
    default; without a terminal, a parameter with no default is an error naming it."""
    manifest = template.manifest
    unknown = sorted(given.keys() - manifest.parameters.keys())
    if unknown:
        known = ", ".join(manifest.parameters) or "none"
        fail(
            f"template {template.name!r} has no parameter {', '.join(unknown)}",
            f"Its parameters: {known}.",
        )
    for key, value in given.items():
        problem = manifest.parameters[key].problem(value)
        if problem:
            fail(f"--param {key}: {problem}", f"{key} is: {manifest.parameters[key].prompt}")
    missing = [key for key in manifest.parameters if key not in given]
    if not sys.stdin.isatty():
        return {**given, **_defaults(template.name, manifest, missing)}
    return {**given, **{key: _ask(manifest, key) for key in missing}}


def _defaults(template: str, manifest: Manifest, missing: list[str]) -> dict[str, str]:
    unanswered = [key for key in missing if manifest.parameters[key].default is None]
    if unanswered:
        fail(
            f"template {template!r} needs {', '.join(unanswered)}, and stdin is not a "
            "terminal to ask on",
            *(f"--param {key}=...   {manifest.parameters[key].prompt}" for key in unanswered),
        )
    return {key: str(manifest.parameters[key].default) for key in missing}


def _ask(manifest: Manifest, key: str) -> str:
    """Ask on the terminal (on stderr, so `--json` output stays clean) until the answer
    fits the parameter's pattern."""
    parameter = manifest.parameters[key]
    while True:
        answer: Any = typer.prompt(parameter.prompt, default=parameter.default, err=True)
        problem = parameter.problem(str(answer))
        if problem is None:
            return str(answer)
        errors.print(Text(f"  {problem}; try again.", style="yellow"))


def _next_steps(kind: str, name: str, folder: Path, files: list[TemplateFile]) -> list[str]:
    if kind == "service" and _service_kind(files) == "code":
        return [
            f"Write the endpoints in {folder / 'service.py'}, each with a docstring "
            "(README.md explains).",
            f"cd {folder} && bay deploy   builds and starts it at /{name}/...",
            f"bay grant team:TEAM service:{name}/hello read   lets people call an endpoint",
        ]
    if kind == "service":
        secret = _named_secret(files) or "SECRET"
        return [
            f"Edit {folder / 'service.json'}: your tables (README.md says what each step does).",
            f"bay secrets set {secret} --allow service:{name}   "
            "stores the database's URL, read from stdin (admin)",
            f"bay services register {folder}   serves it at /{name}/... (admin)",
            f"bay grant team:TEAM service:{name}/TABLE read   lets people call it",
        ]
    if kind == "dashboard":
        return [
            f"Edit {folder / 'site' / 'index.html'}: what it shows (README.md explains).",
            f"cd {folder} && bay deploy   serves it at /apps/{name}/",
            f"bay grant team:TEAM app:{name} invoke   lets people see it",
        ]
    return [
        f"Write the three steps in {folder}/ (pull, analyse, output); README.md explains.",
        f"cd {folder} && bay run . --local   runs it once, now, with your own key",
        "bay deploy   from that folder: validates, uploads and starts it",
    ]


def _service_document(files: list[TemplateFile]) -> dict[str, Any]:
    """The new service.json, parsed; empty when it cannot be (bay deploy will say why)."""
    document = next((file for file in files if file.path.as_posix() == "service.json"), None)
    if document is None:
        return {}
    try:
        parsed = jsonc.loads(document.data.decode("utf-8-sig"))
    except ValueError:  # a template's own service.json may be anything
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _service_kind(files: list[TemplateFile]) -> str | None:
    kind = _service_document(files).get("kind")
    return kind if isinstance(kind, str) else None


def _named_secret(files: list[TemplateFile]) -> str | None:
    """The secret the new service.json names, to show the exact `bay secrets set`."""
    secret = _service_document(files).get("secret")
    return secret if isinstance(secret, str) else None


def _list(ctx: typer.Context, as_json: bool) -> None:
    source = _source(ctx)
    if source is None:
        found = [info.model_dump(mode="json") for info in catalog.list_templates(None)]
    else:
        found = source.request("GET", api_path("templates"))["data"]
    if as_json:
        print_json(found)
        return
    print_table(found, TEMPLATE_COLUMNS, empty="No templates.")
    console.print(Text("Use: bay new KIND NAME [--template TEMPLATE]", style="dim"))
    if source is None:
        console.print(
            Text(
                "Only the built-in templates: log in (`bay login`) to see your organisation's.",
                style="yellow",
            )
        )


@contextmanager
def _reported() -> Iterator[None]:
    """A TemplateError inside the block ends the command with its message and fix."""
    try:
        yield
    except TemplateError as error:
        _fail_with(error)


def _fail_with(error: TemplateError) -> NoReturn:
    fail(error.message, f"{error.fix[:1].upper()}{error.fix[1:]}.")
