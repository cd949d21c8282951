"""Creating an instance once, opening it, and serving it from PostgreSQL."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from servicebay.core import audit
from servicebay.core.crypto import generate_master_key, write_master_key
from servicebay.core.db import session_factory
from servicebay.core.errors import ConfigurationError
from servicebay.core.instance import Instance, InstanceCreated, InstanceExists, init_instance
from servicebay.core.settings import Settings

if TYPE_CHECKING:
    from tests.conftest import Server


def settings_for(home: Path, database_url: str | None = None, **extra: str) -> Settings:
    return Settings(home=home, database_url=database_url, master_key=None, **extra)


def init(settings: Settings) -> InstanceCreated:
    return asyncio.run(init_instance(settings, admin_email="root@example.com", admin_name="Root"))


def test_init_creates_the_home_the_master_key_and_a_working_admin_key(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home")

    created = init(settings)

    assert settings.master_key_path.exists()
    assert created.admin_email == "root@example.com"
    assert created.api_key.startswith("bay_")

    async def check() -> None:
        instance = await Instance.open(settings)
        try:
            principal = await instance.authenticator.authenticate(created.api_key)
            assert principal.email == "root@example.com"
            assert principal.admin
            async with instance.sessions() as session:
                report = await audit.verify(session)
            assert report.ok
            assert report.checked == 1
        finally:
            await instance.close()

    asyncio.run(check())


def test_init_refuses_to_run_twice_and_keeps_the_master_key(
    database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path / "home", database_url)
    first = init(settings)
    key_before = settings.master_key_path.read_bytes()

    with pytest.raises(InstanceExists) as refused:
        init(settings)

    assert "already exists" in refused.value.message
    assert settings.master_key_path.read_bytes() == key_before
    assert first.api_key not in refused.value.message

    async def audited_events() -> int:
        instance = await Instance.open(settings)
        try:
            async with instance.sessions() as session:
                report = await audit.verify(session)
            return report.checked
        finally:
            await instance.close()

    assert asyncio.run(audited_events()) == 1  # no second instance.init event


def test_init_never_replaces_a_master_key_file_already_in_the_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    existing = generate_master_key()
    write_master_key(home / "master.key", existing)
    before = (home / "master.key").read_bytes()

    init(settings_for(home))

    assert (home / "master.key").read_bytes() == before


def test_init_refuses_a_broken_master_key_file_and_leaves_it_alone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "master.key").write_text("not a key\n")

    with pytest.raises(ConfigurationError):
        init(settings_for(home))

    assert (home / "master.key").read_text() == "not a key\n"


def test_init_with_a_master_key_from_the_environment_writes_no_key_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = Settings(home=home, database_url=None, master_key=generate_master_key().encode())

    init(settings)

    assert not settings.master_key_path.exists()


def test_opening_an_instance_without_a_master_key_says_how_to_fix_it(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home")
    init(settings)
    settings.master_key_path.unlink()

    with pytest.raises(ConfigurationError) as refused:
        asyncio.run(Instance.open(settings))

    message = refused.value.message
    assert str(settings.master_key_path) in message
    assert "BAY_MASTER_KEY" in message
    assert "bay init" in message


def test_opening_an_instance_with_another_master_key_cannot_read_its_secrets(
    tmp_path: Path,
) -> None:
    from servicebay.core import secret_store

    settings = settings_for(tmp_path / "home")
    init(settings)

    async def put_then_reveal_with_another_key() -> None:
        instance = await Instance.open(settings)
        try:
            async with instance.sessions() as session, session.begin():
                await secret_store.put_secret(
                    session, instance.master_key, name="TOKEN", value="v4lue", allow=["service:x"]
                )
        finally:
            await instance.close()
        other = Settings(
            home=settings.home, database_url=None, master_key=generate_master_key().encode()
        )
        instance = await Instance.open(other)
        try:
            async with session_factory(instance.engine)() as session:
                with pytest.raises(ConfigurationError) as refused:
                    await secret_store.reveal(
                        session, instance.master_key, "TOKEN", for_resource="service:x"
                    )
                assert "v4lue" not in str(refused.value)
        finally:
            await instance.close()

    asyncio.run(put_then_reveal_with_another_key())


# --- a full server on PostgreSQL ----------------------------------------------------------


def test_a_server_on_postgresql_is_ready_and_answers_an_authenticated_request(
    postgres_url: str, tmp_path: Path, start_server: Callable[..., Server]
) -> None:
    server = start_server(tmp_path / "home", database_url=postgres_url)
    ready = httpx.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "schema": "ok", "audit": "ok"}
    with server.admin() as admin:
        me = admin.get("/api/v1/me")
        assert me.status_code == 200, me.text
        assert me.json()["email"] == server.admin_email
        assert me.json()["admin"] is True
        assert admin.get("/api/v1/audit/verify").json()["ok"] is True
    with server.client() as anonymous:
        assert anonymous.get("/api/v1/me").status_code == 401
    assert not (server.home / "servicebay.db").exists()


def test_on_postgresql_odd_urls_are_answered_and_do_not_fail_concurrent_requests(
    postgres_url: str, tmp_path: Path, start_server: Callable[..., Server]
) -> None:
    """A path longer than the audit column, or with a NUL in it, is still audited: it
    must neither be refused with 503 nor take the requests batched with it down too."""
    server = start_server(tmp_path / "home", database_url=postgres_url)
    odd_paths = ["/" + "a" * 3000, "/a%00b", "/api/v1/me?x=" + "b" * 3000]
    with server.admin() as admin:
        for path in odd_paths:
            answer = admin.get(path)
            assert answer.status_code in (200, 404), (path[:30], answer.text[:300])

        def call(number: int) -> int:
            path = odd_paths[number % 3] if number % 4 == 0 else "/api/v1/me"
            return admin.get(path).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(call, range(120)))
        assert 503 not in statuses
        assert statuses.count(200) >= 90
        assert admin.get("/api/v1/audit/verify").json()["ok"] is True
