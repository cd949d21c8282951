"""`service.json` of kind `http`: a base URL, an auth header built from a secret, routes.

Every route is checked here, when the document is registered, so that a route which
could reach another host, climb above the base URL or use an undocumented parameter is
the registrant's 400 and never a caller's surprise.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from servicebay.core.secret_store import SECRET_NAME
from servicebay.services.http.template import RouteTemplate, TemplateError, compile_route
from servicebay.services.spec import ServiceSpec, SpecModel

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
ROUTE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")  # an RFC 9110 token
FORBIDDEN_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "content-type", "x-request-id"}
)
"""Headers the proxy sets itself: the auth header may not replace them."""
SECRET_SLOT = "{secret}"  # noqa: S105 - the placeholder, not a password
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
Action = Literal["read", "create", "update", "delete"]
ParamType = Literal["string", "integer", "number", "boolean", "date"]
DEFAULT_ACTIONS: dict[str, Action] = {
    "GET": "read",
    "POST": "create",
    "PUT": "update",
    "PATCH": "update",
    "DELETE": "delete",
}
"""A route's grant action unless it names one: the verbs of `core.grants.ACTIONS`."""


class AuthHeader(SpecModel):
    name: str = Field(default="Authorization", description="The header the upstream reads.")
    value: str = Field(
        default=f"Bearer {SECRET_SLOT}",
        max_length=500,
        description="The header's value; `{secret}` stands for the secret's value, once.",
    )

    @field_validator("name")
    @classmethod
    def _header_name(cls, name: str) -> str:
        if not HEADER_NAME.fullmatch(name):
            raise ValueError("a header name is letters, digits and -!#$%&'*+.^_`|~")
        if name.lower() in FORBIDDEN_HEADERS:
            raise ValueError(f"{name} is set by the gateway itself")
        return name

    @field_validator("value")
    @classmethod
    def _one_slot(cls, value: str) -> str:
        if value.count(SECRET_SLOT) != 1:
            raise ValueError("the value holds `{secret}` exactly once, e.g. `Bearer {secret}`")
        if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
            raise ValueError("a header value holds no control characters")
        return value


class RouteParam(SpecModel):
    type: ParamType = "string"
    required: bool = False
    description: str = Field(min_length=1, max_length=2000)


class RouteSpec(SpecModel):
    method: Method = "GET"
    path: str = Field(
        min_length=1,
        max_length=2000,
        description="Upstream path under base_url, starting with `/`; may carry a fixed "
        "query; `{param}` stands for a parameter's value.",
    )
    description: str = Field(min_length=1, max_length=2000)
    summary: str | None = Field(default=None, max_length=200)
    params: dict[str, RouteParam] = Field(default_factory=dict)
    body: Any = Field(
        default=None,
        description="The JSON body to send instead of the caller's; a string that is "
        'exactly `"{param}"` becomes the parameter\'s value.',
    )
    action: Action | None = Field(
        default=None, description="The grant action it needs; default by method."
    )

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, method: Any) -> Any:
        return method.upper() if isinstance(method, str) else method

    @field_validator("params")
    @classmethod
    def _param_names(cls, params: dict[str, RouteParam]) -> dict[str, RouteParam]:
        for name in params:
            if not IDENTIFIER.fullmatch(name):
                raise ValueError(f"parameter {name[:70]!r} is not a plain identifier")
        return params

    @model_validator(mode="after")
    def _template(self) -> RouteSpec:
        try:
            template = compile_route(self.path, self.body)
        except TemplateError as error:
            raise ValueError(str(error)) from None
        undeclared = sorted(template.placeholders - set(self.params))
        if undeclared:
            raise ValueError(
                f"placeholder(s) {', '.join(undeclared)} must be declared in `params` "
                "with a description"
            )
        optional = sorted(name for name in template.in_path if not self.params[name].required)
        if optional:
            raise ValueError(f"path placeholder(s) {', '.join(optional)} must be required")
        if self.body is not None and self.method in ("GET", "DELETE"):
            raise ValueError(f"a {self.method} route sends no body")
        return self

    def template(self) -> RouteTemplate:
        return compile_route(self.path, self.body)

    @property
    def grant_action(self) -> Action:
        return self.action or DEFAULT_ACTIONS[self.method]


class HttpServiceSpec(ServiceSpec):
    kind: Literal["http"]
    base_url: str = Field(
        max_length=2000, description="The upstream API's root, http:// or https://."
    )
    secret: str | None = Field(
        default=None, description="The secret whose value builds the auth header."
    )
    auth_header: AuthHeader | None = Field(
        default=None, description="How the secret is sent; default `Authorization: Bearer`."
    )
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    routes: dict[str, RouteSpec] = Field(min_length=1)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, base_url: str) -> str:
        # The messages never repeat the URL: one pasted with a password in it would leak.
        try:
            parts = urlsplit(base_url)
            _ = parts.port  # raises on a port that is not a number in range
        except ValueError:
            raise ValueError("base_url is not a URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url starts with http:// or https:// and names a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "base_url carries no credentials: store them as a secret and name it in `secret`"
            )
        if parts.query or parts.fragment or "?" in base_url or "#" in base_url:
            raise ValueError("base_url has no query or fragment: put them in a route's path")
        if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in base_url):
            raise ValueError("base_url holds no spaces or control characters")
        return base_url.rstrip("/")

    @field_validator("secret")
    @classmethod
    def _secret_is_a_name(cls, secret: str | None) -> str | None:
        if secret is not None and not SECRET_NAME.fullmatch(secret):
            raise ValueError(
                "`secret` names a secret (UPPER_CASE, e.g. INSTAGRAM_TOKEN) that holds the "
                "token; store the token with `bay secrets set`, never in this file"
            )
        return secret

    @field_validator("routes")
    @classmethod
    def _route_names(cls, routes: dict[str, RouteSpec]) -> dict[str, RouteSpec]:
        for name in routes:
            if not ROUTE_NAME.fullmatch(name):
                raise ValueError(
                    f"route {name[:70]!r} is not a name: letters, digits, '_' and '-', "
                    "starting with a letter or '_'"
                )
        return routes

    @field_validator("auth_header")
    @classmethod
    def _header_needs_secret(
        cls, header: AuthHeader | None, info: ValidationInfo
    ) -> AuthHeader | None:
        # A secret that failed its own check is not in `data`: that error says enough.
        if header is not None and "secret" in info.data and info.data["secret"] is None:
            raise ValueError("auth_header is built from a secret: name it in `secret`")
        return header

    @property
    def header(self) -> AuthHeader | None:
        """The auth header to send, when the service has a secret."""
        if self.secret is None:
            return None
        return self.auth_header or AuthHeader()
