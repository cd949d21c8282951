"""Request limits: body size (413) and per-key rate (429)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from starlette.types import Message, Receive


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body exceeds the limit of {limit} bytes")
        self.limit = limit


def limit_body(receive: Receive, limit: int, declared_length: str | None) -> Receive:
    """A `receive` that refuses bodies over `limit`, declared or streamed."""
    if declared_length is not None and declared_length.isdigit() and int(declared_length) > limit:
        raise BodyTooLarge(limit)
    seen = 0

    async def receive_limited() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return receive_limited


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per key: `burst` requests at once, refilled at `per_minute`.

    Kept in the process: each node limits what it serves. Unused buckets are dropped
    least-recently-used first, so memory stays bounded however many keys call.
    """

    def __init__(self, *, per_minute: int, burst: int, max_keys: int = 100_000) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def acquire(self, key_id: str) -> float:
        """Take a token; 0 when allowed, else the seconds until one is available."""
        now = time.monotonic()
        bucket = self._buckets.pop(key_id, None) or _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        self._buckets[key_id] = bucket
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self._rate


def retry_after_header(wait_seconds: float) -> str:
    return str(max(1, math.ceil(wait_seconds)))
