"""Deployment bundles: a folder as a deterministic tar.gz, and its safe extraction.

The same folder always gives the same bytes (sorted entries, fixed times and owners, no
gzip name or time), so its digest says whether anything changed between deploys.
What is bundled follows `.bayignore` (gitignore syntax) on top of `DEFAULT_IGNORE`.
Extraction trusts nothing in the archive: it is what an uploader sent.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pathspec

IGNORE_FILE = ".bayignore"
DEFAULT_IGNORE = (
    ".git/",
    ".venv/",
    "venv/",
    "__pycache__/",
    "*.pyc",
    "node_modules/",
    ".bay-demo/",
    ".DS_Store",
)
"""Never worth shipping: version control, virtual environments, caches, demo state."""
MAX_BUNDLE_BYTES = 50 * 1024 * 1024
"""The files' total size, before compression."""
MAX_BUNDLE_FILES = 10_000
_BIGGEST_SHOWN = 5
_FIXED_MTIME = 0


class BundleError(ValueError):
    """A folder that cannot be bundled, or an archive that will not be extracted."""


@dataclass(frozen=True)
class Bundle:
    data: bytes
    """The tar.gz archive."""
    files: list[str]
    """Paths inside the bundle, `/`-separated, sorted: regular files and symlinks."""
    digest: str
    """SHA-256 of `data`, hex."""


def ignore_rules(folder: Path) -> pathspec.GitIgnoreSpec:
    """The defaults plus the folder's `.bayignore` (whose `!pattern` may re-include)."""
    lines = list(DEFAULT_IGNORE)
    rules = folder / IGNORE_FILE
    if rules.is_file():
        try:
            lines += rules.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise BundleError(f"{IGNORE_FILE} cannot be read: {error}") from None
    return pathspec.GitIgnoreSpec.from_lines(lines)


def list_files(folder: Path) -> list[str]:
    """What a bundle of `folder` holds, sorted; refuses links out and special files.

    Every problem is reported at once, each with its fix.
    """
    rules = ignore_rules(folder)
    root = folder.resolve()
    files: list[str] = []
    problems: list[str] = []
    for directory, subdirectories, names in os.walk(root, onerror=_raise):
        base = PurePosixPath(Path(directory).relative_to(root).as_posix())
        kept = []
        for name in sorted(subdirectories):
            relative = (base / name).as_posix()
            if rules.match_file(relative + "/"):
                continue
            if (root / relative).is_symlink():
                names.append(name)  # a link is an entry of its own, never walked into
            else:
                kept.append(name)
        subdirectories[:] = kept
        for name in names:
            relative = (base / name).as_posix()
            if rules.match_file(relative):
                continue
            problem = _unbundlable(root, relative)
            if problem:
                problems.append(problem)
            else:
                files.append(relative)
    if problems:
        raise BundleError("; ".join(sorted(problems)))
    if len(files) > MAX_BUNDLE_FILES:
        raise BundleError(
            f"the folder holds {len(files)} files, over the limit of {MAX_BUNDLE_FILES}: "
            f"add the folders that are not part of the program to {IGNORE_FILE}"
        )
    return sorted(files)


def build_bundle(folder: Path, *, max_bytes: int = MAX_BUNDLE_BYTES) -> Bundle:
    """Bundle `folder` as it would be deployed; BundleError says what stops it and how to fix it."""
    if not folder.is_dir():
        raise BundleError(f"{folder} is not a folder")
    root = folder.resolve()
    files = list_files(root)
    sizes = {name: (root / name).lstat().st_size for name in files}
    total = sum(sizes.values())
    if total > max_bytes:
        biggest = sorted(files, key=lambda name: (-sizes[name], name))[:_BIGGEST_SHOWN]
        raise BundleError(
            f"the folder's files come to {_size(total)}, over the {_size(max_bytes)} limit; "
            f"the biggest: {', '.join(f'{name} ({_size(sizes[name])})' for name in biggest)}. "
            f"Add data files to {IGNORE_FILE} and read data through a service instead"
        )
    raw = io.BytesIO()
    unreadable: list[str] = []
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in files:
            path = root / name
            entry = _entry(name, path.lstat())
            if entry.issym():
                entry.linkname = os.readlink(path)
                archive.addfile(entry)
                continue
            try:
                with path.open("rb") as content:
                    archive.addfile(entry, content)
            except OSError as error:
                unreadable.append(f"{name} ({error.strerror or error})")
    if unreadable:
        raise BundleError(
            f"cannot read {', '.join(unreadable)}: fix the permissions, "
            f"or add the files to {IGNORE_FILE} if they are not part of the program"
        )
    packed = io.BytesIO()
    with gzip.GzipFile(
        filename="", mode="wb", fileobj=packed, mtime=_FIXED_MTIME, compresslevel=6
    ) as stream:
        stream.write(raw.getvalue())
    data = packed.getvalue()
    return Bundle(data=data, files=files, digest=hashlib.sha256(data).hexdigest())


def extract_bundle(
    data: bytes,
    dest: Path,
    *,
    max_bytes: int = MAX_BUNDLE_BYTES,
    max_files: int = MAX_BUNDLE_FILES,
) -> list[str]:
    """Unpack an uploaded bundle as `dest` (absent or an empty folder); the paths, sorted.

    Every member is checked before anything is written: only regular files, folders and
    symlinks that stay inside, no absolute or `..` paths, no name twice, and at most
    `max_files` entries and `max_bytes` of content (checked from the headers as they
    stream, so a bomb is refused before it is inflated). tarfile's `data` filter checks
    again while writing, on the real paths (a chain of links that only escapes once on
    disk). The bundle is unpacked beside `dest` and moved in whole: a refused bundle
    leaves nothing behind.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            members = _checked_members(archive, max_bytes=max_bytes, max_files=max_files)
            archive.extractall(staging, members=members, filter="data")
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the files from an unprivileged runner
        os.replace(staging, dest)
    except tarfile.FilterError as error:
        raise BundleError(f"the bundle is refused: {error}") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise BundleError(f"not a readable tar.gz bundle: {error}") from None
    except OSError as error:
        raise BundleError(f"cannot unpack into {dest}: {error.strerror or error}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sorted(member.name for member in members if not member.isdir())


def _checked_members(
    archive: tarfile.TarFile, *, max_bytes: int, max_files: int
) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    seen: set[str] = set()
    total = 0
    for member in archive:
        if len(members) == max_files:
            raise BundleError(f"the bundle holds more than {max_files} entries")
        name = _safe_name(member.name)
        if name in seen:
            raise BundleError(f"{name!r} appears twice in the bundle")
        seen.add(name)
        if member.issym():
            _check_link(name, member.linkname)
        elif not (member.isreg() or member.isdir()):
            raise BundleError(
                f"{name!r} is a {_kind(member)}: a bundle holds only files, folders and symlinks"
            )
        total += member.size if member.isreg() else 0
        if total > max_bytes:
            raise BundleError(
                f"the bundle's files come to more than the {_size(max_bytes)} limit "
                f"(reached at {name!r})"
            )
        member.name = name
        members.append(member)
    return members


def _safe_name(name: str) -> str:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or name.startswith("\\") or ":" in path.parts[0]:
        raise BundleError(f"{name!r} is an absolute path: bundle paths are relative")
    if ".." in path.parts or "\\" in name:
        raise BundleError(f"{name!r} climbs out of the bundle")
    normal = path.as_posix()
    if normal == ".":
        raise BundleError("an entry of the bundle has an empty name")
    return normal


def _check_link(name: str, target: str) -> None:
    if PurePosixPath(target).is_absolute() or not _inside(PurePosixPath(name).parent, target):
        raise BundleError(f"{name!r} links to {target!r}, outside the bundle")


def _inside(base: PurePosixPath, target: str) -> bool:
    """Whether `target`, relative to `base` inside the bundle, stays inside it."""
    depth = len(base.parts)
    for part in PurePosixPath(target).parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return False
        elif part != ".":
            depth += 1
    return True


def _unbundlable(root: Path, relative: str) -> str | None:
    path = root / relative
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        target = os.readlink(path)
        resolved = path.resolve()
        if os.path.isabs(target) or not resolved.is_relative_to(root):
            return (
                f"{relative} links outside the folder (to {target}): copy what it points at "
                f"into the folder, or add {relative} to {IGNORE_FILE}"
            )
        if not resolved.exists():
            return f"{relative} links to {target}, which does not exist: remove the link"
        return None
    if stat.S_ISREG(mode):
        return None
    return f"{relative} is not a regular file: add it to {IGNORE_FILE}"


def _entry(name: str, info: os.stat_result) -> tarfile.TarInfo:
    """A header that depends only on the name, size, type and whether it is executable."""
    entry = tarfile.TarInfo(name)
    entry.mtime = _FIXED_MTIME
    entry.uid = entry.gid = 0
    entry.uname = entry.gname = ""
    if stat.S_ISLNK(info.st_mode):
        entry.type = tarfile.SYMTYPE
        entry.mode = 0o777
    else:
        entry.size = info.st_size
        entry.mode = 0o755 if info.st_mode & stat.S_IXUSR else 0o644
    return entry


def _kind(member: tarfile.TarInfo) -> str:
    if member.islnk():
        return "hard link"
    if member.ischr() or member.isblk():
        return "device file"
    if member.isfifo():
        return "named pipe"
    return "special entry"


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    value, unit = (count / 1024, "KB") if count < 1024 * 1024 else (count / 1024 / 1024, "MB")
    return f"{value:.1f}".removesuffix(".0") + f" {unit}"


def _raise(error: OSError) -> None:
    raise BundleError(f"cannot list {error.filename}: {error.strerror or error}")
