"""Run folders: a private copy of the source per run, from memory when the source is small,
taken back at the end, and discarded through the trash."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from servicebay.runtime import run_folders
from servicebay.runtime.layout import Layout
from servicebay.runtime.run_folders import (
    INPUT,
    WORK,
    RunFolderError,
    RunFolders,
    read_snapshot,
    write_snapshot,
)


def make_source(root: Path) -> Path:
    source = root / "source"
    (source / "lib" / "data").mkdir(parents=True)
    (source / "job.py").write_text('print("ok")\n')
    (source / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (source / "run.sh").chmod(0o750)
    (source / "lib" / "helpers.py").write_text("VALUE = 1\n")
    (source / "lib" / "data" / "rows.csv").write_bytes(b"a,b\n1,2\n" * 100)
    (source / "lib" / "data").chmod(0o710)
    os.symlink("lib/helpers.py", source / "helpers.py")
    return source


def listing(folder: Path) -> dict[str, tuple[str, int, bytes]]:
    """Every entry under `folder`: its kind, its mode and its content (a link's target)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        name = str(path.relative_to(folder))
        if stat.S_ISLNK(info.st_mode):
            found[name] = ("link", 0, os.fsencode(os.readlink(path)))
        elif stat.S_ISDIR(info.st_mode):
            found[name] = ("dir", stat.S_IMODE(info.st_mode), b"")
        else:
            found[name] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes())
    return found


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "home")
    layout.sdk.mkdir(parents=True)
    return layout


@pytest.fixture
def folders(layout: Layout) -> RunFolders:
    folders = RunFolders(layout)
    folders.prepare()
    return folders


@pytest.fixture
def python(tmp_path: Path) -> Path:
    python = tmp_path / "env" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    return python


def test_a_snapshot_written_out_is_the_source_with_its_modes_and_links(tmp_path: Path) -> None:
    source = make_source(tmp_path)
    snapshot = read_snapshot(source)
    assert snapshot is not None

    write_snapshot(snapshot, tmp_path / "copy")

    assert listing(tmp_path / "copy") == listing(source)
    assert listing(source)["run.sh"][1] == 0o750


def test_a_source_too_big_or_too_many_files_is_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_source(tmp_path)
    monkeypatch.setattr(run_folders, "SNAPSHOT_MAX_BYTES", 100)
    assert read_snapshot(source) is None
    monkeypatch.setattr(run_folders, "SNAPSHOT_MAX_BYTES", 1 << 20)
    monkeypatch.setattr(run_folders, "SNAPSHOT_MAX_ENTRIES", 3)
    assert read_snapshot(source) is None


def test_a_fifo_in_the_source_is_copied_from_disk_not_kept(tmp_path: Path) -> None:
    source = make_source(tmp_path)
    os.mkfifo(source / "pipe")
    assert read_snapshot(source) is None


@pytest.mark.parametrize("kept", [True, False], ids=["from-memory", "from-disk"])
def test_each_run_gets_a_fresh_private_copy_its_input_and_an_empty_output(
    tmp_path: Path,
    layout: Layout,
    folders: RunFolders,
    python: Path,
    kept: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not kept:
        monkeypatch.setattr(run_folders, "SNAPSHOT_MAX_BYTES", 10)
    source = make_source(tmp_path)

    async def scenario() -> tuple[Path, Path]:
        given = (layout.run_dir("run_1") / INPUT, '{"n": 1}')
        first = await folders.stage("run_1", ("dep_1", 1), source, python, None, given)
        (first / "job.py").write_text("changed by the first run\n")
        # A version's source never changes; were it to, a kept copy would not see it.
        (source / "lib" / "helpers.py").write_text("VALUE = 2\n")
        second = await folders.stage("run_2", ("dep_1", 1), source, python, None)
        return first, second

    first, second = asyncio.run(scenario())

    expected = listing(source)
    if kept:
        kind, mode, _ = expected["lib/helpers.py"]
        expected["lib/helpers.py"] = (kind, mode, b"VALUE = 1\n")
    assert listing(second) == expected
    assert (first / "job.py").read_text() == "changed by the first run\n"
    assert (layout.run_dir("run_1") / INPUT).read_text() == '{"n": 1}'
    assert list(layout.artifacts("run_2").iterdir()) == []
    assert stat.S_IMODE(layout.run_dir("run_2").stat().st_mode) == 0o700


def test_a_missing_source_or_environment_says_to_deploy_again(
    tmp_path: Path, layout: Layout, folders: RunFolders, python: Path
) -> None:
    source = make_source(tmp_path)

    with pytest.raises(RunFolderError, match=r"source of version 3 is missing.*deploy again"):
        asyncio.run(folders.stage("run_1", ("dep", 3), tmp_path / "gone", python, None))
    with pytest.raises(RunFolderError, match="environment of version 3 is missing"):
        asyncio.run(folders.stage("run_1", ("dep", 3), source, tmp_path / "no-python", None))


def test_a_discarded_work_folder_waits_in_the_trash_and_the_output_stays(
    tmp_path: Path, layout: Layout, folders: RunFolders, python: Path
) -> None:
    source = make_source(tmp_path)
    work = asyncio.run(folders.stage("run_1", ("dep", 1), source, python, None))
    (work / "lib").chmod(0o500)  # a script may leave parts of its folder read-only
    (layout.artifacts("run_1") / "report.csv").write_text("x\n")

    folders.discard_work("run_1")
    folders.discard_work("run_1")  # again: nothing left to do

    assert not (layout.run_dir("run_1") / WORK).exists()
    assert folders.has_trash
    assert len(list(folders.trash.iterdir())) == 1
    folders.empty_trash()
    assert list(folders.trash.iterdir()) == []
    assert not folders.has_trash
    assert asyncio.run(folders.collect("run_1", None)) == []
    assert (layout.artifacts("run_1") / "report.csv").read_text() == "x\n"


def test_what_an_earlier_process_left_in_the_trash_is_removed_at_start(layout: Layout) -> None:
    RunFolders(layout).prepare()
    left = layout.run_dir("x").parent / run_folders.TRASH / "run_9.0"
    (left / "deep").mkdir(parents=True)

    RunFolders(layout).prepare()

    assert not left.exists()


def test_links_and_folders_in_the_output_are_looked_over_the_rest_kept(
    tmp_path: Path, layout: Layout, folders: RunFolders, python: Path
) -> None:
    asyncio.run(folders.stage("run_1", ("dep", 1), make_source(tmp_path), python, None))
    output = layout.artifacts("run_1")
    (output / "charts").mkdir()
    (output / "charts" / "a.png").write_bytes(b"png")
    os.symlink("/etc/passwd", output / "passwd")

    dropped = asyncio.run(folders.collect("run_1", None))

    assert dropped == ["passwd"]
    assert (output / "charts" / "a.png").read_bytes() == b"png"


def test_a_read_only_folder_of_the_source_is_copied_with_its_contents_and_mode(
    tmp_path: Path,
) -> None:
    source = make_source(tmp_path)
    (source / "conf").mkdir()
    (source / "conf" / "a.txt").write_text("a\n")
    (source / "conf").chmod(0o555)
    snapshot = read_snapshot(source)
    assert snapshot is not None

    write_snapshot(snapshot, tmp_path / "copy")

    assert (tmp_path / "copy" / "conf" / "a.txt").read_text() == "a\n"
    assert stat.S_IMODE((tmp_path / "copy" / "conf").stat().st_mode) == 0o555
    (source / "conf").chmod(0o755)
    (tmp_path / "copy" / "conf").chmod(0o755)


def test_an_output_the_script_replaced_with_a_file_is_dropped_not_fatal(
    tmp_path: Path, layout: Layout, folders: RunFolders, python: Path
) -> None:
    asyncio.run(folders.stage("run_1", ("dep", 1), make_source(tmp_path), python, None))
    output = layout.artifacts("run_1")
    output.rmdir()
    output.write_text("not a folder\n")

    assert asyncio.run(folders.collect("run_1", None)) == ["output (not a folder)"]
    assert not output.exists()


def test_the_trash_skips_what_another_process_removed_and_keeps_what_it_cannot_remove(
    tmp_path: Path, folders: RunFolders, python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_source(tmp_path)
    for run_id in ("run_1", "run_2"):
        asyncio.run(folders.stage(run_id, ("dep", 1), source, python, None))
        folders.discard_work(run_id)
    outcomes = iter([FileNotFoundError("removed by another node"), OSError("disk error")])

    def failing(path: Path) -> None:
        raise next(outcomes)

    monkeypatch.setattr(run_folders, "remove_tree", failing)
    folders.empty_trash()

    assert folders.has_trash  # tried again next time
