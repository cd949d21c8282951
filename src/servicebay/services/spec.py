"""`service.json`: what every kind of service document shares."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from servicebay.core.errors import InvalidInput

SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
RESERVED_NAMES = frozenset(
    {"api", "hooks", "apps", "docs", "openapi.json", "ui", "healthz", "readyz", "metrics"}
)


class SpecModel(BaseModel):
    """Unknown keys are errors (a typo must not silently change behaviour); the article's
    spaced spellings ("build command") are accepted beside their snake_case twins."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ServiceSpec(SpecModel):
    name: str = Field(description="Mounted at `/{name}/...`.")
    kind: str
    description: str = Field(min_length=1, max_length=2000)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not SERVICE_NAME.match(name):
            raise ValueError(
                "a service name is lowercase letters, digits, '_' or '-', starting with a letter"
            )
        if name in RESERVED_NAMES:
            raise ValueError(f"{name!r} is reserved for the platform's own routes")
        return name


def validation_errors(error: ValidationError, *, at: str = "body") -> InvalidInput:
    """A pydantic error as our 400, every field listed, without echoing the input."""
    errors = [
        {"loc": [at, *problem["loc"]], "msg": problem["msg"], "type": problem["type"]}
        for problem in error.errors()
    ]
    where = ", ".join(".".join(str(part) for part in item["loc"][1:]) or at for item in errors)
    return InvalidInput(f"the service document is invalid at: {where}", errors=errors)
