"""How `bay` finds the server and key: options, environment, `bay login`; and its failures."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path
from typing import Any

from servicebay import __version__
from tests.cli.cli_support import Bay, assert_clean_failure


def _login_file(config_home: Path) -> Path:
    return config_home / "servicebay" / "config.json"


def test_version(bay: Bay) -> None:
    result = bay("--version")

    assert result.returncode == 0
    assert result.stdout.strip() == f"bay (ServiceBay) {__version__}"


def test_login_saves_a_private_file_that_later_commands_use(server: Any, config_home: Path) -> None:
    anonymous = Bay(server.url, None, config_home)

    logged_in = anonymous("login", "--url", server.url, "--key", server.admin_key)

    assert logged_in.returncode == 0, logged_in.stderr
    assert f"as {server.admin_email} (admin)" in logged_in.stdout
    path = _login_file(config_home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text()) == {"url": server.url, "key": server.admin_key}
    without_env = anonymous("whoami", "--json", env={"BAY_URL": None})
    assert json.loads(without_env.stdout)["email"] == server.admin_email

    logged_out = anonymous("logout")

    assert logged_out.returncode == 0
    assert "Logged out" in logged_out.stdout
    assert not path.exists()
    assert_clean_failure(anonymous("whoami"))
    assert "Not logged in" in anonymous("logout").stdout


def test_login_reads_a_piped_key_and_never_prints_it(server: Any, config_home: Path) -> None:
    anonymous = Bay(server.url, None, config_home)

    result = anonymous("login", input=server.admin_key + "\n")

    assert result.returncode == 0, result.stderr
    assert server.admin_key not in result.stdout + result.stderr
    assert json.loads(_login_file(config_home).read_text())["key"] == server.admin_key


def test_login_with_a_bad_key_saves_nothing(server: Any, config_home: Path) -> None:
    result = Bay(server.url, None, config_home)("login", "--key", "bay_" + "x" * 43)

    assert_clean_failure(result)
    assert "Error: Unauthorized" in result.stderr
    assert "bay login" in result.stderr
    assert not _login_file(config_home).exists()


def test_options_beat_environment_beat_login_file(server: Any, config_home: Path) -> None:
    email, member_key = server.new_user()
    anonymous = Bay(server.url, None, config_home)
    assert anonymous("login", "--key", member_key).returncode == 0

    def who(*args: str, env: dict[str, str | None] | None = None) -> str:
        result = anonymous(*args, "whoami", "--json", env=env)
        assert result.returncode == 0, result.stderr
        return str(json.loads(result.stdout)["email"])

    assert who() == email
    assert who(env={"INTERNAL_API_KEY": server.admin_key}) == server.admin_email
    assert who(env={"BAY_API_KEY": server.admin_key, "INTERNAL_API_KEY": member_key}) == (
        server.admin_email
    )
    assert who("--key", member_key, env={"BAY_API_KEY": server.admin_key}) == email
    assert who("--url", server.url, env={"BAY_URL": "http://127.0.0.1:9"}) == email


def test_missing_key_says_how_to_get_one(server: Any, config_home: Path) -> None:
    result = Bay(server.url, None, config_home)("users", "list")

    assert_clean_failure(result)
    assert "bay login" in result.stderr
    assert "BAY_API_KEY" in result.stderr


def test_unreachable_server_is_one_clear_line(config_home: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"  # bound, not listening

        result = Bay(url, "bay_" + "x" * 43, config_home)("users", "list")

    assert_clean_failure(result)
    assert result.stderr.strip() == (
        f"Error: cannot reach ServiceBay at {url}: is `bay serve` running? (set BAY_URL)"
    )


def test_a_url_without_scheme_is_refused(config_home: Path) -> None:
    result = Bay("localhost:8600", "bay_x", config_home)("users", "list")

    assert_clean_failure(result)
    assert "is not a URL" in result.stderr
