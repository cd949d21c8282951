"""`template.json`: what a template makes and which values `bay new` asks for."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from servicebay.core import jsonc

MANIFEST_FILE = "template.json"
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
"""Template and deployment names: what fits in a URL segment and a sub-domain."""
PARAMETER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

Kind = Literal["cron", "webhook", "service", "server", "dashboard"]


class TemplateError(Exception):
    """A template cannot be listed, served or rendered: what is wrong, and how to fix it."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} ({self.fix})"


class Parameter(BaseModel):
    """One value the template needs beyond the deployment's name."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=200, description="The question `bay new` asks.")
    default: str | None = Field(
        default=None, max_length=1000, description="Offered at the prompt; used when not asked."
    )
    pattern: str | None = Field(
        default=None,
        max_length=500,
        description="A regular expression the whole answer must match; asked again if not.",
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"not a regular expression: {error}") from None
        return pattern

    @model_validator(mode="after")
    def _default_fits(self) -> Parameter:
        if self.default is not None and (problem := self.problem(self.default)):
            raise ValueError(f"the default does not fit: {problem}")
        return self

    def problem(self, value: str) -> str | None:
        """Why `value` is not an acceptable answer, or None when it is."""
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            return f"{value!r} does not match the pattern {self.pattern}"
        return None


class Manifest(BaseModel):
    """The contents of a `template.json`; unknown fields are errors, as in every config."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind = Field(description="The deployment the template makes.")
    description: str = Field(min_length=1, max_length=500)
    parameters: dict[str, Parameter] = Field(
        default_factory=dict, description="Asked in this order; each is a template variable."
    )

    @field_validator("parameters")
    @classmethod
    def _parameter_names(cls, parameters: dict[str, Parameter]) -> dict[str, Parameter]:
        for name in parameters:
            if name == "name":
                raise ValueError(
                    "'name' is the NAME argument of `bay new` and always given: "
                    "call the parameter something else"
                )
            if not PARAMETER_NAME.fullmatch(name):
                raise ValueError(
                    f"parameter {name!r}: a template variable is lowercase letters, digits "
                    "and '_', starting with a letter"
                )
        return parameters


def parse_manifest(text: str, *, template: str) -> Manifest:
    """`template.json`'s text (comments allowed) as a Manifest, or a TemplateError that names
    the template, the file and every field that is wrong."""
    source = f"{template}/{MANIFEST_FILE}"
    fix = f"fix {MANIFEST_FILE} in the template folder {template!r}"
    try:
        document = jsonc.loads(text, source=source)
    except jsonc.JsoncError as error:
        raise TemplateError(str(error), fix) from None
    try:
        return Manifest.model_validate(document)
    except ValidationError as error:
        fields = [
            f"{'.'.join(str(part) for part in problem['loc']) or 'the document'}: "
            f"{problem['msg'].removeprefix('Value error, ')}"
            for problem in error.errors(include_input=False)
        ]
        raise TemplateError(f"{source}: " + "; ".join(fields), fix) from None
