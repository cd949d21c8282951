"""Finding templates and moving them whole: the built-in ones, the organisation's folder,
and the tar.gz bundle in which the gateway hands a template to `bay new`.

A template's files are read only from inside its own folder: a link that leads out of it
(to `/etc/passwd`, to the instance's database) makes the template unusable rather than
being followed, and limits on file count and size keep a mistaken folder (a virtualenv
left in it) from being served.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, Field

from servicebay.templates.manifest import (
    MANIFEST_FILE,
    NAME,
    Kind,
    Manifest,
    Parameter,
    TemplateError,
    parse_manifest,
)

BUILTIN_DIR = Path(__file__).parent / "builtin"
MAX_FILES = 500
MAX_BYTES = 5 * 1024 * 1024
SKIPPED_FOLDERS = frozenset({".git", "__pycache__"})


@dataclass(frozen=True)
class TemplateFile:
    """One file of a template, or of the folder rendered from it."""

    path: PurePosixPath
    data: bytes
    executable: bool = False


@dataclass(frozen=True)
class Template:
    """A usable template: its manifest and all its files (the manifest among them)."""

    name: str
    manifest: Manifest
    files: list[TemplateFile]


class TemplateInfo(BaseModel):
    """A template as `GET /api/v1/templates` and `bay new --list` show it."""

    name: str
    kind: Kind | None = Field(description="Null when the template cannot be used.")
    description: str
    parameters: dict[str, Parameter]
    builtin: bool = Field(description="Shipped with ServiceBay, rather than the organisation's.")
    problem: str | None = Field(
        default=None, description="Why the template cannot be used; null when it can."
    )


def builtin_names() -> list[str]:
    return sorted(entry.name for entry in BUILTIN_DIR.iterdir() if NAME.fullmatch(entry.name))


def builtin_template(kind: str) -> Template:
    """The built-in template named `kind` (`builtin_names` lists them)."""
    if kind not in builtin_names():
        raise TemplateError(
            f"there is no built-in {kind!r} template",
            f"built-in templates: {', '.join(builtin_names())}",
        )
    return load_template(kind, BUILTIN_DIR / kind)


def list_templates(organisation_dir: Path | None) -> list[TemplateInfo]:
    """The built-in templates, then the organisation's (each subfolder of
    `organisation_dir`, in name order). A broken one is listed with its problem, so one
    bad manifest never hides the others."""
    found = [_info(name, BUILTIN_DIR / name, builtin=True) for name in builtin_names()]
    if organisation_dir is not None and organisation_dir.is_dir():
        for folder in sorted(organisation_dir.iterdir()):
            if folder.name.startswith(".") or not folder.is_dir():
                continue  # dot-folders (.git) and loose files (a README) are not templates
            found.append(_info(folder.name, folder, builtin=False))
    return found


def find_template(organisation_dir: Path | None, name: str) -> Template:
    """The template called `name`, built-in or the organisation's, read and checked.

    Raises LookupError when there is none by that name (a name that is not a template
    name, such as `..`, never reaches the file system), and TemplateError when it exists
    but cannot be used."""
    if not NAME.fullmatch(name):
        raise LookupError(name)
    if name in builtin_names():
        return load_template(name, BUILTIN_DIR / name)
    folder = organisation_dir / name if organisation_dir is not None else None
    if folder is None or not folder.is_dir():
        raise LookupError(name)
    _check_organisation_name(name)
    return load_template(name, folder)


def load_template(name: str, folder: Path) -> Template:
    """Read a template folder: every file, and its manifest checked."""
    files = [
        TemplateFile(relative, source.read_bytes(), bool(source.stat().st_mode & 0o111))
        for relative, source in _walk(folder)
    ]
    return template_of(name, files)


def template_of(name: str, files: list[TemplateFile]) -> Template:
    """A template from its files (read from a folder or unpacked from a bundle)."""
    manifest = next((file for file in files if file.path == PurePosixPath(MANIFEST_FILE)), None)
    if manifest is None:
        raise TemplateError(
            f"template {name!r} has no {MANIFEST_FILE}",
            'write one in its folder: {"kind": "cron", "description": "What it makes"}',
        )
    try:
        text = manifest.data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TemplateError(
            f"{name}/{MANIFEST_FILE} is not UTF-8 text", "save it as UTF-8"
        ) from None
    return Template(name, parse_manifest(text, template=name), files)


def pack(template: Template) -> bytes:
    """The template's files as a tar.gz: regular files only, relative names, no owners or
    times, so the same folder always packs to the same bytes."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for file in template.files:
            member = tarfile.TarInfo(file.path.as_posix())
            member.size = len(file.data)
            member.mode = 0o755 if file.executable else 0o644
            archive.addfile(member, io.BytesIO(file.data))
    return buffer.getvalue()


def unpack(name: str, data: bytes) -> Template:
    """A template from a bundle made by `pack`, read in memory and checked like a folder:
    only regular files with relative names inside it, within the same limits."""
    files: list[TemplateFile] = []
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member in archive:
                if member.isdir():
                    continue
                path = PurePosixPath(member.name)
                if not member.isfile() or path.is_absolute() or ".." in path.parts:
                    raise TemplateError(
                        f"the bundle of template {name!r} holds {member.name!r}, which is not "
                        "a file inside the template",
                        "ask the instance's admin to check the template folder",
                    )
                total += member.size
                _check_limits(name, len(files) + 1, total)
                extracted = archive.extractfile(member)
                assert extracted is not None  # a regular file always has contents
                files.append(TemplateFile(path, extracted.read(), bool(member.mode & 0o111)))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise TemplateError(
            f"the bundle of template {name!r} is not a readable tar.gz ({error})",
            "try again; if it persists, the server is not serving templates correctly",
        ) from None
    return template_of(name, files)


def _info(name: str, folder: Path, *, builtin: bool) -> TemplateInfo:
    try:
        if not builtin:
            _check_organisation_name(name)
        manifest = template_of(name, _manifest_only(folder)).manifest
        _walk(folder)
    except TemplateError as error:
        return TemplateInfo(
            name=name,
            kind=None,
            description="",
            parameters={},
            builtin=builtin,
            problem=f"{error.message}: {error.fix}",
        )
    return TemplateInfo(
        name=name,
        kind=manifest.kind,
        description=manifest.description,
        parameters=manifest.parameters,
        builtin=builtin,
    )


def _manifest_only(folder: Path) -> list[TemplateFile]:
    path = folder / MANIFEST_FILE
    if path.is_symlink() or not path.is_file():
        return []
    return [TemplateFile(PurePosixPath(MANIFEST_FILE), path.read_bytes())]


def _check_organisation_name(name: str) -> None:
    if not NAME.fullmatch(name):
        raise TemplateError(
            f"{name!r} is not a template name",
            "rename the folder: lowercase letters, digits, '-' or '_', starting with a letter",
        )
    if name in builtin_names():
        raise TemplateError(
            f"{name!r} is the name of a built-in template",
            "rename the folder, e.g. to our-" + name,
        )


def _walk(root: Path) -> list[tuple[PurePosixPath, Path]]:
    """Every file under `root` as (name inside the template, file to read), in name order.

    A link is followed only to a file inside the template; a link to a folder, or out of
    the template, or a special file (a socket, a device) makes the template unusable."""
    base = root.resolve()
    found: list[tuple[PurePosixPath, Path]] = []
    total = 0
    for directory, folders, names in os.walk(base):
        here = Path(directory)
        folders[:] = sorted(folder for folder in folders if folder not in SKIPPED_FOLDERS)
        linked = next((folder for folder in folders if (here / folder).is_symlink()), None)
        if linked is not None:
            raise _unusable(root.name, here / linked, base, "is a link to a folder")
        for name in sorted(names):
            path = here / name
            source = path.resolve() if path.is_symlink() else path
            if not source.is_relative_to(base):
                raise _unusable(root.name, path, base, "is a link that leads out of the template")
            if not source.is_file():
                raise _unusable(root.name, path, base, "is not a regular file")
            total += source.stat().st_size
            _check_limits(root.name, len(found) + 1, total)
            found.append((PurePosixPath(path.relative_to(base).as_posix()), source))
    return found


def _unusable(template: str, path: Path, base: Path, what: str) -> TemplateError:
    inside = path.relative_to(base).as_posix()
    return TemplateError(
        f"{template}/{inside} {what}",
        "replace it with the file itself; templates serve only files inside their folder",
    )


def _check_limits(template: str, count: int, total: int) -> None:
    if count > MAX_FILES or total > MAX_BYTES:
        raise TemplateError(
            f"template {template!r} is over the limit of {MAX_FILES} files and "
            f"{MAX_BYTES // (1024 * 1024)} MiB",
            "keep only the scaffold in the template folder (no virtualenvs or data files)",
        )
