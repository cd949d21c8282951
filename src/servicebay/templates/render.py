"""Rendering a template into a new deployment folder.

Files ending in `.j2` are Jinja2 templates: rendered with the deployment's `name` and the
template's parameters, and written without the suffix; other files are copied byte for
byte. A variable the template does not define is an error (StrictUndefined), never an
empty string, and rendering runs in Jinja2's sandbox: a template fetched from the
instance is data, and cannot reach into the Python that renders it.

Everything is rendered in memory before the first file is written, so a template error
leaves no half-made folder behind.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from servicebay.templates.catalog import Template, TemplateFile
from servicebay.templates.manifest import MANIFEST_FILE, NAME, TemplateError

SUFFIX = ".j2"


def check_name(name: str) -> None:
    """A deployment's name becomes a URL segment, a sub-domain and a file name."""
    if NAME.fullmatch(name):
        return
    suggestion = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_")[:63]
    example = suggestion if NAME.fullmatch(suggestion) else "weekly-report"
    raise TemplateError(
        f"{name!r} is not a valid name: it becomes a URL, a sub-domain and a file name",
        f"use 1 to 63 lowercase letters, digits, '-' or '_', starting with a letter, "
        f"e.g. {example}",
    )


def check_destination(folder: Path) -> None:
    """`bay new` writes only into a folder that is new or empty: it never overwrites."""
    if folder.exists() and not folder.is_dir():
        raise TemplateError(
            f"{folder} exists and is a file", "choose another NAME, or a folder with --dir"
        )
    if folder.is_dir() and any(folder.iterdir()):
        raise TemplateError(
            f"{folder} exists and is not empty; bay new never overwrites files",
            "choose another NAME or --dir, or move that folder away first",
        )


def render(template: Template, values: Mapping[str, str]) -> list[TemplateFile]:
    """The new folder's files, in name order: every file of the template but its manifest,
    `.j2` files rendered, `{{ ... }}` in file and folder names rendered."""
    sources = {
        file.path.as_posix(): _text(template.name, file)
        for file in template.files
        if file.path.suffix == SUFFIX
    }
    environment = SandboxedEnvironment(
        loader=jinja2.FunctionLoader(lambda path: _source(sources, path)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    rendered: dict[PurePosixPath, TemplateFile] = {}
    for file in template.files:
        if file.path == PurePosixPath(MANIFEST_FILE):
            continue
        target = _target(environment, template.name, file.path, values)
        if target in rendered:
            raise TemplateError(
                f"template {template.name!r}: two files become {target.as_posix()}",
                "rename one of them in the template folder",
            )
        data = file.data
        if file.path.suffix == SUFFIX:
            with _reported(template.name, file.path):
                page = environment.get_template(file.path.as_posix())
                data = page.render(values).encode()
        rendered[target] = TemplateFile(target, data, file.executable)
    return [rendered[path] for path in sorted(rendered)]


def write(folder: Path, files: Sequence[TemplateFile]) -> None:
    """Create `folder` (checked again: it may have been filled meanwhile) with `files`."""
    check_destination(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for file in files:
        path = folder.joinpath(*file.path.parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(file.data)
        if file.executable:
            path.chmod(0o755)


def _text(template: str, file: TemplateFile) -> str:
    try:
        return file.data.decode("utf-8")
    except UnicodeDecodeError:
        raise TemplateError(
            f"{template}/{file.path.as_posix()} is not UTF-8 text",
            f"save it as UTF-8, or drop the {SUFFIX} suffix to copy it as it is",
        ) from None


def _source(sources: Mapping[str, str], path: str) -> tuple[str, str, Callable[[], bool]] | None:
    """A template file for Jinja2's loader (so `{% include %}` works), named by its path so
    that an error's traceback names the file and line."""
    return (sources[path], path, lambda: True) if path in sources else None


def _target(
    environment: jinja2.Environment,
    template: str,
    path: PurePosixPath,
    values: Mapping[str, str],
) -> PurePosixPath:
    parts = []
    for part in path.parts:
        if "{{" in part or "{%" in part:
            with _reported(template, path):
                part = environment.from_string(part).render(values)
        if part in {"", ".", ".."} or any(bad in part for bad in "/\\\0"):
            raise TemplateError(
                f"{template}/{path.as_posix()}: its name renders to {part!r}, "
                "which is not a file name",
                "render names only from values that cannot hold '/' or be empty",
            )
        parts.append(part)
    if path.suffix == SUFFIX:
        parts[-1] = parts[-1].removesuffix(SUFFIX)
    return PurePosixPath(*parts)


@contextmanager
def _reported(template: str, path: PurePosixPath) -> Iterator[None]:
    """A Jinja2 failure while rendering `path` becomes a TemplateError naming the file and
    line (an included file's, when the error is in there)."""
    try:
        yield
    except jinja2.TemplateSyntaxError as error:
        where = f"{template}/{error.name or path.as_posix()}, line {error.lineno}"
        raise TemplateError(
            f"{where}: {error.message}",
            "fix the Jinja2 syntax; put {% raw %}...{% endraw %} around text that must "
            "keep its braces",
        ) from None
    except jinja2.TemplateError as error:
        frames = traceback.extract_tb(error.__traceback__)
        inner = next((frame for frame in reversed(frames) if frame.filename.endswith(SUFFIX)), None)
        where = (
            f"{template}/{inner.filename}, line {inner.lineno}" if inner else f"{template}/{path}"
        )
        raise TemplateError(
            f"{where}: {error.message}",
            "use only `name` and the parameters template.json declares",
        ) from None
