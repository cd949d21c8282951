"""GitHub's REST API for a repository's pull requests, as api.github.com answers it.

`GET /repos/{owner}/{repo}/pulls?state=open&per_page=&page=` gives a JSON array of pull
requests, paginated with a `Link` header (`<...&page=2>; rel="next", <...>; rel="last"`).
The token comes as `Authorization: Bearer` (or `token`); a wrong one is 401 `{"message":
"Bad credentials", ...}`, and a repository the token cannot see is 404 `{"message": "Not
Found", ...}` (the fake's repositories are private, so no token sees none of them).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from servicebay.fakes.base import Answer, FakeServer, Received

DEMO_TOKEN = "github_pat_ServiceBayDemoToken0000000000"  # noqa: S105 (the fake's own, printed for the demo)
DOCS = "https://docs.github.com/rest/pulls/pulls#list-pull-requests"
MAX_PER_PAGE = 100


class FakeGitHub(FakeServer):
    """Repositories (`owner/name`) with pull requests, readable with `token`."""

    name = "github"
    not_found = {"message": "Not Found", "documentation_url": DOCS, "status": "404"}

    def __init__(self, *, token: str = DEMO_TOKEN, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.token = token
        self.pulls: dict[str, list[dict[str, Any]]] = {}
        self._state = threading.Lock()
        self.route("GET", r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/pulls", self._list)
        for title in ("Weekly report: add the Instagram numbers", "Fix the churn query"):
            self.add_pull_request("servicebay/analytics", title)

    @property
    def base_url(self) -> str:
        """What a client uses in place of https://api.github.com."""
        return self.url

    def describe(self) -> str:
        return f"GitHub REST API fake: GITHUB_BASE_URL={self.base_url} GITHUB_TOKEN={self.token}"

    def add_pull_request(
        self,
        repository: str,
        title: str,
        *,
        user: str = "octocat",
        state: str = "open",
        draft: bool = False,
    ) -> int:
        """Open (or record as `closed`) a pull request in `repository`; its number."""
        with self._state:
            pulls = self.pulls.setdefault(repository, [])
            number = len(pulls) + 1
            created = datetime(2026, 11, 1, 9, tzinfo=UTC) + timedelta(hours=number)
            stamp = created.strftime("%Y-%m-%dT%H:%M:%SZ")
            pulls.append(
                {
                    "url": f"https://api.github.com/repos/{repository}/pulls/{number}",
                    "id": 1_000_000 + number,
                    "number": number,
                    "state": state,
                    "title": title,
                    "user": {"login": user, "id": 583231, "type": "User"},
                    "body": None,
                    "draft": draft,
                    "created_at": stamp,
                    "updated_at": stamp,
                    "html_url": f"https://github.com/{repository}/pull/{number}",
                    "head": {"ref": f"feature-{number}", "sha": f"{number:040x}"},
                    "base": {"ref": "main"},
                    "labels": [],
                }
            )
            return number

    def _list(self, received: Received, owner: str, repo: str) -> Answer:
        authorization = received.headers.get("authorization", "")
        token = authorization.partition(" ")[2]
        if authorization and token != self.token:
            return Answer(
                401,
                {
                    "message": "Bad credentials",
                    "documentation_url": "https://docs.github.com/rest",
                    "status": "401",
                },
            )
        repository = f"{owner}/{repo}"
        with self._state:
            pulls = list(self.pulls.get(repository, [])) if authorization else None
        if pulls is None or repository not in self.pulls:
            return Answer(404, self.not_found)
        state = received.param("state") or "open"
        if state not in ("open", "closed", "all"):
            return Answer(
                422,
                {
                    "message": "Validation Failed",
                    "errors": [{"resource": "Issue", "field": "state", "code": "invalid"}],
                    "documentation_url": DOCS,
                    "status": "422",
                },
            )
        try:
            per_page = min(int(received.param("per_page") or 30), MAX_PER_PAGE)
            page = max(int(received.param("page") or 1), 1)
        except ValueError:
            per_page, page = 30, 1
        chosen = [pull for pull in pulls if state in ("all", pull["state"])]
        chosen.sort(key=lambda pull: pull["created_at"], reverse=True)
        last = max((len(chosen) + per_page - 1) // per_page, 1)
        headers = {}
        links = []
        for relation, number in (
            ("prev", page - 1),
            ("next", page + 1),
            ("first", 1),
            ("last", last),
        ):
            if 1 <= number <= last and number != page:
                query = urlencode({"state": state, "per_page": per_page, "page": number})
                links.append(f'<{self.url}/repos/{repository}/pulls?{query}>; rel="{relation}"')
        if links:
            headers["Link"] = ", ".join(links)
        start = (page - 1) * per_page
        return Answer(200, chosen[start : start + per_page], headers)
