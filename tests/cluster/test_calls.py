"""The front-end's call batcher on its own (no cluster): requests in, calls of whole chunks
out, no more in flight than the replicas take, every answer back in place."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from clipserve.cluster.calls import CallBatcher
from clipserve.errors import DeadlineExceededError, ServerUnavailableError

pytestmark = pytest.mark.cluster


class Replicas:
    """Answers each call with its values upper-cased once the test releases it."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.timeouts: list[float | None] = []  # what each call said its answer is good for
        self.release = asyncio.Event()
        self.fail_next = False

    async def send(self, values: list[Any], timeout_s: float | None) -> list[Any]:
        self.calls.append(list(values))
        self.timeouts.append(timeout_s)
        await self.release.wait()
        if self.fail_next:
            self.fail_next = False
            raise ServerUnavailableError("the replica went away")
        return [value.upper() for value in values]


async def started(replicas: Replicas, chunk: int, capacity: int) -> CallBatcher:
    batcher = CallBatcher(replicas.send, chunk, lambda: capacity)
    batcher.start()
    return batcher


async def until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0)


async def test_a_large_request_becomes_chunks_and_comes_back_in_order() -> None:
    replicas = Replicas()
    replicas.release.set()
    batcher = await started(replicas, chunk=4, capacity=8)
    values = [f"v{i}" for i in range(10)]
    assert await batcher.submit(values) == [v.upper() for v in values]
    assert [len(call) for call in replicas.calls] == [4, 4, 2]
    await batcher.stop()


async def test_small_requests_waiting_together_share_a_call() -> None:
    replicas = Replicas()
    batcher = await started(replicas, chunk=32, capacity=1)
    first = asyncio.ensure_future(batcher.submit(["alone"]))
    await until(lambda: len(replicas.calls) == 1)  # sent at once: nothing to wait for
    others = [asyncio.ensure_future(batcher.submit([f"s{i}"])) for i in range(5)]
    await asyncio.sleep(0)
    assert len(replicas.calls) == 1  # the only slot is busy: they wait here, not in Ray
    replicas.release.set()
    assert await first == ["ALONE"]
    assert [await o for o in others] == [[f"S{i}"] for i in range(5)]
    assert replicas.calls[1] == [f"s{i}" for i in range(5)]  # one call for all five
    await batcher.stop()


async def test_a_failed_call_fails_each_request_it_carried_and_spares_the_rest() -> None:
    replicas = Replicas()
    batcher = await started(replicas, chunk=2, capacity=1)
    carried = asyncio.ensure_future(batcher.submit(["a", "b", "c"]))  # calls [a b] and [c]
    await until(lambda: len(replicas.calls) == 1)
    replicas.fail_next = True
    replicas.release.set()
    with pytest.raises(ServerUnavailableError, match="went away"):
        await carried
    assert await batcher.submit(["d"]) == ["D"]
    await batcher.stop()


async def test_stopping_answers_what_is_left() -> None:
    replicas = Replicas()
    batcher = await started(replicas, chunk=2, capacity=1)
    pending = asyncio.ensure_future(batcher.submit(["x", "y", "z"]))
    await until(lambda: len(replicas.calls) == 1)
    await batcher.stop()
    with pytest.raises(ServerUnavailableError, match="front-end stopped"):
        await pending


async def test_a_deadline_passing_in_the_queue_fails_the_request_and_its_inputs_stay_unsent() -> (
    None
):
    replicas = Replicas()
    batcher = await started(replicas, chunk=8, capacity=1)
    busy = asyncio.ensure_future(batcher.submit(["busy"]))  # holds the only call slot
    await until(lambda: len(replicas.calls) == 1)
    with pytest.raises(DeadlineExceededError, match="deadline passed"):
        await batcher.submit(["late"], deadline=time.monotonic() + 0.05)
    replicas.release.set()
    assert await busy == ["BUSY"]
    deadline = time.monotonic() + 60
    assert await batcher.submit(["next"], deadline) == ["NEXT"]
    assert replicas.calls == [["busy"], ["next"]]  # "late" never went to a replica
    left = replicas.timeouts[1]
    assert replicas.timeouts[0] is None and left is not None and 0 < left <= 60
    await batcher.stop()


async def test_a_call_carries_no_time_limit_when_one_of_its_callers_has_none() -> None:
    replicas = Replicas()
    batcher = await started(replicas, chunk=8, capacity=1)
    busy = asyncio.ensure_future(batcher.submit(["busy"]))
    await until(lambda: len(replicas.calls) == 1)
    soon = asyncio.ensure_future(batcher.submit(["a"], time.monotonic() + 60))
    later = asyncio.ensure_future(batcher.submit(["b"], time.monotonic() + 120))
    unbounded = asyncio.ensure_future(batcher.submit(["c"]))
    await asyncio.sleep(0)
    replicas.release.set()
    assert [await f for f in (busy, soon, later, unbounded)] == [["BUSY"], ["A"], ["B"], ["C"]]
    assert replicas.calls[1] == ["a", "b", "c"] and replicas.timeouts[1] is None
    await batcher.stop()
