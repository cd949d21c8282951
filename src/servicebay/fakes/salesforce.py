"""Salesforce's REST API for Contact records: SOQL queries and sObject create, read,
update and delete, as an org answers them.

`GET /services/data/vXX.X/query?q=SELECT ... FROM Contact WHERE Field = '...' [LIMIT n]`
gives `{"totalSize", "done", "records"}`; `POST .../sobjects/Contact` 201 `{"id",
"success": true, "errors": []}`; `GET|PATCH|DELETE .../sobjects/Contact/{id}` the record,
204, 204. Errors are arrays `[{"message", "errorCode"[, "fields"]}]`: 401
INVALID_SESSION_ID, 404 NOT_FOUND, 400 MALFORMED_QUERY, INVALID_FIELD,
REQUIRED_FIELD_MISSING, INVALID_EMAIL_ADDRESS, STRING_TOO_LONG. The fake parses only that
one shape of SOQL, string literals with their escapes, so a query built by pasting text
in fails here as it would there.
"""

from __future__ import annotations

import itertools
import re
import threading
from datetime import UTC, datetime
from typing import Any

from servicebay.fakes.base import Answer, FakeServer, Received

DEMO_TOKEN = "00DServiceBayDemo!SalesforceSessionToken000"  # noqa: S105 (the fake's own, printed for the demo)
FIELDS = {
    "Id": None,
    "FirstName": 40,
    "LastName": 80,
    "Email": 80,
    "MailingStreet": 255,
    "MailingCity": 40,
    "Phone": 40,
    "CreatedDate": None,
    "LastModifiedDate": None,
}
"""Contact's fields in the fake, with the length limit of those a client may write."""
LABELS = {
    "FirstName": "First Name",
    "LastName": "Last Name",
    "Email": "Email",
    "MailingStreet": "Mailing Street",
    "MailingCity": "Mailing City",
    "Phone": "Phone",
}
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_QUERY = re.compile(
    r"SELECT\s+(?P<fields>\w+(?:\s*,\s*\w+)*)\s+FROM\s+Contact\s+WHERE\s+(?P<field>\w+)\s*=\s*"
    r"'(?P<literal>(?:[^'\\]|\\.)*)'(?:\s+LIMIT\s+(?P<limit>[0-9]+))?\s*",
    re.IGNORECASE | re.DOTALL,
)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\"}
_NOT_FOUND = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]


class FakeSalesforce(FakeServer):
    """An org whose Contacts the session `token` may read and write."""

    name = "salesforce"
    not_found = _NOT_FOUND

    def __init__(self, *, token: str = DEMO_TOKEN, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.token = token
        self.contacts: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._state = threading.Lock()
        data = r"/services/data/(?P<version>v[0-9]+\.[0-9]+)"
        record = data + r"/sobjects/Contact/(?P<id>[A-Za-z0-9]{15,18})"
        self.route("GET", data + "/query", self._query)
        self.route("POST", data + "/sobjects/Contact", self._create)
        self.route("GET", record, self._read)
        self.route("PATCH", record, self._update)
        self.route("DELETE", record, self._delete)

    @property
    def base_url(self) -> str:
        """The org's instance URL (https://yourdomain.my.salesforce.com)."""
        return self.url

    def describe(self) -> str:
        return (
            f"Salesforce REST API fake: SALESFORCE_INSTANCE_URL={self.base_url} "
            f"SALESFORCE_API_KEY={self.token}"
        )

    def add_contact(self, **fields: Any) -> str:
        """Put a Contact in the org as if made elsewhere; its id."""
        with self._state:
            return self._insert(fields)

    def answer(self, received: Received) -> Answer:
        authorization = received.headers.get("authorization", "")
        if authorization not in (f"Bearer {self.token}", f"OAuth {self.token}"):
            with self._lock:
                self.received.append(received)
            error = {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
            return Answer(401, [error])
        return super().answer(received)

    def _insert(self, fields: dict[str, Any]) -> str:
        identifier = f"003{next(self._ids):015d}"
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
        self.contacts[identifier] = {
            **dict.fromkeys(LABELS),
            **fields,
            "Id": identifier,
            "CreatedDate": now,
            "LastModifiedDate": now,
        }
        return identifier

    def _record(self, version: str, contact: dict[str, Any], fields: list[str]) -> dict[str, Any]:
        url = f"/services/data/{version}/sobjects/Contact/{contact['Id']}"
        return {
            "attributes": {"type": "Contact", "url": url},
            **{field: contact.get(field) for field in fields},
        }

    def _query(self, received: Received, version: str) -> Answer:
        soql = received.param("q") or ""
        found = _QUERY.fullmatch(soql.strip())
        if found is None:
            return _error(400, "MALFORMED_QUERY", f"unexpected token in query: {soql[:80]}")
        fields = [field.strip() for field in found["fields"].split(",")]
        for field in [*fields, found["field"]]:
            if field not in FIELDS:
                return _error(400, "INVALID_FIELD", f"No such column '{field}' on entity 'Contact'")
        try:
            literal = _unescape(found["literal"])
        except ValueError as error:
            return _error(400, "MALFORMED_QUERY", str(error))
        with self._state:
            matches = [
                self._record(version, contact, fields)
                for contact in self.contacts.values()
                if str(contact.get(found["field"]) or "").lower() == literal.lower()
            ]
        if found["limit"] is not None:
            matches = matches[: int(found["limit"])]
        return Answer(200, {"totalSize": len(matches), "done": True, "records": matches})

    def _create(self, received: Received, version: str) -> Answer:
        body = received.json
        problems = _invalid(body, creating=True)
        if problems is not None:
            return problems
        with self._state:
            identifier = self._insert(body)
        return Answer(201, {"id": identifier, "success": True, "errors": []})

    def _read(self, received: Received, version: str, id: str) -> Answer:
        with self._state:
            contact = self.contacts.get(id)
            if contact is None:
                return Answer(404, _NOT_FOUND)
            wanted = received.param("fields")
            fields = wanted.split(",") if wanted else list(FIELDS)
            return Answer(200, self._record(version, contact, fields))

    def _update(self, received: Received, version: str, id: str) -> Answer:
        body = received.json
        problems = _invalid(body, creating=False)
        if problems is not None:
            return problems
        with self._state:
            if id not in self.contacts:
                return Answer(404, _NOT_FOUND)
            self.contacts[id].update(body)
            self.contacts[id]["LastModifiedDate"] = datetime.now(UTC).strftime(
                "%Y-%m-%dT%H:%M:%S.000+0000"
            )
        return Answer(204)

    def _delete(self, received: Received, version: str, id: str) -> Answer:
        with self._state:
            if self.contacts.pop(id, None) is None:
                return Answer(404, _NOT_FOUND)
        return Answer(204)


def _invalid(body: Any, *, creating: bool) -> Answer | None:
    """Salesforce's answer to a Contact it would not save, or None."""
    if not isinstance(body, dict):
        return _error(400, "JSON_PARSER_ERROR", "The request body is not a JSON object")
    for field in body:
        if FIELDS.get(field) is None:
            return _error(
                400, "INVALID_FIELD", f"No such column '{field}' on sobject of type Contact"
            )
    if creating and not body.get("LastName"):
        return _error(
            400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]", ["LastName"]
        )
    for field, value in body.items():
        limit = FIELDS[field]
        if value is not None and not isinstance(value, str):
            return _error(
                400,
                "INVALID_TYPE_ON_FIELD_IN_RECORD",
                f"{LABELS[field]}: value not of required type: {value}",
                [field],
            )
        if value and limit is not None and len(value) > limit:
            return _error(
                400,
                "STRING_TOO_LONG",
                f"{LABELS[field]}: data value too large: {value[:20]}... (max length={limit})",
                [field],
            )
    email = body.get("Email")
    if email and not _EMAIL.fullmatch(email):
        return _error(
            400, "INVALID_EMAIL_ADDRESS", f"Email: invalid email address: {email}", ["Email"]
        )
    return None


def _unescape(literal: str) -> str:
    """A SOQL string literal's text; an unknown escape is malformed, as in SOQL."""
    out: list[str] = []
    characters = iter(literal)
    for character in characters:
        if character != "\\":
            out.append(character)
            continue
        escaped = next(characters, "")
        if escaped not in _ESCAPES:
            raise ValueError(f"Invalid string literal '{literal}'. Illegal character sequence")
        out.append(_ESCAPES[escaped])
    return "".join(out)


def _error(status: int, code: str, message: str, fields: list[str] | None = None) -> Answer:
    error: dict[str, Any] = {"message": message, "errorCode": code}
    if fields is not None:
        error["fields"] = fields
    return Answer(status, [error])
