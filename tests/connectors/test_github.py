"""The GitHub connector lists a repository's open pull requests, following every page."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from servicebay.fakes.base import Answer, FakeServer, Received
from servicebay.fakes.github import FakeGitHub
from tests.connectors.conftest import (
    Connector,
    RunConnector,
    assert_documented,
    assert_identity_required,
    assert_problem,
)

TOKEN = "github_pat_11ConnectorTestToken0123456789"
BIG = "knicks/analytics"
"""A repository with 230 open pull requests (three pages of 100) and some closed ones."""


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGitHub]:
    fake = FakeGitHub(token=TOKEN)
    for number in range(1, 241):
        state = "closed" if number % 24 == 0 else "open"
        fake.add_pull_request(
            BIG, f"Change {number}", user=f"dev{number % 3}", state=state, draft=number == 5
        )
    fake.add_pull_request("knicks/quiet", "Only one", state="closed")
    with fake:
        yield fake


@pytest.fixture(scope="module")
def github(fake: FakeGitHub, run_connector: RunConnector) -> Connector:
    return run_connector("github", {"GITHUB_TOKEN": TOKEN, "GITHUB_BASE_URL": fake.base_url})


@pytest.fixture(autouse=True)
def fresh(fake: FakeGitHub) -> None:
    fake.clear()


def test_every_page_of_open_pull_requests_is_read_with_githubs_headers(
    github: Connector, fake: FakeGitHub
) -> None:
    answer = github.call(
        "GET", "/open_pull_requests", params={"owner": "knicks", "repo": "analytics"}
    )
    assert answer.status_code == 200, answer.text
    listed = answer.json()
    assert listed["repository"] == BIG
    assert listed["count"] == 230
    assert listed["truncated"] is False
    numbers = [pull["number"] for pull in listed["pull_requests"]]
    assert numbers == [number for number in range(240, 0, -1) if number % 24]
    assert listed["pull_requests"][-5] == {
        "number": 5,
        "title": "Change 5",
        "author": "dev2",
        "draft": True,
        "created_at": "2026-11-01T14:00:00Z",
        "updated_at": "2026-11-01T14:00:00Z",
        "url": "https://github.com/knicks/analytics/pull/5",
        "head": "feature-5",
        "base": "main",
    }
    pages = fake.requests_to("/repos/knicks/analytics/pulls")
    assert [dict(page.query) for page in pages] == [
        {"state": "open", "per_page": "100"},
        {"state": "open", "per_page": "100", "page": "2"},
        {"state": "open", "per_page": "100", "page": "3"},
    ]
    for page in pages:
        assert page.headers["authorization"] == f"Bearer {TOKEN}"
        assert page.headers["accept"] == "application/vnd.github+json"
        assert page.headers["x-github-api-version"] == "2022-11-28"


def test_a_limit_stops_reading_pages_and_says_truncated(
    github: Connector, fake: FakeGitHub
) -> None:
    answer = github.call(
        "GET", "/open_pull_requests", params={"owner": "knicks", "repo": "analytics", "limit": 150}
    )
    listed = answer.json()
    assert (listed["count"], listed["truncated"], len(listed["pull_requests"])) == (150, True, 150)
    assert len(fake.requests_to("/repos/knicks/analytics/pulls")) == 2


@pytest.fixture(scope="module")
def looping(run_connector: RunConnector) -> Iterator[tuple[Connector, FakeServer]]:
    """A GitHub whose `next` links never end: after empty pages (`empty`), back to a page
    already read (`again`), or to one more page of a single pull request (`thin`)."""

    def page(received: Received, repo: str) -> Answer:
        number = int(received.param("page") or 1)
        pulls = [] if repo == "empty" else [{"number": number, "title": "t"}]
        following = 2 if repo == "again" else number + 1
        link = f'<{vendor.url}/repos/knicks/{repo}/pulls?page={following}>; rel="next"'
        return Answer(200, pulls, {"Link": link})

    with FakeServer() as vendor:
        vendor.route("GET", "/repos/knicks/(?P<repo>[a-z]+)/pulls", page)
        yield (
            run_connector("github", {"GITHUB_TOKEN": TOKEN, "GITHUB_BASE_URL": vendor.url}),
            vendor,
        )


@pytest.mark.parametrize(
    ("repo", "limit", "pages", "count"),
    [("empty", 500, 1, 0), ("again", 500, 2, 2), ("thin", 150, 2, 2)],
)
def test_pages_stop_when_empty_repeated_or_more_than_the_limit_needs(
    looping: tuple[Connector, FakeServer], repo: str, limit: int, pages: int, count: int
) -> None:
    github, vendor = looping
    vendor.clear()
    answer = github.call(
        "GET", "/open_pull_requests", params={"owner": "knicks", "repo": repo, "limit": limit}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["count"] == count
    assert len(vendor.requests_to(f"/repos/knicks/{repo}/pulls")) == pages


def test_a_pull_request_whose_author_was_deleted_has_no_author(
    github: Connector, fake: FakeGitHub
) -> None:
    number = fake.add_pull_request("knicks/ghosts", "Left behind")
    fake.pulls["knicks/ghosts"][number - 1]["user"] = None
    answer = github.call("GET", "/open_pull_requests", params={"owner": "knicks", "repo": "ghosts"})
    assert answer.json()["pull_requests"][0]["author"] is None


def test_a_repository_without_open_pull_requests_has_none(github: Connector) -> None:
    answer = github.call("GET", "/open_pull_requests", params={"owner": "knicks", "repo": "quiet"})
    assert answer.json() == {
        "repository": "knicks/quiet",
        "count": 0,
        "truncated": False,
        "pull_requests": [],
    }


def test_an_unknown_repository_is_a_404_naming_githubs_message(github: Connector) -> None:
    answer = github.call("GET", "/open_pull_requests", params={"owner": "knicks", "repo": "nope"})
    assert_problem(answer, 404, "GitHub has no repository knicks/nope", "404 Not Found")


@pytest.mark.parametrize(("owner", "repo"), [("..", "x"), ("knicks", "a/b"), ("k nicks", "x")])
def test_names_that_are_not_github_names_are_400s_before_github_is_called(
    github: Connector, fake: FakeGitHub, owner: str, repo: str
) -> None:
    answer = github.call("GET", "/open_pull_requests", params={"owner": owner, "repo": repo})
    assert_problem(answer, 400, "is not a GitHub owner or repository name")
    assert fake.received == []


def test_every_bad_parameter_is_listed_in_one_400(github: Connector, fake: FakeGitHub) -> None:
    answer = github.call(
        "GET", "/open_pull_requests", params={"owner": "..", "repo": "a b", "limit": 0}
    )
    problem = assert_problem(answer, 400, "query.owner", "query.repo", "query.limit")
    assert [error["loc"][1] for error in problem["errors"]] == ["owner", "repo", "limit"]
    assert fake.received == []


def test_githubs_rate_limit_is_a_429_with_retry_after(github: Connector, fake: FakeGitHub) -> None:
    limited = Answer(
        403,
        {"message": "API rate limit exceeded for user ID 1."},
        {"Retry-After": "42", "X-RateLimit-Remaining": "0"},
    )
    fake.interject("GET", "/repos/knicks/analytics/pulls", limited)
    answer = github.call(
        "GET", "/open_pull_requests", params={"owner": "knicks", "repo": "analytics"}
    )
    assert_problem(answer, 429, "GitHub is rate limiting", "42 s")
    assert answer.headers["Retry-After"] == "42"


def test_a_retry_after_that_is_not_ascii_digits_falls_back_to_the_reset_time(
    github: Connector, fake: FakeGitHub
) -> None:
    reset = str(int(time.time()) + 60)
    headers = {"Retry-After": "\xb2", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
    limited = Answer(403, {"message": "API rate limit exceeded"}, headers)
    fake.interject("GET", "/repos/knicks/analytics/pulls", limited)
    answer = github.call(
        "GET", "/open_pull_requests", params={"owner": "knicks", "repo": "analytics"}
    )
    assert_problem(answer, 429, "GitHub is rate limiting")
    assert 50 <= int(answer.headers["Retry-After"]) <= 60


def test_another_github_error_is_a_502_naming_it(github: Connector, fake: FakeGitHub) -> None:
    fake.interject("GET", "/repos/knicks/analytics/pulls", Answer(500, {"message": "Server Error"}))
    answer = github.call(
        "GET", "/open_pull_requests", params={"owner": "knicks", "repo": "analytics"}
    )
    assert_problem(answer, 502, "GitHub answered 500 Server Error for knicks/analytics")


def test_a_wrong_token_is_a_502_for_the_admin_that_never_shows_it(
    fake: FakeGitHub, run_connector: RunConnector
) -> None:
    wrong = run_connector("github", {"GITHUB_TOKEN": "ghp_wrong", "GITHUB_BASE_URL": fake.base_url})
    answer = wrong.call(
        "GET", "/open_pull_requests", params={"owner": "knicks", "repo": "analytics"}
    )
    assert_problem(answer, 502, "Bad credentials", "GITHUB_TOKEN")
    assert "ghp_wrong" not in answer.text


def test_calls_without_the_gateways_identity_are_401s(github: Connector, fake: FakeGitHub) -> None:
    assert_identity_required(github, "GET", "/open_pull_requests?owner=knicks&repo=analytics")
    assert fake.received == []


def test_the_endpoint_is_documented_and_the_token_is_in_no_log_line(
    github: Connector, fake: FakeGitHub
) -> None:
    """After the error paths too: a vendor's 500, a rate limit, a repository not there."""
    assert_documented(github, {("GET", "/open_pull_requests")})
    fake.interject("GET", "/repos/knicks/analytics/pulls", Answer(500, {"message": TOKEN}))
    fake.interject("GET", "/repos/knicks/analytics/pulls", Answer(429, {}, {"Retry-After": "1"}))
    for repo in ("analytics", "analytics", "nope"):
        answer = github.call("GET", "/open_pull_requests", params={"owner": "knicks", "repo": repo})
        assert answer.status_code >= 400
        assert TOKEN not in answer.text
    assert TOKEN not in github.log_text()
