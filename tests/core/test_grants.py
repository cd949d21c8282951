"""The permission decision, as a specification: deny by default, explain every verdict.

A grant is (principal, resource, actions). The rules under test are those of
docs/api.md, "Permissions".
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest

from servicebay.core import grants
from servicebay.core.db import session_factory
from servicebay.core.errors import InvalidInput
from servicebay.core.grants import (
    GrantRule,
    Subject,
    decide,
    parse_actions,
    parse_principal,
    parse_resource,
    resource_covers,
)
from tests.core.core_support import migrated_engine

ANN = Subject("user:ann@example.com", teams=("marketing",))
BOB = Subject("user:bob@example.com", teams=("finance",))


def rule(
    principal: str, resource: str, actions: Iterable[str], grant_id: str = "grt_1"
) -> GrantRule:
    return GrantRule(grant_id, principal, resource, frozenset(actions))


# --- deny by default ----------------------------------------------------------------------


def test_without_any_grant_everything_is_denied() -> None:
    for action in grants.ACTIONS:
        decision = decide([], ANN, "service:sql", action)
        assert not decision.allowed
        assert decision.grant is None
        assert "denied by default" in decision.reason


def test_a_grant_for_another_resource_or_action_does_not_allow() -> None:
    rules = [rule("user:ann@example.com", "service:instagram", ["read"])]

    assert not decide(rules, ANN, "service:slack", "read").allowed
    assert not decide(rules, ANN, "service:instagram", "create").allowed
    assert not decide(rules, ANN, "webhook:instagram", "read").allowed


# --- principals ---------------------------------------------------------------------------


def test_a_user_grant_allows_that_user_only() -> None:
    rules = [rule("user:ann@example.com", "service:instagram", ["invoke"])]

    assert decide(rules, ANN, "service:instagram", "invoke").allowed
    assert not decide(rules, BOB, "service:instagram", "invoke").allowed


def test_a_team_grant_allows_the_team_members_only() -> None:
    rules = [rule("team:marketing", "service:instagram", ["invoke"])]

    assert decide(rules, ANN, "service:instagram", "invoke").allowed
    assert not decide(rules, BOB, "service:instagram", "invoke").allowed


def test_a_team_grant_does_not_reach_a_user_named_like_the_team() -> None:
    rules = [rule("team:marketing", "service:instagram", ["invoke"])]
    impostor = Subject("user:marketing@example.com", teams=())

    assert not decide(rules, impostor, "service:instagram", "invoke").allowed


def test_a_grant_to_everyone_allows_every_active_user() -> None:
    rules = [rule("*", "service:weather", ["invoke"])]

    assert decide(rules, ANN, "service:weather", "invoke").allowed
    assert decide(rules, Subject("user:new@example.com"), "service:weather", "invoke").allowed


# --- disabled users and admins ------------------------------------------------------------


def test_a_disabled_user_is_denied_whatever_their_grants() -> None:
    disabled = Subject("user:ann@example.com", teams=("marketing",), disabled=True)
    rules = [
        rule("user:ann@example.com", "service:instagram", ["invoke"], "grt_user"),
        rule("team:marketing", "service:instagram", ["invoke"], "grt_team"),
        rule("*", "service:instagram", ["invoke"], "grt_all"),
    ]

    decision = decide(rules, disabled, "service:instagram", "invoke")

    assert not decision.allowed
    assert decision.grant is None
    assert "disabled" in decision.reason


def test_a_disabled_admin_is_denied() -> None:
    disabled_admin = Subject("user:root@example.com", admin=True, disabled=True)

    assert not decide([], disabled_admin, "service:sql", "delete").allowed


def test_an_admin_may_do_everything_without_a_grant() -> None:
    admin = Subject("user:root@example.com", admin=True)

    for action in grants.ACTIONS:
        decision = decide([], admin, "deployment:nightly", action)
        assert decision.allowed
        assert "admin" in decision.reason
        assert decision.grant is None


# --- resources ----------------------------------------------------------------------------


def test_a_service_grant_covers_every_table_and_endpoint_of_it() -> None:
    rules = [rule("user:ann@example.com", "service:sql", ["read"])]

    assert decide(rules, ANN, "service:sql", "read").allowed
    assert decide(rules, ANN, "service:sql/customer", "read").allowed
    assert decide(rules, ANN, "service:sql/orders", "read").allowed


def test_a_service_grant_does_not_cover_a_service_whose_name_starts_the_same() -> None:
    rules = [rule("user:ann@example.com", "service:sql", ["read"])]

    assert not decide(rules, ANN, "service:sqlite", "read").allowed
    assert not decide(rules, ANN, "service:sql2/customer", "read").allowed
    assert not decide(rules, ANN, "service:sq", "read").allowed


def test_a_glob_grant_covers_the_matching_tables_only() -> None:
    rules = [rule("user:ann@example.com", "service:sql/cust*", ["read"])]

    assert decide(rules, ANN, "service:sql/customer", "read").allowed
    assert decide(rules, ANN, "service:sql/customs", "read").allowed
    assert not decide(rules, ANN, "service:sql/orders", "read").allowed
    assert not decide(rules, ANN, "service:sql/acustomer", "read").allowed


def test_a_glob_grant_does_not_cover_the_whole_service() -> None:
    rules = [rule("user:ann@example.com", "service:sql/cust*", ["read"])]

    assert not decide(rules, ANN, "service:sql", "read").allowed


def test_a_table_grant_does_not_cover_the_same_table_of_another_service() -> None:
    rules = [rule("user:ann@example.com", "service:sql/customer", ["read"])]

    assert decide(rules, ANN, "service:sql/customer", "read").allowed
    assert not decide(rules, ANN, "service:crm/customer", "read").allowed


def test_globs_are_case_sensitive() -> None:
    assert resource_covers("service:sql/cust*", "service:sql/customer")
    assert not resource_covers("service:sql/cust*", "service:sql/Customer")


def test_resource_kinds_do_not_cover_each_other() -> None:
    assert not resource_covers("service:nightly", "deployment:nightly")
    assert not resource_covers("app:dash", "webhook:dash")
    assert not resource_covers("deployment:nightly", "service:nightly")


# --- actions ------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["invoke", "read", "create", "update", "delete"])
def test_invoke_covers_any_endpoint_and_every_table_operation(action: str) -> None:
    rules = [rule("user:ann@example.com", "service:sql", ["invoke"])]

    assert decide(rules, ANN, "service:sql/customer", action).allowed


def test_invoke_does_not_cover_manage() -> None:
    rules = [rule("user:ann@example.com", "deployment:nightly", ["invoke"])]

    assert not decide(rules, ANN, "deployment:nightly", "manage").allowed


def test_manage_does_not_cover_invoke() -> None:
    rules = [rule("user:ann@example.com", "deployment:nightly", ["manage"])]

    assert decide(rules, ANN, "deployment:nightly", "manage").allowed
    assert not decide(rules, ANN, "deployment:nightly", "invoke").allowed


def test_read_covers_nothing_but_read() -> None:
    rules = [rule("user:ann@example.com", "service:sql/customer", ["read"])]

    for action in ("invoke", "create", "update", "delete", "manage"):
        assert not decide(rules, ANN, "service:sql/customer", action).allowed, action


# --- reasons ------------------------------------------------------------------------------


def test_an_allowed_decision_names_the_grant_and_the_principal_that_decided() -> None:
    rules = [
        rule("team:finance", "service:sql", ["invoke"], "grt_finance"),
        rule("team:marketing", "service:sql/cust*", ["read"], "grt_marketing"),
    ]

    decision = decide(rules, ANN, "service:sql/customer", "read")

    assert decision.allowed
    assert decision.grant == "grt_marketing"
    assert "grt_marketing" in decision.reason
    assert "team:marketing" in decision.reason
    assert "grt_finance" not in decision.reason


def test_a_denial_says_what_was_asked_and_for_whom() -> None:
    decision = decide([], ANN, "service:sql/customer", "delete")

    assert not decision.allowed
    for part in ("delete", "service:sql/customer", "user:ann@example.com"):
        assert part in decision.reason


def test_stored_grants_decide_with_the_narrowest_grant_named(sqlite_url: str) -> None:
    async def scenario() -> None:
        engine = await migrated_engine(sqlite_url)
        try:
            async with session_factory(engine)() as session, session.begin():
                broad = await grants.create_grant(
                    session,
                    principal="team:marketing",
                    resource="service:sql",
                    actions=["invoke"],
                    created_by="root@example.com",
                )
                narrow = await grants.create_grant(
                    session,
                    principal="user:ann@example.com",
                    resource="service:sql/customer",
                    actions=["read"],
                    created_by="root@example.com",
                )
            async with session_factory(engine)() as session:
                rules = await grants.load_rules(session)

            on_customer = decide(rules, ANN, "service:sql/customer", "read")
            on_orders = decide(rules, ANN, "service:sql/orders", "read")

            assert on_customer.grant == narrow.id
            assert on_orders.grant == broad.id
            assert not decide(rules, BOB, "service:sql/customer", "read").allowed
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_creating_a_grant_normalises_what_it_stores(sqlite_url: str) -> None:
    async def scenario() -> None:
        engine = await migrated_engine(sqlite_url)
        try:
            async with session_factory(engine)() as session, session.begin():
                grant = await grants.create_grant(
                    session,
                    principal=" Ann@Example.COM ",
                    resource="service:sql/customer",
                    actions=["read", "invoke", "read"],
                    created_by="root@example.com",
                )
            assert grant.principal == "user:ann@example.com"
            assert grant.actions == ["invoke", "read"]
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_creating_a_grant_refuses_bad_input_and_stores_nothing(sqlite_url: str) -> None:
    async def scenario() -> None:
        engine = await migrated_engine(sqlite_url)
        try:
            async with session_factory(engine)() as session:
                with pytest.raises(InvalidInput):
                    await grants.create_grant(
                        session,
                        principal="team:marketing",
                        resource="service:sql; DROP TABLE grants",
                        actions=["read"],
                        created_by="root@example.com",
                    )
            async with session_factory(engine)() as session:
                assert await grants.load_rules(session) == []
        finally:
            await engine.dispose()

    asyncio.run(scenario())


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        ("*", "*"),
        ("team:marketing", "team:marketing"),
        ("team:data_science", "team:data_science"),
        ("user:ann@example.com", "user:ann@example.com"),
        ("user:Ann@Example.COM", "user:ann@example.com"),
        ("  user:ann@example.com\n", "user:ann@example.com"),
        ("ann@example.com", "user:ann@example.com"),
        ("me@corp", "user:me@corp"),
    ],
)
def test_principals_in_their_accepted_forms(given: str, parsed: str) -> None:
    assert parse_principal(given) == parsed


@pytest.mark.parametrize(
    "hostile",
    [
        "",
        " ",
        "**",
        "* ,team:marketing",
        "user:",
        "user:ann",
        "user:ann@",
        "user:@example.com",
        "user:ann@example.com:admin",
        "user:ann@@example.com",
        "user:ann example@example.com",
        "user:ann\n@example.com",
        "user:ann\x00@example.com",
        "user:ann\x1b[31m@example.com",
        "user:" + "a" * 400 + "@example.com",
        "team:",
        "team:Marketing",
        "team:market ing",
        "team:-marketing",
        "team:../../etc/passwd",
        "team:marketing'; DROP TABLE grants; --",
        "team:marketing\x00",
        "team:" + "a" * 64,
        "group:marketing",
        "admin",
        "role:admin",
        "team:\u043c\u0430\u0440\u043a\u0435\u0442",  # Cyrillic
    ],
)
def test_malformed_or_hostile_principals_are_invalid_input(hostile: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_principal(hostile)
    assert refused.value.errors
    assert refused.value.errors[0]["loc"] == ["body", "principal"]


@pytest.mark.parametrize(
    "resource",
    [
        "service:sql",
        "service:sql/customer",
        "service:sql/cust*",
        "service:sql/order_[0-9]",
        "service:salesforce/create_customer",
        "webhook:salesforce_data_lookup",
        "app:dashboard",
        "deployment:nightly-report",
    ],
)
def test_resources_in_their_accepted_forms(resource: str) -> None:
    assert parse_resource(resource) == resource


@pytest.mark.parametrize(
    "hostile",
    [
        "",
        "*",
        "service:",
        "service:*",
        "service:SQL",
        "service:1sql",
        "service:sql/",
        "service:sql customer",
        "service:sql/customer name",
        "service:sql/customer;DROP TABLE grants",
        "service:sql/cust'--",
        "service:sql\n",
        "service:sql/customer\n",
        "service:sql\x00",
        "service:sql/cust\x00omer",
        "service:\u0455ql",  # a Cyrillic letter that looks like s
        "service:" + "a" * 64,
        "service:sql/" + "a" * 201,
        "webhook:hook/sub",
        "deployment:nightly/x",
        "table:customer",
        "sql/customer",
        " service:sql",
    ],
)
def test_malformed_or_hostile_resources_are_invalid_input(hostile: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_resource(hostile)
    assert refused.value.errors
    assert refused.value.errors[0]["loc"] == ["body", "resource"]


def test_actions_are_deduplicated_and_sorted() -> None:
    assert parse_actions(["read", "invoke", "read"]) == ["invoke", "read"]


@pytest.mark.parametrize(
    "hostile",
    [
        [],
        ["admin"],
        ["READ"],
        [" read"],
        ["read", "drop"],
        ["read; DROP TABLE grants"],
        ["*"],
        [""],
        "read",
    ],
)
def test_unknown_or_missing_actions_are_invalid_input(hostile: list[str]) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_actions(hostile)
    assert refused.value.errors
    assert refused.value.errors[0]["loc"] == ["body", "actions"]
