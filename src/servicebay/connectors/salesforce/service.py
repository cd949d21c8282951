"""Salesforce: customers (Contact records, keyed by e-mail) over the REST API, with the
article's validation of a customer before anything is sent.

Settings: `SALESFORCE_API_KEY` (secret: an OAuth access token of the integration user),
`SALESFORCE_INSTANCE_URL` (the org's https://yourdomain.my.salesforce.com, stored as a
secret with the token), `SALESFORCE_API_VERSION` (default v61.0).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from servicebay.sdk import HttpError, Service
from servicebay.sdk.service import field_error, invalid
from servicebay.sdk.upstream import Reply, Upstream, setting

app = Service(
    "salesforce",
    description="Customers in Salesforce (Contacts, found by e-mail): get, create, update, delete.",
    log_queries=False,  # customers' e-mails, names and addresses are query parameters
)

FIELDS = {
    "email": "Email",
    "first_name": "FirstName",
    "last_name": "LastName",
    "address": "MailingStreet",
}
"""A customer's fields, and the Contact field each is stored in."""
LIMITS = {"Email": 80, "FirstName": 40, "LastName": 80, "MailingStreet": 255}
"""Salesforce's length limits for those Contact fields."""
EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
SOQL_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


@cache
def salesforce() -> Upstream:
    instance = setting("SALESFORCE_INSTANCE_URL").rstrip("/")
    version = setting("SALESFORCE_API_VERSION", "v61.0")
    return Upstream(
        "Salesforce",
        f"{instance}/services/data/{version}",
        bearer=setting("SALESFORCE_API_KEY"),
    )


@app.get("/get_customer")
def get_customer(email: str) -> dict[str, Any]:
    """The customer with this e-mail: `id`, `email`, `first_name`, `last_name`, `address`.

    Answers 404 when Salesforce has no Contact with that e-mail.
    """
    return _customer(_find(_valid_email(email)))


@app.post("/create_customer", status=201)
def create_customer(
    email: str, first_name: str, last_name: str, address: str | None = None
) -> dict[str, Any]:
    """Create a customer, as the article's `create_customer`: e-mail, first and last name
    required, the address optional.

    Each field is validated first (an e-mail address, within Salesforce's lengths), and every
    problem is listed in the 400. An e-mail that another customer has already is a 409.
    """
    fields = _validated(
        {"email": email, "first_name": first_name, "last_name": last_name, "address": address}
    )
    if _matches(fields["Email"]):
        raise HttpError(409, f"a customer with the e-mail {email!r} exists already")
    upstream = salesforce()
    reply = upstream.request("POST", "/sobjects/Contact", json=fields)
    created = _ok(reply, 201, "create the customer")
    return {"id": created.get("id"), **_plain(fields)}


@app.patch("/update_customer")
def update_customer(
    email: str,
    new_email: str | None = None,
    first_name: str | None = None,
    last_name: str | None = None,
    address: str | None = None,
) -> dict[str, Any]:
    """Change the customer with this e-mail: any of `new_email`, `first_name`, `last_name`,
    `address` (validated as on create). Answers the customer as it is now.
    """
    errors: list[dict[str, Any]] = []
    current = _checked({"email": email}, errors, partial=True).get("Email", "")
    given = {
        "new_email": new_email,
        "first_name": first_name,
        "last_name": last_name,
        "address": address,
    }
    changes = _checked(given, errors, partial=True)
    if all(value is None for value in given.values()):
        message = "nothing to change: give new_email, first_name, last_name or address"
        errors.append(field_error(None, message, "missing"))
    if errors:
        raise invalid(errors)
    record = _find(current)
    moving = changes.get("Email")
    if moving and moving.lower() != current.lower() and _matches(moving):
        raise HttpError(409, f"a customer with the e-mail {new_email!r} exists already")
    reply = salesforce().request("PATCH", f"/sobjects/Contact/{record['Id']}", json=changes)
    _ok(reply, 204, "update the customer")
    return _customer({**record, **changes})


@app.delete("/delete_customer")
def delete_customer(email: str) -> None:
    """Delete the customer with this e-mail; 404 when there is none."""
    record = _find(_valid_email(email))
    _ok(
        salesforce().request("DELETE", f"/sobjects/Contact/{record['Id']}"),
        204,
        "delete the customer",
    )


def soql_literal(text: str) -> str:
    """`text` as a SOQL string literal. The REST API takes no bound parameters, so every
    value is escaped: a quote in an e-mail stays part of the value."""
    return "'" + "".join(SOQL_ESCAPES.get(character, character) for character in text) + "'"


def _matches(email: str) -> list[dict[str, Any]]:
    columns = ", ".join(["Id", *FIELDS.values()])
    # S608: the columns are constants and the value an escaped literal
    soql = f"SELECT {columns} FROM Contact WHERE Email = {soql_literal(email)} LIMIT 2"  # noqa: S608
    answer = _ok(salesforce().request("GET", "/query", query={"q": soql}), 200, "query")
    records = answer.get("records")
    if not isinstance(records, list) or not all(
        isinstance(record, dict) and isinstance(record.get("Id"), str) for record in records
    ):
        raise salesforce().error("answered the query without a list of records with ids")
    return records


def _find(email: str) -> dict[str, Any]:
    records = _matches(email)
    if not records:
        raise HttpError(404, f"Salesforce has no customer with the e-mail {email!r}")
    if len(records) > 1:
        raise HttpError(
            409, f"several Salesforce contacts have the e-mail {email!r}; merge them first"
        )
    return records[0]


def _customer(record: dict[str, Any]) -> dict[str, Any]:
    return {"id": record.get("Id"), **_plain(record)}


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    return {name: record.get(field) for name, field in FIELDS.items()}


def _valid_email(email: str) -> str:
    _validated({"email": email}, partial=True)
    return email.strip()


def _validated(values: dict[str, str | None], *, partial: bool = False) -> dict[str, str]:
    """The article's `user_object_validation`: the Contact fields to send, or a 400 listing
    every parameter that is wrong. Absent ones are skipped when `partial` (an update)."""
    errors: list[dict[str, Any]] = []
    fields = _checked(values, errors, partial=partial)
    if errors:
        raise invalid(errors)
    return fields


def _checked(
    values: dict[str, str | None], errors: list[dict[str, Any]], *, partial: bool
) -> dict[str, str]:
    """The Contact fields to send; what is wrong with each parameter added to `errors`."""
    fields: dict[str, str] = {}
    for name, value in values.items():
        field = FIELDS[name.removeprefix("new_")]
        if value is None and (partial or field == "MailingStreet"):
            continue
        text = (value or "").strip()
        if not text:
            errors.append(field_error(name, "is empty", "missing"))
        elif len(text) > LIMITS[field]:
            message = f"is {len(text)} characters; Salesforce keeps at most {LIMITS[field]}"
            errors.append(field_error(name, message, "too_long"))
        elif field == "Email" and not EMAIL.fullmatch(text):
            message = f"{text!r} is not an e-mail address"
            errors.append(field_error(name, message, "email"))
        else:
            fields[field] = text
    return fields


def _ok(reply: Reply, expected: int, doing: str) -> dict[str, Any]:
    """The answer when Salesforce answered `expected`; its error array as a problem if not."""
    answer = reply.json()
    if reply.status == expected:
        return answer if isinstance(answer, dict) else {}
    errors = answer if isinstance(answer, list) else []
    named = (
        "; ".join(
            f"{error.get('errorCode')}: {error.get('message')}"
            for error in errors
            if isinstance(error, dict)
        )
        or f"status {reply.status}"
    )
    upstream = salesforce()
    if reply.status == 401:
        raise upstream.error(
            f"refused the connector's session ({named}): an admin should renew SALESFORCE_API_KEY"
        )
    if reply.status == 404:
        raise upstream.error(f"no longer has that customer ({named})", status=404)
    if reply.status == 400 and doing != "query":  # the org's own rules refused the values
        raise upstream.error(f"refused to {doing}: {named}", status=400)
    raise upstream.error(f"could not {doing}: {named}")


if __name__ == "__main__":
    salesforce()  # a missing setting stops the start, with its name, not the first call
    app.run()
