"""Group commit (`Batcher`): calls that arrive while a batch is written share the next."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from servicebay.core.batching import Batcher


class Recorder:
    """A `write` that keeps the batches it was given and can be held mid-write."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def write(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await self.release.wait()
        if 13 in items:
            raise ValueError("13 cannot be written")
        return [item * 10 for item in items]


def test_a_lone_call_is_written_at_once_in_a_batch_of_its_own() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher = Batcher(recorder.write, name="test")
        assert await batcher.submit(1) == 10
        assert await batcher.submit(2) == 20
        assert recorder.batches == [[1], [2]]

    asyncio.run(scenario())


async def behind_a_held_write(
    batcher: Batcher[int, int], recorder: Recorder, items: Sequence[int]
) -> tuple[int, list[asyncio.Task[int]]]:
    """Submit 1, and `items` while it is being written; let the write go on: the result of
    1, and the calls for `items` (to be awaited)."""
    recorder.release.clear()
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)
    later = [asyncio.create_task(batcher.submit(item)) for item in items]
    await asyncio.sleep(0)
    recorder.release.set()
    return await first, later


def test_calls_made_during_a_write_share_the_next_batch_and_get_their_own_results() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher = Batcher(recorder.write, name="test")
        first, later = await behind_a_held_write(batcher, recorder, (2, 3, 4))
        assert first == 10
        assert await asyncio.gather(*later) == [20, 30, 40]
        assert recorder.batches == [[1], [2, 3, 4]]

    asyncio.run(scenario())


def test_an_item_that_fails_in_a_way_it_alone_can_fails_only_its_own_caller() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher = Batcher(recorder.write, name="test", split_on=(ValueError,))
        _, batch = await behind_a_held_write(batcher, recorder, (12, 13, 14))
        assert await batch[0] == 120
        with pytest.raises(ValueError, match="13 cannot be written"):
            await batch[1]
        assert await batch[2] == 140
        assert recorder.batches == [[1], [12, 13, 14], [12], [13], [14]]

    asyncio.run(scenario())


def test_any_other_failure_fails_the_whole_batch_at_once() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher = Batcher(recorder.write, name="test", split_on=(KeyError,))
        _, batch = await behind_a_held_write(batcher, recorder, (12, 13, 14))
        for call in batch:
            with pytest.raises(ValueError, match="13 cannot be written"):
                await call
        assert recorder.batches == [[1], [12, 13, 14]]

    asyncio.run(scenario())


def test_batches_are_capped_in_size() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        recorder.release.clear()
        batcher = Batcher(recorder.write, name="test", max_batch=2)
        calls = [asyncio.create_task(batcher.submit(number)) for number in range(5)]
        await asyncio.sleep(0)
        recorder.release.set()
        assert await asyncio.gather(*calls) == [0, 10, 20, 30, 40]
        assert recorder.batches == [[0, 1], [2, 3], [4]]

    asyncio.run(scenario())
