"""The Salesforce connector keeps customers as Contacts, found by e-mail with escaped SOQL,
validated as the article's `create_customer` validates them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from servicebay.fakes.base import Answer
from servicebay.fakes.salesforce import FakeSalesforce
from tests.connectors.conftest import (
    Connector,
    RunConnector,
    assert_documented,
    assert_identity_required,
    assert_problem,
)
from tests.gateway.code_support import JULIUS

TOKEN = "00D5e000000TEST!AQ0AQConnectorTestSessionToken"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeSalesforce]:
    with FakeSalesforce(token=TOKEN) as fake:
        yield fake


@pytest.fixture(scope="module")
def salesforce(fake: FakeSalesforce, run_connector: RunConnector) -> Connector:
    return run_connector(
        "salesforce",
        {
            "SALESFORCE_API_KEY": TOKEN,
            "SALESFORCE_INSTANCE_URL": fake.base_url,
            "SALESFORCE_API_VERSION": "v61.0",
        },
    )


@pytest.fixture(autouse=True)
def fresh(fake: FakeSalesforce) -> None:
    fake.clear()
    fake.contacts.clear()


def test_a_customer_is_created_as_a_contact_then_read_updated_and_deleted(
    salesforce: Connector, fake: FakeSalesforce
) -> None:
    created = salesforce.call("POST", "/create_customer", params=JULIUS)
    assert created.status_code == 201, created.text
    customer = created.json()
    assert customer == {"id": customer["id"], **JULIUS}
    (posted,) = fake.requests_to("/services/data/v61.0/sobjects/Contact")
    assert posted.method == "POST"
    assert posted.headers["authorization"] == f"Bearer {TOKEN}"
    assert posted.headers["content-type"].startswith("application/json")
    assert posted.json == {
        "Email": "julius@nyknicks.com",
        "FirstName": "Julius",
        "LastName": "Randle",
        "MailingStreet": "4 Pennsylvania Plaza",
    }

    found = salesforce.call("GET", "/get_customer", params={"email": "julius@nyknicks.com"})
    assert found.status_code == 200, found.text
    assert found.json() == customer
    query = fake.requests_to("/services/data/v61.0/query")[-1]
    assert query.param("q") == (
        "SELECT Id, Email, FirstName, LastName, MailingStreet FROM Contact "
        "WHERE Email = 'julius@nyknicks.com' LIMIT 2"
    )

    updated = salesforce.call(
        "PATCH", "/update_customer", params={"email": "julius@nyknicks.com", "address": "MSG"}
    )
    assert updated.status_code == 200, updated.text
    assert updated.json() == {**customer, "address": "MSG"}
    record = f"/services/data/v61.0/sobjects/Contact/{customer['id']}"
    (patched,) = fake.requests_to(record)
    assert (patched.method, patched.json) == ("PATCH", {"MailingStreet": "MSG"})
    assert fake.contacts[customer["id"]]["MailingStreet"] == "MSG"

    deleted = salesforce.call("DELETE", "/delete_customer", params={"email": "julius@nyknicks.com"})
    assert deleted.status_code == 204, deleted.text
    assert [sent.method for sent in fake.requests_to(record)] == ["PATCH", "DELETE"]
    assert fake.contacts == {}
    gone = salesforce.call("GET", "/get_customer", params={"email": "julius@nyknicks.com"})
    assert_problem(gone, 404, "julius@nyknicks.com")


def test_every_invalid_field_is_listed_before_salesforce_is_called(
    salesforce: Connector, fake: FakeSalesforce
) -> None:
    answer = salesforce.call(
        "POST",
        "/create_customer",
        params={"email": "julius at knicks", "first_name": " ", "last_name": "R" * 81},
    )
    problem = assert_problem(answer, 400, "email", "first_name", "last_name")
    assert [error["loc"] for error in problem["errors"]] == [
        ["query", "email"],
        ["query", "first_name"],
        ["query", "last_name"],
    ]
    assert problem["errors"][2]["msg"] == "is 81 characters; Salesforce keeps at most 80"
    missing = salesforce.call("POST", "/create_customer", params={"email": "a@b.co"})
    assert missing.status_code == 400
    assert {tuple(error["loc"]) for error in missing.json()["errors"]} == {
        ("query", "first_name"),
        ("query", "last_name"),
    }
    nothing = salesforce.call("PATCH", "/update_customer", params={"email": "a@b.co"})
    assert_problem(nothing, 400, "nothing to change")
    both = salesforce.call(
        "PATCH", "/update_customer", params={"email": "not-mail", "new_email": "nor-this"}
    )
    problem = assert_problem(both, 400, "query.email", "query.new_email")
    assert [error["loc"] for error in problem["errors"]] == [
        ["query", "email"],
        ["query", "new_email"],
    ]
    bad_and_nothing = salesforce.call("PATCH", "/update_customer", params={"email": "x"})
    assert_problem(bad_and_nothing, 400, "query.email", "nothing to change")
    assert fake.received == []


def test_a_second_customer_with_the_same_email_is_a_409(
    salesforce: Connector, fake: FakeSalesforce
) -> None:
    fake.add_contact(Email="julius@nyknicks.com", LastName="Randle")
    answer = salesforce.call("POST", "/create_customer", params=JULIUS)
    assert_problem(answer, 409, "julius@nyknicks.com")
    assert len(fake.contacts) == 1


def test_moving_a_customer_to_anothers_email_is_a_409(
    salesforce: Connector, fake: FakeSalesforce
) -> None:
    fake.add_contact(Email="julius@nyknicks.com", LastName="Randle")
    fake.add_contact(Email="jalen@nyknicks.com", LastName="Brunson")
    answer = salesforce.call(
        "PATCH",
        "/update_customer",
        params={"email": "julius@nyknicks.com", "new_email": "JALEN@nyknicks.com"},
    )
    assert_problem(answer, 409, "JALEN@nyknicks.com")
    assert [sent.method for sent in fake.received] == ["GET", "GET"]


def test_a_query_answer_of_an_unknown_shape_is_a_502(
    salesforce: Connector, fake: FakeSalesforce
) -> None:
    fake.interject("GET", r".*/query", Answer(200, {"totalSize": 1, "records": [{"Name": "x"}]}))
    answer = salesforce.call("GET", "/get_customer", params={"email": "julius@nyknicks.com"})
    assert_problem(answer, 502, "Salesforce answered the query without a list of records")


def test_a_quote_in_an_email_stays_in_the_soql_literal(
    salesforce: Connector, fake: FakeSalesforce
) -> None:
    """`x'OR'1'='1@...` is a valid e-mail address, and an injection if pasted into SOQL:
    escaped, it finds nobody (the fake parses SOQL literals, so a pasted one is malformed)."""
    fake.add_contact(Email="julius@nyknicks.com", LastName="Randle")
    sneaky = "x'OR'1'='1@nyknicks.com"
    answer = salesforce.call("GET", "/get_customer", params={"email": sneaky})
    assert_problem(answer, 404, "no customer")
    (query,) = fake.requests_to("/services/data/v61.0/query")
    assert query.param("q").endswith("WHERE Email = 'x\\'OR\\'1\\'=\\'1@nyknicks.com' LIMIT 2")
    deleted = salesforce.call("DELETE", "/delete_customer", params={"email": sneaky})
    assert deleted.status_code == 404
    assert len(fake.contacts) == 1


def test_salesforces_own_refusal_is_a_400_naming_its_error_code(
    salesforce: Connector, fake: FakeSalesforce
) -> None:
    """The org may refuse what the connector accepts (a validation rule of its own)."""
    refusal = [
        {
            "message": "Customers need a street number",
            "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "fields": [],
        }
    ]
    fake.interject("POST", r".*/sobjects/Contact", Answer(400, refusal))
    answer = salesforce.call("POST", "/create_customer", params=JULIUS)
    assert_problem(
        answer,
        400,
        "Salesforce refused to create the customer",
        "FIELD_CUSTOM_VALIDATION_EXCEPTION: Customers need a street number",
    )
    assert fake.contacts == {}


def test_a_contact_deleted_meanwhile_is_a_404_from_salesforces_not_found(
    salesforce: Connector, fake: FakeSalesforce
) -> None:
    identifier = fake.add_contact(Email="julius@nyknicks.com", LastName="Randle")
    fake.interject(
        "DELETE",
        f".*/sobjects/Contact/{identifier}",
        Answer(
            404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
        ),
    )
    answer = salesforce.call("DELETE", "/delete_customer", params={"email": "julius@nyknicks.com"})
    assert_problem(answer, 404, "Salesforce no longer has that customer", "NOT_FOUND")


def test_an_expired_session_is_a_502_for_the_admin_that_never_shows_the_token(
    fake: FakeSalesforce, run_connector: RunConnector
) -> None:
    expired = run_connector(
        "salesforce",
        {"SALESFORCE_API_KEY": "00Dexpired!token", "SALESFORCE_INSTANCE_URL": fake.base_url},
    )
    answer = expired.call("GET", "/get_customer", params={"email": "julius@nyknicks.com"})
    assert_problem(
        answer, 502, "INVALID_SESSION_ID: Session expired or invalid", "SALESFORCE_API_KEY"
    )
    assert "00Dexpired!token" not in answer.text
    (sent,) = fake.requests_to("/services/data/v61.0/query")
    assert sent.headers["authorization"] == "Bearer 00Dexpired!token"


def test_calls_without_the_gateways_identity_are_401s(
    salesforce: Connector, fake: FakeSalesforce
) -> None:
    for method, path in (
        ("GET", "/get_customer"),
        ("POST", "/create_customer"),
        ("PATCH", "/update_customer"),
        ("DELETE", "/delete_customer"),
    ):
        assert_identity_required(salesforce, method, f"{path}?email=a@b.co")
    assert fake.received == []


def test_the_endpoints_are_documented_and_the_token_is_in_no_log_line(
    salesforce: Connector,
) -> None:
    assert_documented(
        salesforce,
        {
            ("GET", "/get_customer"),
            ("POST", "/create_customer"),
            ("PATCH", "/update_customer"),
            ("DELETE", "/delete_customer"),
        },
    )
    salesforce.call("GET", "/get_customer", params={"email": "nobody@example.com"})
    assert TOKEN not in salesforce.log_text()


def test_the_access_log_names_the_path_but_not_the_customers_email(
    salesforce: Connector,
) -> None:
    salesforce.call("GET", "/get_customer", params={"email": "private.person@example.com"})
    log = salesforce.log_text()
    assert '"GET /get_customer?... HTTP/1.1" 404' in log
    assert "private.person" not in log
