"""Bundles: the same folder gives the same bytes, `.bayignore` decides what goes, and
extraction refuses whatever could escape or flood the destination."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from servicebay.runtime.bundle import (
    DEFAULT_IGNORE,
    MAX_BUNDLE_BYTES,
    BundleError,
    build_bundle,
    extract_bundle,
    list_files,
)

NOBODY = 65534


def make_folder(folder: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return folder


@pytest.fixture
def job(tmp_path: Path) -> Path:
    return make_folder(
        tmp_path / "job",
        {
            "cron.json": '{"cron_frequency": "@daily", "script_to_run": "main.py"}',
            "main.py": "print('hello')\n",
            "README.md": "# Job\n",
            "lib/helpers.py": "VALUE = 1\n",
        },
    )


# Building


def test_the_same_folder_gives_the_same_bundle_wherever_and_whenever(
    job: Path, tmp_path: Path
) -> None:
    first = build_bundle(job)
    copy = shutil.copytree(job, tmp_path / "elsewhere" / "copy")
    os.utime(copy / "main.py", (1_000_000, 1_000_000))
    second = build_bundle(copy)
    assert second.data == first.data
    assert second.digest == first.digest
    assert len(first.digest) == 64
    (copy / "main.py").write_text("print('changed')\n")
    assert build_bundle(copy).digest != first.digest


def test_a_bundle_holds_the_files_with_fixed_owners_and_times(job: Path) -> None:
    (job / "main.py").chmod(0o755)
    bundle = build_bundle(job)
    assert bundle.files == ["README.md", "cron.json", "lib/helpers.py", "main.py"]
    with tarfile.open(fileobj=io.BytesIO(bundle.data), mode="r:gz") as archive:
        members = archive.getmembers()
        assert [member.name for member in members] == bundle.files
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
        modes = {member.name: member.mode for member in members}
        assert (modes["main.py"], modes["cron.json"]) == (0o755, 0o644)
        helpers = archive.extractfile("lib/helpers.py")
        assert helpers is not None
        assert helpers.read() == b"VALUE = 1\n"


def test_the_default_ignores_leave_out_tooling_and_caches(job: Path) -> None:
    make_folder(
        job,
        {
            ".git/HEAD": "ref",
            ".venv/bin/python": "",
            "venv/lib/x.py": "",
            "lib/__pycache__/helpers.cpython-311.pyc": "",
            "old.pyc": "",
            "node_modules/left-pad/index.js": "",
            ".bay-demo/state.db": "",
            ".DS_Store": "",
            "lib/.DS_Store": "",
        },
    )
    assert list_files(job) == ["README.md", "cron.json", "lib/helpers.py", "main.py"]
    assert ".git/" in DEFAULT_IGNORE


def test_bayignore_takes_gitignore_patterns(job: Path) -> None:
    make_folder(
        job,
        {
            ".bayignore": "# data stays home\ndata/\n*.csv\n!keep.csv\n/notes.txt\n",
            "data/big.parquet": "",
            "export.csv": "",
            "keep.csv": "",
            "notes.txt": "",
            "lib/notes.txt": "",
        },
    )
    assert list_files(job) == [
        ".bayignore",
        "README.md",
        "cron.json",
        "keep.csv",
        "lib/helpers.py",
        "lib/notes.txt",
        "main.py",
    ]


def test_bayignore_may_take_back_a_default(job: Path) -> None:
    make_folder(job, {".bayignore": "!node_modules/\n", "node_modules/tool.js": ""})
    assert "node_modules/tool.js" in list_files(job)


def test_a_link_inside_the_folder_travels_as_a_link(job: Path, tmp_path: Path) -> None:
    (job / "entry.py").symlink_to("main.py")
    (job / "shared").symlink_to("lib")
    bundle = build_bundle(job)
    assert {"entry.py", "shared"} <= set(bundle.files)
    dest = tmp_path / "out"
    extract_bundle(bundle.data, dest)
    assert os.readlink(dest / "entry.py") == "main.py"
    assert (dest / "shared" / "helpers.py").read_text() == "VALUE = 1\n"


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside.py", "lib/../../x"])
def test_a_link_out_of_the_folder_is_refused(job: Path, target: str) -> None:
    (job / "sneaky.py").symlink_to(target)
    with pytest.raises(BundleError, match=r"sneaky\.py links outside the folder") as raised:
        build_bundle(job)
    assert "add sneaky.py to .bayignore" in str(raised.value)


def test_a_linked_folder_that_is_ignored_is_no_problem(job: Path, tmp_path: Path) -> None:
    """A `.venv` or `node_modules` linked from elsewhere is left out like a real one."""
    (tmp_path / "shared-env").mkdir()
    (job / ".venv").symlink_to(tmp_path / "shared-env")
    (job / "data").symlink_to(tmp_path / "shared-env")
    (job / ".bayignore").write_text("data/\n")
    assert build_bundle(job).files == [
        ".bayignore",
        "README.md",
        "cron.json",
        "lib/helpers.py",
        "main.py",
    ]


def test_a_dangling_link_is_refused(job: Path) -> None:
    (job / "gone.py").symlink_to("deleted.py")
    with pytest.raises(BundleError, match=r"gone\.py links to deleted\.py, which does not exist"):
        build_bundle(job)


def test_a_special_file_is_refused(job: Path) -> None:
    os.mkfifo(job / "pipe")
    with pytest.raises(BundleError, match=r"pipe is not a regular file: add it to \.bayignore"):
        build_bundle(job)


def test_an_ignored_link_out_is_no_problem(job: Path) -> None:
    (job / "sneaky.py").symlink_to("/etc/passwd")
    (job / ".bayignore").write_text("sneaky.py\n")
    assert "sneaky.py" not in build_bundle(job).files


def test_a_bundle_over_the_limit_names_the_biggest_files(job: Path) -> None:
    (job / "data.csv").write_bytes(b"x" * 3000)
    (job / "model.pkl").write_bytes(b"x" * 2000)
    with pytest.raises(BundleError) as raised:
        build_bundle(job, max_bytes=4096)
    message = str(raised.value)
    assert message.startswith(
        "the folder's files come to 5 KB, over the 4 KB limit; the biggest: data.csv (2.9 KB), "
        "model.pkl (2 KB), cron.json (56 bytes), main.py (15 bytes), lib/helpers.py (10 bytes)."
    )
    assert "Add data files to .bayignore" in message
    assert MAX_BUNDLE_BYTES == 50 * 1024 * 1024


@pytest.fixture
def world_readable_folder() -> Iterator[Path]:
    """A folder outside pytest's private tmp tree, so an unprivileged user can open it."""
    folder = Path(tempfile.mkdtemp(prefix="bay-bundle-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def test_an_unreadable_file_is_named_with_the_fix(world_readable_folder: Path) -> None:
    job = make_folder(world_readable_folder, {"main.py": "", "secret.key": "k", "x.key": "k"})
    (job / "secret.key").chmod(0)
    (job / "x.key").chmod(0)
    as_root = os.geteuid() == 0
    if as_root:  # root reads everything: build as nobody, as an analyst would
        os.seteuid(NOBODY)
    try:
        with pytest.raises(BundleError) as raised:
            build_bundle(job)
    finally:
        if as_root:
            os.seteuid(0)
    assert str(raised.value) == (
        "cannot read secret.key (Permission denied), x.key (Permission denied): fix the "
        "permissions, or add the files to .bayignore if they are not part of the program"
    )


def test_only_a_folder_is_bundled(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="is not a folder"):
        build_bundle(tmp_path / "missing")


# Extracting


def test_a_bundle_extracts_to_the_same_files(job: Path, tmp_path: Path) -> None:
    bundle = build_bundle(job)
    dest = tmp_path / "deployed" / "v1"
    assert extract_bundle(bundle.data, dest) == bundle.files
    for name in bundle.files:
        assert (dest / name).read_bytes() == (job / name).read_bytes()


def tarball(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, content in members:
            if content is not None:
                info.size = len(content)
            archive.addfile(info, io.BytesIO(content) if content is not None else None)
    return gzip.compress(raw.getvalue())


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([(entry("../evil.py"), b"x")], "'../evil.py' climbs out of the bundle"),
        ([(entry("lib/../../evil.py"), b"x")], "climbs out of the bundle"),
        ([(entry("/etc/cron.d/evil"), b"x")], "'/etc/cron.d/evil' is an absolute path"),
        ([(entry("C:\\evil.py"), b"x")], "is an absolute path"),
        ([(entry("link", tarfile.SYMTYPE, "/etc/passwd"), None)], "links to '/etc/passwd'"),
        ([(entry("a/link", tarfile.SYMTYPE, "../../x"), None)], "outside the bundle"),
        ([(entry("hard", tarfile.LNKTYPE, "/etc/shadow"), None)], "'hard' is a hard link"),
        ([(entry("tty", tarfile.CHRTYPE), None)], "'tty' is a device file"),
        ([(entry("disk", tarfile.BLKTYPE), None)], "'disk' is a device file"),
        ([(entry("fifo", tarfile.FIFOTYPE), None)], "'fifo' is a named pipe"),
        ([(entry("a.py"), b"1"), (entry("./a.py"), b"2")], "'a.py' appears twice"),
        ([(entry("ok.py"), b"1"), (entry("../evil.py"), b"x")], "climbs out"),
    ],
)
def test_a_hostile_bundle_is_refused_before_anything_is_written(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], message: str
) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(BundleError, match=message.replace("(", r"\(").replace("[", r"\[")):
        extract_bundle(tarball(*members), dest)
    assert list(tmp_path.iterdir()) == []


def test_a_chain_of_links_that_escapes_only_on_disk_is_refused(tmp_path: Path) -> None:
    """`a` -> `.` and `a/x` -> `..` each look inside, but on disk `a/x` is the parent of
    the destination: the second check, on real paths, refuses it, and nothing is left."""
    data = tarball(
        (entry("a", tarfile.SYMTYPE, "."), None),
        (entry("a/x", tarfile.SYMTYPE, ".."), None),
        (entry("a/x/evil.py"), b"x"),
    )
    with pytest.raises(BundleError, match="the bundle is refused: 'a/x' would link to"):
        extract_bundle(data, tmp_path / "dest")
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_a_link_inside_may_be_followed_by_later_entries(tmp_path: Path) -> None:
    data = tarball((entry("lib", tarfile.SYMTYPE, "."), None), (entry("lib/ok.py"), b"1"))
    assert extract_bundle(data, tmp_path / "dest") == ["lib", "lib/ok.py"]
    assert (tmp_path / "dest" / "ok.py").read_text() == "1"


def test_a_bundle_is_not_unpacked_over_files(job: Path, tmp_path: Path) -> None:
    dest = make_folder(tmp_path / "dest", {"old.py": ""})
    with pytest.raises(BundleError, match=f"cannot unpack into {dest}: Directory not empty"):
        extract_bundle(build_bundle(job).data, dest)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dest", "job"]
    assert [path.name for path in dest.iterdir()] == ["old.py"]


def test_too_many_entries_are_refused(tmp_path: Path) -> None:
    data = tarball(*[(entry(f"f{index}.py"), b"") for index in range(11)])
    with pytest.raises(BundleError, match="holds more than 10 entries"):
        extract_bundle(data, tmp_path / "dest", max_files=10)


def test_content_over_the_limit_is_refused(tmp_path: Path) -> None:
    data = tarball((entry("a.csv"), b"x" * 600), (entry("b.csv"), b"x" * 600))
    with pytest.raises(BundleError, match=r"more than the 1000 bytes limit \(reached at 'b.csv'\)"):
        extract_bundle(data, tmp_path / "dest", max_bytes=1000)
    assert not (tmp_path / "dest").exists()


def test_a_bomb_is_refused_from_its_header_without_inflating_it(tmp_path: Path) -> None:
    huge = entry("zeros.bin")
    huge.size = 10 * 1024**3  # declared, never sent: the header alone is refused
    data = gzip.compress(huge.tobuf(tarfile.PAX_FORMAT))
    with pytest.raises(BundleError, match="more than the 50 MB limit"):
        extract_bundle(data, tmp_path / "dest")


@pytest.mark.parametrize(
    "data",
    [b"", b"not a tarball", gzip.compress(b"not a tar either" * 100, mtime=0)],
    ids=["empty", "not gzip", "gzip but not tar"],
)
def test_something_else_than_a_bundle_is_refused(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(BundleError, match=r"not a readable tar\.gz bundle"):
        extract_bundle(data, tmp_path / "dest")


def test_a_truncated_bundle_is_refused(job: Path, tmp_path: Path) -> None:
    data = build_bundle(job).data
    with pytest.raises(BundleError, match=r"not a readable tar\.gz bundle"):
        extract_bundle(data[: len(data) // 2], tmp_path / "dest")
