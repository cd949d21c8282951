"""Table endpoints on every backend: list with filters, get, create, update, delete."""

from __future__ import annotations

from typing import Any

import pytest

from servicebay.core.errors import Conflict, InvalidInput, NotFound
from tests.services.sql.sql_support import Shop, locs


def _emails(rows: list[dict[str, Any]]) -> list[str]:
    return [row["email"].split("@")[0].rsplit("-", 1)[1] for row in rows]


@pytest.fixture
def five(shop: Shop, tag: str) -> list[dict[str, Any]]:
    """Customers 0..4 of this test: ages 20, 30, 40, 50 and none."""
    rows = []
    for index, age in enumerate([20, 30, 40, 50, None]):
        body = {
            "email": f"{tag}-{index}@example.com",
            "name": ["Ada", "ada", "Bob", "Cy, Jr.", "Dee"][index],
            "age": age,
            "balance": ["10.00", "20.5", 30, "40.25", "0"][index],
            "active": index % 2 == 0,
            "born": f"199{index}-01-0{index + 1}",
        }
        reply = shop.call("POST", "customer", body=body)
        assert reply.status == 201, reply.body
        rows.append(reply.body)
    return rows


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"age": "30"}, ["1"]),
        ({"age": "eq.30"}, ["1"]),
        ({"age": "neq.30"}, ["0", "2", "3"]),
        ({"age": "gt.30"}, ["2", "3"]),
        ({"age": "gte.30"}, ["1", "2", "3"]),
        ({"age": "lt.30"}, ["0"]),
        ({"age": "lte.30"}, ["0", "1"]),
        ({"age": "in.(20,50,60)"}, ["0", "3"]),
        ({"age": "in.()"}, []),
        ({"age": "is.null"}, ["4"]),
        ({"name": "like.B*"}, ["2"]),
        ({"name": "like.%y%"}, ["3"]),
        ({"name": "ilike.AD*"}, ["0", "1"]),
        ({"name": "ilike.%e"}, ["4"]),
        ({"name": 'in.("Cy, Jr.",Bob)'}, ["2", "3"]),
        ({"active": "is.true"}, ["0", "2", "4"]),
        ({"active": "is.false"}, ["1", "3"]),
        ({"active": "false"}, ["1", "3"]),
        ({"balance": "gte.20.50"}, ["1", "2", "3"]),
        ({"balance": "40.25"}, ["3"]),
        ({"born": "lt.1992-01-01"}, ["0", "1"]),
        ({"id": "gt.0", "age": "lt.45"}, ["0", "1", "2"]),
    ],
)
def test_filters(
    shop: Shop,
    tag: str,
    five: list[dict[str, Any]],
    filters: dict[str, str],
    expected: list[str],
) -> None:
    assert _emails(shop.mine(tag, **filters)) == expected


def test_repeated_filters_on_a_column_all_apply(shop: Shop, tag: str, five: Any) -> None:
    query = [("email", f"like.{tag}-*"), ("age", "gt.20"), ("age", "lt.50")]

    assert _emails(shop.call("GET", "customer", query=query).body["data"]) == ["1", "2"]


def test_select_and_order(shop: Shop, tag: str, five: Any) -> None:
    rows = shop.mine(tag, select="email,age", order="age.desc,name")

    assert [list(row) for row in rows] == [["email", "age"]] * 5
    assert [row["age"] for row in rows] == [None, 50, 40, 30, 20]
    ascending = shop.mine(tag, order="age")
    assert [row["age"] for row in ascending] == [20, 30, 40, 50, None]
    assert [row["name"] for row in shop.mine(tag, order="balance.desc", select="name")] == [
        "Cy, Jr.",
        "Bob",
        "ada",
        "Ada",
        "Dee",
    ]


def test_list_answers_every_bad_parameter_at_once(shop: Shop) -> None:
    error = shop.refused(
        "GET",
        "customer",
        query=[
            ("age", "abc"),
            ("nope", "1"),
            ("age", "between.1"),
            ("active", "maybe"),
            ("name", "is.true"),
            ("profile", "eq.{}"),
            ("born", "2024-13-01"),
            ("secret_note", "x"),
            ("select", "email,secret_note"),
            ("order", "name.sideways"),
            ("limit", "51"),
            ("cursor", "bm90IGEgY3Vyc29y"),
        ],
    )

    assert isinstance(error, InvalidInput)
    expected = "age nope age active name profile born secret_note select order limit cursor"
    assert locs(error) == [["query", name] for name in expected.split()]
    by_type = {item["type"] for item in error.errors or []}
    assert {"unknown_column", "unknown_operator", "value_error"} <= by_type


@pytest.mark.parametrize("limit", ["0", "-1", "51", "1.5", "ten", "9" * 50])
def test_limit_outside_one_to_the_maximum_is_refused(shop: Shop, limit: str) -> None:
    error = shop.refused("GET", "customer", query={"limit": limit})

    assert locs(error) == [["query", "limit"]]
    assert "1 to 50" in error.errors[0]["msg"]  # type: ignore[index]


def test_limit_and_default_limit(shop: Shop, tag: str) -> None:
    shop.customers(tag, 25)

    assert len(shop.mine(tag)) == 20
    assert len(shop.mine(tag, limit="3")) == 3


def test_get_by_key(shop: Shop, tag: str, five: list[dict[str, Any]]) -> None:
    reply = shop.call("GET", "customer", f"{tag}-2@example.com")

    assert reply.status == 200
    assert reply.body == five[2]
    assert "secret_note" not in reply.body
    selected = shop.call("GET", "customer", f"{tag}-2@example.com", query={"select": "name"})
    assert selected.body == {"name": "Bob"}


def test_get_missing_key_is_404_naming_it(shop: Shop, tag: str) -> None:
    error = shop.refused("GET", "customer", f"{tag}-nobody@example.com")

    assert isinstance(error, NotFound)
    assert f"{tag}-nobody@example.com" in error.message
    assert "email" in error.message


def test_key_is_coerced_to_the_key_column_type(shop: Shop) -> None:
    error = shop.refused("GET", "orders", "abc")

    assert isinstance(error, InvalidInput)
    assert locs(error) == [["path", "id"]]
    assert isinstance(shop.refused("GET", "orders", "2147483647"), NotFound)
    too_big = "9223372036854775808" if shop.backend == "sqlite" else "2147483648"
    assert locs(shop.refused("GET", "orders", too_big)) == [["path", "id"]]


def test_create_answers_the_row_as_stored(shop: Shop, tag: str) -> None:
    reply = shop.call("POST", "customer", body={"email": f"{tag}@example.com", "name": "New"})

    assert reply.status == 201
    row = reply.body
    assert isinstance(row["id"], int)
    assert row["balance"] == "0.00"
    assert row["active"] is True
    assert row["tier"] == "basic"
    assert row["created_at"][:2] == "20"
    assert row["profile"] is None
    assert "secret_note" not in row


def test_create_an_array_answers_data(shop: Shop, tag: str) -> None:
    body = [{"email": f"{tag}-{index}@example.com", "name": "N"} for index in range(3)]
    reply = shop.call("POST", "customer", body=body)

    assert reply.status == 201
    assert [row["email"] for row in reply.body["data"]] == [row["email"] for row in body]
    assert reply.body["next"] is None
    assert len({row["id"] for row in reply.body["data"]}) == 3


def test_create_rows_with_different_columns_in_one_array(shop: Shop, tag: str) -> None:
    body = [
        {"email": f"{tag}-0@example.com", "name": "A"},
        {"email": f"{tag}-1@example.com", "name": "B", "age": 7},
        {"email": f"{tag}-2@example.com", "name": "C", "age": 8},
        {"email": f"{tag}-3@example.com", "name": "D"},
    ]
    created = shop.call("POST", "customer", body=body).body["data"]

    assert [(row["name"], row["age"]) for row in created] == [
        ("A", None),
        ("B", 7),
        ("C", 8),
        ("D", None),
    ]


def test_an_array_is_all_or_nothing(shop: Shop, tag: str) -> None:
    shop.customers(tag, 1)
    before = shop.fingerprint()
    body = [{"email": f"{tag}-new-{index}@example.com", "name": "N"} for index in range(5)]
    body.append({"email": f"{tag}-0@example.com", "name": "duplicate of an existing row"})

    error = shop.refused("POST", "customer", body=body)

    assert isinstance(error, Conflict)
    assert "uq_customer_email" in error.message
    assert shop.fingerprint() == before
    assert len(shop.mine(tag)) == 1


def test_duplicates_inside_one_array_create_nothing(shop: Shop, tag: str) -> None:
    body = [{"email": f"{tag}@example.com", "name": "N"}] * 2

    assert isinstance(shop.refused("POST", "customer", body=body), Conflict)
    assert shop.mine(tag) == []


def test_create_lists_every_bad_field_of_every_row(shop: Shop, tag: str) -> None:
    body: list[Any] = [
        {"email": f"{tag}-0@example.com", "name": "fine"},
        {"email": f"{tag}-1@example.com", "name": "x" * 61, "age": 2**63},
        {"name": "no email", "nope": 1, "tier": "gold", "secret_note": "hi"},
        "not an object",
        {
            "email": None,
            "name": 5,
            "balance": "12.345",
            "score": "high",
            "active": "yes",
            "born": "1990-02-30",
            "wakes_at": "25:00",
            "created_at": "yesterday",
            "id": True,
        },
        {"email": f"{tag}-5@example.com", "name": "N", "balance": 123456789, "age": 1.5},
    ]

    error = shop.refused("POST", "customer", body=body)

    assert isinstance(error, InvalidInput)
    assert sorted(map(str, locs(error))) == sorted(
        map(
            str,
            [
                ["body", 1, "name"],
                ["body", 1, "age"],
                ["body", 2, "nope"],
                ["body", 2, "tier"],
                ["body", 2, "secret_note"],
                ["body", 2, "email"],
                ["body", 3],
                ["body", 4, "email"],
                ["body", 4, "name"],
                ["body", 4, "balance"],
                ["body", 4, "score"],
                ["body", 4, "active"],
                ["body", 4, "born"],
                ["body", 4, "wakes_at"],
                ["body", 4, "created_at"],
                ["body", 4, "id"],
                ["body", 5, "balance"],
                ["body", 5, "age"],
            ],
        )
    )
    types = {tuple(item["loc"]): item["type"] for item in error.errors or []}
    assert types[("body", 2, "nope")] == "extra_forbidden"
    assert types[("body", 2, "secret_note")] == "extra_forbidden"
    assert types[("body", 2, "tier")] == "read_only"
    assert types[("body", 2, "email")] == "missing"
    assert shop.mine(tag) == []


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ("a string", ["body"]),
        ([], ["body"]),
        ([{"email": "x@example.com", "name": "n"}] * 51, ["body"]),
        (None, ["body"]),
    ],
)
def test_create_refuses_bodies_that_are_not_rows(shop: Shop, body: Any, loc: list[Any]) -> None:
    assert locs(shop.refused("POST", "customer", body=body)) == [loc]


def test_values_of_each_type_round_trip(shop: Shop, tag: str) -> None:
    body: dict[str, Any] = {
        "email": f"{tag}@example.com",
        "name": "Types",
        "age": -32768,
        "balance": 99999999.99,
        "score": 0.1,
        "active": False,
        "born": "2000-02-29",
        "wakes_at": "06:05:04",
        "profile": {"tags": ["a", "b"], "n": 1.5, "nested": {"ok": True}, "none": None},
    }
    created = shop.call("POST", "customer", body=body).body

    assert created["age"] == -32768
    assert created["balance"] == "99999999.99"
    assert created["score"] == pytest.approx(0.1)
    assert created["active"] is False
    assert created["born"] == "2000-02-29"
    assert created["wakes_at"] == "06:05:04"
    assert created["profile"] == body["profile"]
    assert shop.call("GET", "customer", body["email"]).body == created


def test_json_values_that_are_not_objects(shop: Shop, tag: str) -> None:
    for index, value in enumerate([[1, 2], "text", 3, True, "1e999", "123", "null", 2.5]):
        body = {"email": f"{tag}-{index}@example.com", "name": "J", "profile": value}
        assert shop.call("POST", "customer", body=body).body["profile"] == value
    assert shop.mine(tag, profile="is.null") == []


def test_integer_range_follows_the_column_size(shop: Shop, tag: str) -> None:
    """SQLite keeps every integer in 64 bits whatever the declared SMALLINT."""
    body = {"email": f"{tag}@example.com", "name": "N", "age": 32768}
    if shop.backend == "sqlite":
        assert shop.call("POST", "customer", body=body).body["age"] == 32768
    else:
        error = shop.refused("POST", "customer", body=body)
        assert locs(error) == [["body", "age"]]
        assert "32767" in error.message or "32767" in str(error.errors)


def test_uuids(shop: Shop, tag: str) -> None:
    """A uuid column (PostgreSQL) takes any spelling of a UUID and answers the canonical one;
    elsewhere the shop keeps it in a CHAR(36), as text."""
    value = "123e4567-e89b-12d3-a456-426614174000"
    body = {"email": f"{tag}-0@example.com", "name": "U", "external_id": value.upper()}
    if shop.backend != "postgres":
        body["external_id"] = value

    created = shop.call("POST", "customer", body=body).body

    assert created["external_id"] == value
    assert [row["email"] for row in shop.mine(tag, external_id=value)] == [body["email"]]
    if shop.backend == "postgres":
        assert shop.mine(tag, external_id=f"eq.{{{value.upper()}}}")[0]["external_id"] == value
        assert locs(shop.refused("GET", "customer", query={"external_id": "xyz"})) == [
            ["query", "external_id"]
        ]


def test_a_time_of_day_takes_no_offset(shop: Shop, tag: str) -> None:
    body = {"email": f"{tag}@example.com", "name": "T", "wakes_at": "06:00:00+02:00"}

    assert locs(shop.refused("POST", "customer", body=body)) == [["body", "wakes_at"]]


def test_timezones(shop: Shop, tag: str) -> None:
    """timestamptz keeps the instant (answered in UTC); a naive column stores UTC."""
    body = {"email": f"{tag}@example.com", "name": "N"}
    created = shop.call("POST", "customer", body=body).body
    if shop.backend == "postgres":
        assert created["created_at"].endswith("+00:00")
    else:
        assert "+" not in created["created_at"]
    events = shop.call("GET", "events", query={"occurred_at": "gt.2999-12-31T23:00:00-02:00"}).body
    assert events["data"] == []


def test_patch_changes_the_given_columns(shop: Shop, tag: str) -> None:
    [row] = shop.customers(tag, 1, age=20)

    reply = shop.call("PATCH", "customer", row["email"], body={"age": 21, "profile": {"x": 1}})

    assert reply.status == 200
    assert reply.body == {**row, "age": 21, "profile": {"x": 1}}
    assert shop.call("GET", "customer", row["email"]).body == reply.body


def test_patch_can_change_the_key(shop: Shop, tag: str) -> None:
    [row] = shop.customers(tag, 1)
    new_email = f"{tag}-renamed@example.com"

    reply = shop.call("PATCH", "customer", row["email"], body={"email": new_email})

    assert reply.body["email"] == new_email
    assert isinstance(shop.refused("GET", "customer", row["email"]), NotFound)


def test_patch_to_null_and_unchanged_values(shop: Shop, tag: str) -> None:
    [row] = shop.customers(tag, 1, age=20)

    assert shop.call("PATCH", "customer", row["email"], body={"age": None}).body["age"] is None
    assert shop.call("PATCH", "customer", row["email"], body={"age": None}).status == 200


def test_patch_errors(shop: Shop, tag: str) -> None:
    first, second = shop.customers(tag, 2)

    missing = shop.refused("PATCH", "customer", f"{tag}-none@example.com", body={"age": 1})
    assert isinstance(missing, NotFound)
    taken = shop.refused("PATCH", "customer", first["email"], body={"email": second["email"]})
    assert isinstance(taken, Conflict)
    assert "uq_customer_email" in taken.message
    bad = shop.refused(
        "PATCH",
        "customer",
        first["email"],
        query={"x": "1"},
        body={"name": None, "tier": "gold", "age": "old", "nope": 1},
    )
    assert sorted(map(str, locs(bad))) == sorted(
        map(
            str,
            [
                ["query", "x"],
                ["body", "name"],
                ["body", "tier"],
                ["body", "age"],
                ["body", "nope"],
            ],
        )
    )
    assert locs(shop.refused("PATCH", "customer", first["email"], body={})) == [["body"]]
    assert locs(shop.refused("PATCH", "customer", first["email"], body=[1])) == [["body"]]
    assert locs(shop.refused("PATCH", "orders", "x", body={"amount": "x"})) == [
        ["body", "amount"],
        ["path", "id"],
    ]


def test_delete(shop: Shop, tag: str) -> None:
    [row] = shop.customers(tag, 1)

    assert shop.call("DELETE", "customer", row["email"]).status == 204
    assert isinstance(shop.refused("GET", "customer", row["email"]), NotFound)
    assert isinstance(shop.refused("DELETE", "customer", row["email"]), NotFound)


def test_constraints_answer_409_naming_them(shop: Shop, tag: str) -> None:
    [customer] = shop.customers(tag, 1)
    order = shop.call("POST", "orders", body={"customer_id": customer["id"], "amount": "9.99"}).body
    assert order["status"] == "new"
    assert order["amount"] == "9.99"

    in_use = shop.refused("DELETE", "customer", customer["email"])
    assert isinstance(in_use, Conflict)
    assert "fk_orders_customer" in in_use.message
    assert in_use.errors[0]["type"] == "foreign_key_violation"  # type: ignore[index]

    orphan = shop.refused("POST", "orders", body={"customer_id": -1, "amount": "1"})
    assert isinstance(orphan, Conflict)
    assert "fk_orders_customer" in orphan.message

    negative = shop.refused("POST", "orders", body={"customer_id": customer["id"], "amount": -5})
    assert isinstance(negative, Conflict)
    assert "ck_orders_amount_positive" in negative.message
    assert negative.errors[0]["constraint"] == "ck_orders_amount_positive"  # type: ignore[index]

    patched = shop.refused("PATCH", "orders", str(order["id"]), body={"amount": "0"})
    assert "ck_orders_amount_positive" in patched.message

    assert shop.call("DELETE", "orders", str(order["id"])).status == 204
    assert shop.call("DELETE", "customer", customer["email"]).status == 204


def test_enum_columns(shop: Shop, tag: str) -> None:
    [customer] = shop.customers(tag, 1)
    body = {"customer_id": customer["id"], "amount": 5, "status": "paid"}
    order = shop.call("POST", "orders", body=body).body

    assert order["status"] == "paid"
    listed = shop.call(
        "GET", "orders", query={"customer_id": str(customer["id"]), "status": "like.pa*"}
    )
    assert [row["id"] for row in listed.body["data"]] == [order["id"]]
    error = shop.refused("POST", "orders", body={**body, "status": "lost"})
    if shop.backend == "sqlite":  # no enum type: a VARCHAR with a CHECK constraint
        assert isinstance(error, Conflict)
        assert "order_status" in error.message
    else:
        assert locs(error) == [["body", "status"]]
        assert "new, paid, shipped" in str(error.errors)


def test_text_comparisons_follow_the_collation(shop: Shop, tag: str, five: Any) -> None:
    """Case counts in `like` and `eq`, except under MySQL's default (`_ci`) collations."""
    case_blind = shop.backend == "mysql"

    assert _emails(shop.mine(tag, name="like.Ad*")) == (["0", "1"] if case_blind else ["0"])
    assert _emails(shop.mine(tag, name="ada")) == (["0", "1"] if case_blind else ["1"])


def test_hidden_columns_are_as_if_absent(shop: Shop, tag: str) -> None:
    [row] = shop.customers(tag, 1)

    assert "secret_note" not in row
    unknown = shop.refused("GET", "customer", query={"nope": "1"})
    hidden = shop.refused("GET", "customer", query={"secret_note": "1"})
    assert unknown.errors[0]["msg"] == hidden.errors[0]["msg"]  # type: ignore[index]
    assert locs(shop.refused("GET", "customer", query={"select": "secret_note"})) == [
        ["query", "select"]
    ]
    assert locs(shop.refused("GET", "customer", query={"order": "secret_note"})) == [
        ["query", "order"]
    ]
    patch = shop.refused("PATCH", "customer", row["email"], body={"secret_note": "x"})
    assert patch.errors[0]["type"] == "extra_forbidden"  # type: ignore[index]


def test_unknown_parameters_on_item_endpoints(shop: Shop, tag: str) -> None:
    [row] = shop.customers(tag, 1)

    assert locs(shop.refused("GET", "customer", row["email"], query={"age": "1"})) == [
        ["query", "age"]
    ]
    assert locs(shop.refused("DELETE", "customer", row["email"], query={"force": "1"})) == [
        ["query", "force"]
    ]
    body = {"email": f"{tag}-x@example.com", "name": "N"}
    assert locs(shop.refused("POST", "customer", query={"upsert": "1"}, body=body)) == [
        ["query", "upsert"]
    ]


def test_lists_filtered_alike_share_a_statement_and_each_gets_its_own_values(
    shop: Shop, tag: str, five: Any
) -> None:
    answers = {age: _emails(shop.mine(tag, age=f"lte.{age}")) for age in ("20", "40", "30", "20")}
    flags = [_emails(shop.mine(tag, active=flag)) for flag in ("is.true", "is.false")]

    assert answers == {"20": ["0"], "40": ["0", "1", "2"], "30": ["0", "1"]}
    assert flags == [["0", "2", "4"], ["1", "3"]]
