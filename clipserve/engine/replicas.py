"""The model replicas, each on its own inference thread, and the watchdog over them.

``ReplicaPool.acquire`` hands out a free replica; ``run`` runs one forward pass on its
thread. With ``forward_timeout_s``, a pass still running after that long makes the engine
unhealthy (``EngineHealth``: ``stuck``), and the pool calls ``on_unhealthy`` so the engine
can fail its waiting work fast; when the pass returns, the problem clears by itself. A
thread that dies is reported the same way, and its replica is never handed out again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from clipserve.engine.health import EngineHealth
from clipserve.engine.inference import InferenceThread
from clipserve.models.base import EmbeddingModel

log = logging.getLogger("clipserve.engine")


@dataclass(eq=False)
class Replica:
    key: str  # "replica-0"...
    model: EmbeddingModel
    thread: InferenceThread


class ReplicaPool:
    def __init__(
        self,
        models: Sequence[EmbeddingModel],
        health: EngineHealth,
        *,
        forward_timeout_s: float | None,
        on_unhealthy: Callable[[str], None],
    ) -> None:
        if forward_timeout_s is not None and forward_timeout_s <= 0:
            raise ValueError("forward_timeout_s must be > 0 (or None: no watchdog)")
        self.health = health
        self.forward_timeout_s = forward_timeout_s
        self._on_unhealthy = on_unhealthy
        self.replicas = [
            Replica(f"replica-{index}", model, InferenceThread(f"clipserve-infer-{index}",
                                                               self._died))
            for index, model in enumerate(models)
        ]  # fmt: skip
        self._free: asyncio.Queue[Replica] = asyncio.Queue()

    def start(self) -> None:
        for replica in self.replicas:
            replica.thread.start()
            self._free.put_nowait(replica)

    def stop(self) -> None:
        for replica in self.replicas:
            replica.thread.stop()

    @property
    def running(self) -> int:
        """Replicas whose inference thread is alive."""
        return sum(replica.thread.alive for replica in self.replicas)

    async def acquire(self) -> Replica:
        return await self._free.get()

    def release(self, replica: Replica) -> None:
        if replica.thread.alive:  # a dead thread's replica is never handed out again
            self._free.put_nowait(replica)

    async def run(self, replica: Replica, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` on ``replica``'s thread, watched by the watchdog."""
        loop = asyncio.get_running_loop()
        future = replica.thread.run(function, *args)
        watch = None
        if self.forward_timeout_s is not None:
            watch = loop.call_later(self.forward_timeout_s, self._stuck, replica, future)
        try:
            return await asyncio.shield(future)  # a cancelled caller leaves the pass running
        finally:
            if watch is not None:
                watch.cancel()
            if future.done():
                self._pass_returned(replica)
            else:  # the caller left (engine stop): the problem clears when the pass returns
                future.add_done_callback(lambda _: self._pass_returned(replica))

    def _stuck(self, replica: Replica, future: asyncio.Future[Any]) -> None:
        if future.done():
            return
        problem = (
            f"a forward pass on {replica.thread.name} has run for more than "
            f"{self.forward_timeout_s:g} s (--forward-timeout-s; healthy again when it returns)"
        )
        log.error("clipserve: %s; the server reports not ready until it returns", problem)
        self.health.report(replica.key, problem)
        self._on_unhealthy(problem)

    def _pass_returned(self, replica: Replica) -> None:
        """A stuck pass that returns clears its problem (a dead thread's stays)."""
        if replica.thread.alive and replica.key in self.health.problems:
            log.warning("clipserve: the stuck forward pass on %s returned; healthy again",
                        replica.thread.name)  # fmt: skip
            self.health.clear(replica.key)

    def _died(self, thread: InferenceThread, error: BaseException) -> None:
        replica = next(r for r in self.replicas if r.thread is thread)
        problem = f"the inference thread {thread.name} died: {error!r} (restart the server)"
        log.error("clipserve: %s; the server reports not ready (restart it)", problem)
        self.health.report(replica.key, problem)
        self._on_unhealthy(problem)
