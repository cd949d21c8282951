"""GitHub: the open pull requests of a repository, over the REST API, every page of them.

Settings: `GITHUB_TOKEN` (secret: a fine-grained token with read access to pull requests),
`GITHUB_BASE_URL` (default https://api.github.com; https://HOST/api/v3 for GitHub
Enterprise Server, a fake's address in tests and `bay demo`).
"""

from __future__ import annotations

import re
import time
from functools import cache
from typing import Any

from servicebay.sdk import Service
from servicebay.sdk.service import field_error, invalid
from servicebay.sdk.upstream import Reply, Upstream, setting, whole_seconds

app = Service(
    "github", description="The organisation's GitHub repositories: their open pull requests."
)

NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
"""What GitHub allows in an owner or repository name; nothing that could change the path."""
LINK = re.compile(r'<([^>]+)>;\s*rel="([^"]+)"')
PER_PAGE = 100
MAX_LIMIT = 5000


@cache
def github() -> Upstream:
    return Upstream(
        "GitHub",
        setting("GITHUB_BASE_URL", "https://api.github.com"),
        bearer=setting("GITHUB_TOKEN"),
        headers={
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "servicebay-github-connector",
        },
    )


@app.get("/open_pull_requests")
def open_pull_requests(owner: str, repo: str, limit: int = 500) -> dict[str, Any]:
    """The open pull requests of the repository `owner/repo`, newest first, and how many.

    Reads every page GitHub gives, up to `limit` pull requests (at most 5000); `truncated`
    says whether there were more. Each has its `number`, `title`, `author`, `draft`,
    `created_at`, `updated_at`, `url`, and its `head` and `base` branches.
    """
    errors = [
        field_error(name, f"{value!r} is not a GitHub owner or repository name", "name")
        for name, value in (("owner", owner), ("repo", repo))
        if not NAME.fullmatch(value) or value in (".", "..")
    ]
    if not 1 <= limit <= MAX_LIMIT:
        errors.append(field_error("limit", f"is 1 to {MAX_LIMIT}, not {limit}", "range"))
    if errors:
        raise invalid(errors)
    upstream = github()
    pulls: list[dict[str, Any]] = []
    page: str | None = f"/repos/{owner}/{repo}/pulls?state=open&per_page={PER_PAGE}"
    read: set[str] = set()
    # at most the pages `limit` needs: a vendor repeating its `next` link cannot loop us
    for _ in range(-(-limit // PER_PAGE)):
        if page is None or len(pulls) >= limit:
            break
        read.add(page)
        reply = upstream.request("GET", page)
        answer = _checked(reply, f"{owner}/{repo}")
        pulls += [_pull(pull) for pull in answer if isinstance(pull, dict)]
        page = _next(reply)
        if not answer or page in read:
            page = None  # an empty page, or one already read, is the end
    return {
        "repository": f"{owner}/{repo}",
        "count": min(len(pulls), limit),
        "truncated": len(pulls) > limit or page is not None,
        "pull_requests": pulls[:limit],
    }


def _pull(pull: dict[str, Any]) -> dict[str, Any]:
    return {
        "number": pull.get("number"),
        "title": pull.get("title"),
        "author": _inner(pull, "user", "login"),
        "draft": pull.get("draft", False),
        "created_at": pull.get("created_at"),
        "updated_at": pull.get("updated_at"),
        "url": pull.get("html_url"),
        "head": _inner(pull, "head", "ref"),
        "base": _inner(pull, "base", "ref"),
    }


def _inner(pull: dict[str, Any], outer: str, name: str) -> Any:
    """`pull[outer][name]`, or None when GitHub left it out (a deleted user is null)."""
    value = pull.get(outer)
    return value.get(name) if isinstance(value, dict) else None


def _next(reply: Reply) -> str | None:
    """The `rel="next"` page of the `Link` header, if any."""
    for url, relation in LINK.findall(reply.headers.get("Link", "")):
        if relation == "next":
            return str(url)
    return None


def _checked(reply: Reply, repository: str) -> list[Any]:
    """A page of pull requests; GitHub's `{"message": ...}` as a clear problem if not."""
    answer = reply.json()
    if reply.status == 200 and isinstance(answer, list):
        return answer
    upstream = github()
    message = answer.get("message") if isinstance(answer, dict) else None
    named = f"{reply.status} {message or 'without a message'}"
    if reply.status == 404:
        raise upstream.error(
            f"has no repository {repository} that the connector's token can see ({named})",
            status=404,
        )
    if reply.status == 401:
        raise upstream.error(
            f"refused the connector's token ({named}): an admin should check GITHUB_TOKEN"
        )
    wait = _rate_limit_wait(reply)
    if wait is not None:
        raise upstream.rate_limited("the connector's token", wait)
    raise upstream.error(f"answered {named} for {repository}")


def _rate_limit_wait(reply: Reply) -> int | None:
    """Seconds until GitHub's rate limit lifts, when that is why it refused (403 or 429
    with `Retry-After`, or `x-ratelimit-remaining: 0` and its reset time)."""
    if reply.status not in (403, 429):
        return None
    retry_after = reply.retry_after()
    if retry_after is not None:
        return retry_after
    reset = whole_seconds(reply.headers.get("X-RateLimit-Reset"))
    if reply.headers.get("X-RateLimit-Remaining") == "0" and reset is not None:
        return max(reset - int(time.time()), 1)
    return None


if __name__ == "__main__":
    github()  # a missing setting stops the start, with its name, not the first call
    app.run()
