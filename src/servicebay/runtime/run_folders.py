"""A run's private folder: staged from its version's source, lent to its user, taken back.

`Layout.run_dir` of a run holds `work/` (a copy of the version's source: the script's
working directory, its own to change), `output/` (`BAY_OUTPUT_DIR`, whose regular files
become the run's artifacts) and the small files the platform and the script exchange (the
run's input, a webhook call and its answer). When the platform runs as root, the folder
belongs to the deployment's user while the run lasts (`process.prepare_private_dir`), and
to the platform again afterwards.

This is file work on every run, and the worker does it on its event loop: a thread per step
cost more than the step, in handing the interpreter's lock back and forth with the loop
(measured with `bench/run_throughput.py`). So each step is kept small:

- **Sources are copied from memory.** A version's source is immutable; the first run reads
  it (in a thread) into a `Snapshot` of its folders, files (contents and modes) and links,
  and later runs write that out. A source too big to keep (`SNAPSHOT_MAX_BYTES`,
  `SNAPSHOT_MAX_ENTRIES`) is copied from disk, in a thread, every time.
- **Passability is checked once a minute.** A run user must be able to pass every folder on
  the way to its environment, the SDK and its run folder; the check (`blocked_on_the_way`)
  stats each of them, so a folder found passable is not looked at again for
  `PASSABLE_RECHECK_SECONDS`.
- **Nothing is deleted on the way.** When a run ends its `work/` is moved (one rename) into
  a trash folder that `empty_trash` clears in a thread, for many runs at once; artifacts are
  looked over on the loop when `output/` is empty, in a thread otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from servicebay.runtime.layout import Layout
from servicebay.runtime.process import prepare_private_dir

log = logging.getLogger(__name__)

WORK = "work"
INPUT = "input.json"
REQUEST = "request.json"
RESPONSE = "response.json"
EXCHANGED = (INPUT, REQUEST, RESPONSE)
TRASH = ".trash"
"""Inside the runs folder; run ids start with `run_`, so it is no run's folder."""

SNAPSHOT_MAX_BYTES = 1024 * 1024
SNAPSHOT_MAX_ENTRIES = 256
SNAPSHOTS_KEPT = 64
"""Versions whose sources are kept in memory, the most recently run first."""
PASSABLE_RECHECK_SECONDS = 60.0


class RunFolderError(Exception):
    """A run folder cannot be made (the source or environment is missing, or the run's
    user could not reach them) or read (the answer file is not the script's). The message
    says what to do."""


@dataclass(frozen=True)
class Entry:
    """A folder, a regular file or a symbolic link of a source, by its relative path."""

    path: str
    kind: Literal["dir", "file", "link"]
    mode: int
    content: bytes = b""
    """A file's bytes; a link's target, encoded."""


Snapshot = tuple[Entry, ...]


def read_snapshot(source: Path) -> Snapshot | None:
    """The source as entries, parents before their contents; None if it is too big to
    keep or holds something other than folders, regular files and links."""
    entries: list[Entry] = []
    size = 0
    for top, dirs, files, top_fd in os.fwalk(source, follow_symlinks=False):
        relative = os.path.relpath(top, source)
        for name in sorted([*dirs, *files]):
            path = os.path.normpath(os.path.join(relative, name))
            info = os.stat(name, dir_fd=top_fd, follow_symlinks=False)
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISDIR(info.st_mode):
                entries.append(Entry(path, "dir", mode))
            elif stat.S_ISLNK(info.st_mode):
                target = os.readlink(name, dir_fd=top_fd)
                entries.append(Entry(path, "link", mode, os.fsencode(target)))
            elif stat.S_ISREG(info.st_mode):
                size += info.st_size
                if size > SNAPSHOT_MAX_BYTES:
                    return None
                with open(os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=top_fd), "rb") as f:
                    entries.append(Entry(path, "file", mode, f.read()))
            else:
                return None
            if len(entries) > SNAPSHOT_MAX_ENTRIES:
                return None
    return tuple(entries)


def write_snapshot(snapshot: Snapshot, target: Path) -> None:
    """Create `target` (which must not exist) with the snapshot's contents and modes; the
    folders' modes last, deepest first, as `shutil.copytree` does (a read-only folder of
    the source is written into before it is made read-only)."""
    os.mkdir(target, 0o700)
    for entry in snapshot:
        path = target / entry.path
        if entry.kind == "dir":
            os.mkdir(path, 0o700)
        elif entry.kind == "link":
            os.symlink(os.fsdecode(entry.content), path)
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(path, flags, 0o600)
            try:
                with memoryview(entry.content) as rest:
                    while rest:
                        rest = rest[os.write(fd, rest) :]
                os.fchmod(fd, entry.mode)
            finally:
                os.close(fd)
    for entry in reversed(snapshot):
        if entry.kind == "dir":
            os.chmod(target / entry.path, entry.mode)


def blocked_on_the_way(path: Path, uid: int | None) -> Path | None:
    """The first folder on the way to `path` that user `uid` may not pass, if any."""
    if uid is None:
        return None
    for folder in reversed(path.parents):
        try:
            info = folder.stat()
        except FileNotFoundError:
            return None
        if not (
            info.st_mode & stat.S_IXOTH or (info.st_uid == uid and info.st_mode & stat.S_IXUSR)
        ):
            return folder
    return None


def remove_tree(path: Path) -> None:
    """Remove a folder a script had the run of, whatever it left there; what is gone
    already (another process removing it too) is no error.

    As root, `shutil.rmtree` alone: it removes by descriptor, never following a link, and
    root may remove from a read-only folder. A script process that outlived its run could
    swap a folder for a link while this runs; a handler that changes modes by path would
    follow it. Not root, scripts run as the platform's own user (no boundary to cross),
    and a folder they made read-only is made writable again to be emptied."""

    def forgive(function: Any, failed: str, error: Any) -> None:
        if not isinstance(error[1], FileNotFoundError):
            raise error[1]

    def unlock(function: Any, failed: str, error: Any) -> None:
        if isinstance(error[1], FileNotFoundError):
            return
        with contextlib.suppress(FileNotFoundError):
            os.chmod(os.path.dirname(failed), 0o700)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, 0o700)
            function(failed)

    shutil.rmtree(path, onerror=forgive if os.geteuid() == 0 else unlock)


class RunFolders:
    """Stages, takes back and discards the run folders of one worker; see the module
    docstring for why each step is shaped as it is."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.runs_root = layout.run_dir("x").parent
        self.trash = self.runs_root / TRASH
        self._snapshots: OrderedDict[tuple[str, int], Snapshot | None] = OrderedDict()
        self._passable: dict[tuple[Path, int], float] = {}
        self._moved = itertools.count()
        self._trashed = False

    def prepare(self) -> None:
        """Create the runs folder and the trash, emptying what an earlier process left."""
        self.runs_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.trash.mkdir(mode=0o700, exist_ok=True)
        self.empty_trash()

    async def stage(
        self,
        run_id: str,
        version: tuple[str, int],
        source: Path,
        python: Path,
        uid: int | None,
        given: tuple[Path, str] | None = None,
    ) -> Path:
        """The run's private folder, made: a copy of `source` (version `version`, a
        deployment id and number, whose files never change) as `work/`, an empty
        `output/`, and `given` (a file of the folder and its text); handed to `uid`.
        Returns `work/`, the script's working directory."""
        self._check(run_id, version[1], source, python, uid)
        if version not in self._snapshots:
            self._snapshots[version] = await asyncio.to_thread(read_snapshot, source)
            while len(self._snapshots) > SNAPSHOTS_KEPT:
                self._snapshots.popitem(last=False)
        self._snapshots.move_to_end(version)
        snapshot = self._snapshots[version]
        if snapshot is None:
            return await asyncio.to_thread(self._make, run_id, source, None, uid, given)
        return self._make(run_id, source, snapshot, uid, given)

    def _check(self, run_id: str, number: int, source: Path, python: Path, uid: int | None) -> None:
        if not source.is_dir():
            raise RunFolderError(
                f"the source of version {number} is missing from {source}; "
                "deploy again to restore it"
            )
        if not python.exists():
            raise RunFolderError(
                f"the environment of version {number} is missing ({python}); "
                "deploy again to rebuild it"
            )
        for needed in (python, self.layout.sdk, self.layout.run_dir(run_id)):
            self._check_passable(needed, uid)

    def _make(
        self,
        run_id: str,
        source: Path,
        snapshot: Snapshot | None,
        uid: int | None,
        given: tuple[Path, str] | None,
    ) -> Path:
        run_dir = self.layout.run_dir(run_id)
        if run_dir.exists():  # left by a process that stopped during the run
            remove_tree(run_dir)
        run_dir.mkdir(mode=0o700)
        work = run_dir / WORK
        if snapshot is None:
            shutil.copytree(source, work, symlinks=True)
        else:
            write_snapshot(snapshot, work)
        self.layout.artifacts(run_id).mkdir(mode=0o700)
        if given is not None:
            path, text = given
            path.write_text(text, encoding="utf-8")
        prepare_private_dir(run_dir, uid)
        return work

    def _check_passable(self, path: Path, uid: int | None) -> None:
        if uid is None:
            return
        way = path.parent
        checked = self._passable.get((way, uid))
        if checked is not None and time.monotonic() - checked < PASSABLE_RECHECK_SECONDS:
            return
        blocked = blocked_on_the_way(path, uid)
        if blocked is not None:
            raise RunFolderError(
                f"scripts run as uid {uid}, which cannot pass {blocked} (mode "
                f"{stat.filemode(blocked.stat().st_mode)}) on the way to {path}; "
                "put BAY_HOME under folders others may pass (chmod o+x), e.g. "
                "/srv/servicebay"
            )
        self._passable[way, uid] = time.monotonic()

    def discard_work(self, run_id: str) -> None:
        """Move the run's copy of the source to the trash and remove the files it
        exchanged; the output stays. Safe to call again."""
        run_dir = self.layout.run_dir(run_id)
        with contextlib.suppress(FileNotFoundError):
            os.rename(run_dir / WORK, self.trash / f"{run_id}.{next(self._moved)}")
            self._trashed = True
        for name in EXCHANGED:
            (run_dir / name).unlink(missing_ok=True)

    @property
    def has_trash(self) -> bool:
        return self._trashed

    def empty_trash(self) -> None:
        """Remove what `discard_work` moved aside (in a thread: it may be much). Other
        processes of the same home empty the same trash: what they removed first is
        skipped; what cannot be removed is logged and tried again next time."""
        self._trashed = False
        with os.scandir(self.trash) as entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        remove_tree(Path(entry.path))
                    else:
                        os.unlink(entry.path)
                except FileNotFoundError:
                    continue
                except OSError as error:
                    self._trashed = True
                    log.warning("could not remove %s from the trash: %s", entry.path, error)

    async def collect(self, run_id: str, uid: int | None) -> list[str]:
        """Keep the output's regular files (the script's own) as artifacts, owned by the
        platform again; remove everything else. Returns what was removed."""
        output = self.layout.artifacts(run_id)
        try:
            info = os.lstat(output)
        except FileNotFoundError:
            info = None
        if info is not None and not stat.S_ISDIR(info.st_mode):  # the script replaced it
            os.unlink(output)
            self._take_back(run_id, uid)
            return [f"{output.name} (not a folder)"]
        if info is not None:
            with os.scandir(output) as entries:
                if next(entries, None) is not None:
                    return await asyncio.to_thread(self._collect, run_id, uid)
        self._take_back(run_id, uid)
        return []

    def _take_back(self, run_id: str, uid: int | None) -> None:
        """The run's folder belongs to the platform's user again."""
        if uid is not None:
            prepare_private_dir(self.layout.run_dir(run_id), os.geteuid())

    def _collect(self, run_id: str, uid: int | None) -> list[str]:
        output = self.layout.artifacts(run_id)
        dropped = []
        for top, dirs, files, top_fd in os.fwalk(output, follow_symlinks=False):
            for name in [*files, *dirs]:
                info = os.stat(name, dir_fd=top_fd, follow_symlinks=False)
                regular = stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)
                own = uid is None or info.st_uid == uid
                if not (regular and own):
                    if stat.S_ISDIR(info.st_mode):
                        remove_tree(Path(top, name))
                        dirs.remove(name)
                    else:
                        os.unlink(name, dir_fd=top_fd)
                    dropped.append(str(Path(top, name).relative_to(output)))
        self._take_back(run_id, uid)
        return dropped

    def read_answer(self, answer: Path, uid: int | None, limit: int) -> bytes | None:
        """The webhook answer file, if the script wrote one: a regular file of its own,
        opened without following links (the folder is the script's to change), and read up
        to `limit` + 1 bytes."""
        try:
            fd = os.open(answer, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as error:
            raise RunFolderError(f"the answer file cannot be opened: {error.strerror}") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or (uid is not None and info.st_uid != uid):
                raise RunFolderError("the answer file is not a regular file of the script's own")
            return handle.read(limit + 1)
