"""The builder: one virtual environment per distinct requirements, built once and reused,
with pip configured only by its own `PIP_*` settings (here: a local folder of wheels, never
an index), and nothing half-built ever taken for finished."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from servicebay.runtime.builder import (
    COMPLETE_MARKER,
    Builder,
    BuildFailed,
    Interpreter,
    default_build_uid,
    environment_python,
    normalise_requirements,
    requirements_digest,
)
from servicebay.runtime.layout import Layout


def make_wheel(folder: Path, name: str, version: str) -> Path:
    """A pure-Python wheel of module `name` whose `VERSION` is `version`, in `folder`,
    which the build user may read."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: servicebay-tests\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in {**files, f"{dist}/RECORD": "\n".join(record) + "\n"}.items():
            archive.writestr(path, text)
    wheel.chmod(0o644)
    return wheel


def offline_pip(wheels: Path) -> dict[str, str]:
    """pip settings that install from `wheels` only, whatever this machine's pip config."""
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels), "PIP_CONFIG_FILE": os.devnull}


@pytest.fixture(autouse=True)
def private_umask() -> Iterator[None]:
    """As `bay serve` runs: what it creates is its own unless it says otherwise."""
    previous = os.umask(0o077)
    yield
    os.umask(previous)


@pytest.fixture
def home() -> Iterator[Path]:
    # Not pytest's tmp_path: its parents are closed to the build user when we are root.
    folder = Path(tempfile.mkdtemp(prefix="bay-build-"))
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def wheels(home: Path) -> Path:
    folder = home / "wheels"
    make_wheel(folder, "baytiny", "1.0")
    make_wheel(folder, "baytiny", "2.0")
    return folder


def builder(home: Path, wheels: Path | None = None, **options: float) -> Builder:
    environ = offline_pip(wheels) if wheels else {"PIP_CONFIG_FILE": os.devnull}
    return Builder(Layout(home), uid=default_build_uid(), environ=environ, **options)


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    async def __call__(self, line: str) -> None:
        self.lines.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def run_python(environment: Path, code: str) -> str:
    return subprocess.run(
        [str(environment_python(environment)), "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()


# Digests


PYTHON = Interpreter("/usr/bin/python3", "cpython-3.11.2-x86_64")


def test_comments_spacing_order_and_continuations_do_not_change_the_digest() -> None:
    written = "# data\npandas==2.2.0   # frames\n\nrequests>=2 \\\n  ,<3\n"
    tidy = "requests>=2 ,<3\npandas==2.2.0\npandas==2.2.0\n"
    assert normalise_requirements(written) == ["pandas==2.2.0", "requests>=2 ,<3"]
    assert requirements_digest(written, PYTHON) == requirements_digest(tidy, PYTHON)


def test_another_pin_or_another_python_is_another_environment() -> None:
    assert requirements_digest("pandas==2.2.0", PYTHON) != requirements_digest(
        "pandas==2.2.1", PYTHON
    )
    newer = Interpreter("/usr/bin/python3", "cpython-3.12.1-x86_64")
    assert requirements_digest("", PYTHON) != requirements_digest("", newer)


# Building and reusing


def test_empty_requirements_still_get_an_environment_reused_by_the_next_build(
    home: Path,
) -> None:
    async def scenario() -> None:
        build = builder(home)
        first = Log()
        environment = await build.ensure("", first)
        assert "creating environment" in first.text
        assert "no requirements" in first.text
        assert run_python(environment, "import sys; print(sys.prefix)") == str(environment)
        assert (environment / COMPLETE_MARKER).is_file()
        before = environment.stat()

        again = Log()
        reused = await build.ensure("# nothing to install yet\n\n", again)
        assert reused == environment
        assert again.lines[0].startswith(f"reusing environment {environment.name[:12]}")
        assert "creating environment" not in again.text
        after = environment.stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    asyncio.run(scenario())


def test_requirements_install_from_pip_settings_and_a_changed_pin_builds_another(
    home: Path, wheels: Path
) -> None:
    async def scenario() -> None:
        build = builder(home, wheels)
        log = Log()
        one = await build.ensure("baytiny==1.0\n", log)
        assert "Successfully installed baytiny-1.0" in log.text
        assert run_python(one, "import baytiny; print(baytiny.VERSION)") == "1.0"
        inode = one.stat().st_ino

        assert await build.ensure("\n  baytiny==1.0   # the same pin\n", Log()) == one
        assert one.stat().st_ino == inode

        two = await build.ensure("baytiny==2.0\n", Log())
        assert two != one
        assert run_python(two, "import baytiny; print(baytiny.VERSION)") == "2.0"
        assert run_python(one, "import baytiny; print(baytiny.VERSION)") == "1.0"

    asyncio.run(scenario())


def test_a_failing_install_fails_with_pips_words_and_leaves_nothing(
    home: Path, wheels: Path
) -> None:
    async def scenario() -> None:
        build = builder(home, wheels)
        log = Log()
        with pytest.raises(BuildFailed, match=r"requirements\.txt` exited with code"):
            await build.ensure("baytiny==9.9\n", log)
        assert "No matching distribution found for baytiny==9.9" in log.text
        digest = await build.digest("baytiny==9.9\n")
        assert not Layout(home).environment(digest).exists()
        assert not build.is_complete(digest)

    asyncio.run(scenario())


def test_the_platforms_variables_never_reach_pip(home: Path, wheels: Path) -> None:
    """pip expands ${NAME} in requirements files: only its own settings are there to expand."""
    secret_holder = {**offline_pip(wheels), "BAY_MASTER_KEY": "1.0"}
    build = Builder(Layout(home), uid=default_build_uid(), environ=secret_holder)
    log = Log()
    with pytest.raises(BuildFailed):
        asyncio.run(build.ensure("baytiny==${BAY_MASTER_KEY}\n", log))
    assert "${BAY_MASTER_KEY}" in log.text
    assert "Successfully installed" not in log.text


def test_builds_of_the_same_requirements_at_once_build_once(home: Path) -> None:
    async def scenario() -> list[Log]:
        build = builder(home)
        logs = [Log(), Log(), Log()]
        places = await asyncio.gather(*(build.ensure("", log) for log in logs))
        assert len(set(places)) == 1
        return logs

    logs = asyncio.run(scenario())
    created = [log for log in logs if "creating environment" in log.text]
    assert len(created) == 1
    for log in logs:
        if log is not created[0]:
            assert "reusing environment" in log.text


def test_a_half_built_environment_is_built_again(home: Path) -> None:
    async def scenario() -> None:
        build = builder(home)
        digest = await build.digest("")
        leftover = Layout(home).environment(digest)
        leftover.mkdir(parents=True)
        (leftover / "half-written").write_text("a build that died here")
        log = Log()
        environment = await build.ensure("", log)
        assert "creating environment" in log.text
        assert not (environment / "half-written").exists()
        assert (environment / COMPLETE_MARKER).is_file()

    asyncio.run(scenario())


def test_a_build_over_its_time_limit_is_stopped_and_removed(home: Path) -> None:
    async def scenario() -> None:
        build = builder(home, timeout_seconds=0.001)
        log = Log()
        with pytest.raises(BuildFailed, match=r"over its 0.001 s limit"):
            await build.ensure("", log)
        assert not build.is_complete(await build.digest(""))
        assert not Layout(home).environment(await build.digest("")).exists()

    asyncio.run(scenario())


@pytest.mark.skipif(os.geteuid() != 0, reason="builds change user only when run as root")
def test_as_root_the_environment_is_readable_by_all_and_changeable_by_none(home: Path) -> None:
    environment = asyncio.run(builder(home).ensure("", Log()))
    for path in [environment, *environment.rglob("*")]:
        info = path.lstat()
        assert info.st_uid == 0, path
        if not stat.S_ISLNK(info.st_mode):
            assert info.st_mode & 0o022 == 0, path
            assert info.st_mode & 0o004, path
    # Scripts run as other users: they must reach their interpreter through BAY_HOME.
    assert home.stat().st_mode & 0o001


@pytest.mark.skipif(os.geteuid() != 0, reason="builds change user only when run as root")
def test_as_root_a_home_closed_to_other_users_is_reported_with_its_fix(home: Path) -> None:
    closed = home / "private"
    closed.mkdir(mode=0o700)
    build = builder(closed / "instance")
    (closed / "instance").mkdir()
    with pytest.raises(BuildFailed, match=rf"{closed} is closed to other users.*chmod o\+x"):
        asyncio.run(build.ensure("", Log()))
