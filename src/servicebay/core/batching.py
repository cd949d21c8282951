"""Group commit for callers that each wait for their own write.

With one writer at a time (SQLite), or one event loop doing every transaction's round
trips, a transaction per caller makes callers queue behind each other's commits. A
`Batcher` lets the calls that arrive while a batch is being written share the next one:
alone, a call is written at once; under load, the cost of a transaction is split among
everyone who waited for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """`submit` returns the result `write` gave for the item, once its batch is written.

    `write` gets the items of a batch, in the order they came, and answers one result per
    item. A batch that fails with one of the `split_on` errors (those one bad item can
    cause, such as an integrity error) is written again one item at a time, so that item
    fails only its own caller; any other error fails every caller of the batch at once
    (the database is gone or locked: trying each alone would only wait longer).
    """

    def __init__(
        self,
        write: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]],
        *,
        name: str,
        max_batch: int = 64,
        split_on: tuple[type[Exception], ...] = (),
    ) -> None:
        self._write = write
        self._name = name
        self._split_on = split_on
        self._max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        done: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name=self._name)
        return await done

    async def _drain(self) -> None:
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._settle(batch)
        except BaseException:  # cancelled (the loop is closing): nobody waits forever
            for _, done in [*batch, *self._pending]:
                done.cancel()
            self._pending.clear()
            raise

    async def _settle(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._write([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self._name}: {len(results)} results for {len(batch)} items")
        except Exception as error:
            if len(batch) > 1 and isinstance(error, self._split_on):
                log.warning("%s: a batch of %d failed; one by one now", self._name, len(batch))
                for one in batch:
                    await self._settle([one])
                return
            for _, done in batch:
                if not done.done():
                    done.set_exception(error)
            return
        for (_, done), result in zip(batch, results, strict=True):
            if not done.done():
                done.set_result(result)
