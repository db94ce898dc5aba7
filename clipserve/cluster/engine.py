"""The front-end's engine on a Ray cluster: the same calls as ``clipserve.engine.Engine``,
answered by model replicas through a Serve ``DeploymentHandle``.

Inputs cross the handle in calls of up to ``chunk_items`` (see ``calls``): a large request
becomes several calls, which spread over replicas; small requests waiting together share a
call. Per-item calls through Ray would cost far more than the items. Each replica's own
engine batches across the calls it holds. Serve's router picks the replica (power of two
choices on queue length).

Failures: a call whose replica dies (actor killed, node lost) is resent, up to
``max_retries`` times; encoding is idempotent and only the answer of the attempt that
succeeded is kept, so each input gets exactly one outcome, in order. While no replica runs,
a waiting call fails after ``unavailable_after_s`` with ``ServerUnavailableError`` (gRPC
UNAVAILABLE, HTTP 503), which clients retry. The front-end keeps its own bounded queue
(``max_queue_items`` per modality, the same admission rule as the local engine).

Health and deadlines, as the engine seam asks: ``health`` is the cluster monitor's verdict
(unhealthy while no replica is reachable); each replica's own engine runs the watchdog, and
Serve replaces a replica it finds stuck. The request's deadline (``current_deadline()``)
bounds the wait for room and for a call slot here (``DeadlineExceededError``), and travels
with each call so the replica drops work nobody can use any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from ray import exceptions as ray_errors
from ray.serve import exceptions as serve_errors

from clipserve.cluster.calls import CallBatcher
from clipserve.cluster.monitor import ClusterMonitor
from clipserve.cluster.payload import RemoteModel, Value, unpack, values_of
from clipserve.cluster.settings import EMBEDDER, RaySettings
from clipserve.engine.admission import Admission
from clipserve.engine.deadline import check_deadline, current_deadline
from clipserve.engine.health import EngineHealth
from clipserve.engine.items import Item
from clipserve.engine.metrics import Metrics
from clipserve.errors import ClipServeError, ModelError, ServerUnavailableError

log = logging.getLogger("clipserve.cluster")
MODALITIES = ("text", "image")
#: the replica (or its node) went away: the call may be resent to another replica
REPLICA_LOST = (
    ray_errors.RayActorError,  # ActorDiedError, ActorUnavailableError
    ray_errors.WorkerCrashedError,
    ray_errors.NodeDiedError,
    ray_errors.ObjectLostError,  # OwnerDiedError, ...
    serve_errors.ReplicaUnavailableError,
)
#: nothing was done, or the replica is stopping: resend as well
RESEND = (serve_errors.BackPressureError, serve_errors.DeploymentUnavailableError)
_POLL_S = 0.25


class RayEngine:
    """``EncodingEngine`` over a Serve deployment; see the module docstring."""

    def __init__(
        self,
        handle: Any,
        settings: RaySettings,
        *,
        max_queue_items: int,
        max_queue_wait_s: float,
        metrics: Metrics,
        cluster: dict[str, Any] | None = None,
    ) -> None:
        self.handle = handle
        self.settings = settings
        self.metrics = metrics
        #: shown under ``cluster`` in /health (address, how the app was joined)
        self.cluster_info = dict(cluster or {})
        self.monitor = ClusterMonitor(handle, settings.app, EMBEDDER, settings.monitor_interval_s)
        waiting = metrics.queue_waiting
        self._admission = Admission(
            dict.fromkeys(MODALITIES, max_queue_items),
            max_queue_wait_s,
            on_waiting=lambda modality, items: waiting.labels(modality).set(items),
        )
        self.max_batch_size = 0
        self.chunk_items = 0
        self.calls = {"ok": 0, "resent": 0, "failed": 0}
        self._model: RemoteModel | None = None
        self._state = "new"
        self._idle = asyncio.Event()
        self._idle.set()
        self._collector = _Collector(self)
        self._batcher: CallBatcher | None = None
        self.queued_items = 0  # at this front-end, waiting for a call slot

    # ---- lifecycle ----------------------------------------------------------------------

    @property
    def model(self) -> RemoteModel:
        if self._model is None:
            raise RuntimeError("start the engine first: the model is described by a replica")
        return self._model

    @property
    def running(self) -> bool:
        return self._state == "running"

    @property
    def health(self) -> EngineHealth:
        """Unhealthy while no replica is reachable (the cluster monitor's verdict)."""
        return self.monitor.health

    @property
    def calls_in_flight(self) -> int:
        return self._batcher.calls_in_flight if self._batcher is not None else 0

    async def start(self) -> None:
        if self._state != "new":
            raise RuntimeError(f"engine cannot start: it is {self._state}")
        await self.monitor.start()
        info = await self._call("info")
        self._model = RemoteModel.from_info(info)
        self.max_batch_size = int(info["max_batch_size"])
        self.chunk_items = self.settings.call_items(self.max_batch_size)
        self._batcher = CallBatcher(
            self._encode_call, self.chunk_items, self._capacity, self._queue_depth
        )
        self._batcher.start()
        self.metrics.registry.register(self._collector)
        self._state = "running"

    async def stop(self, drain_timeout: float = 10.0) -> None:
        if self._state in ("stopping", "stopped"):
            return
        started = self._state == "running"
        self._state = "stopping"
        self._admission.close(ServerUnavailableError("the front-end is stopping"))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), drain_timeout)
        if self._batcher is not None:
            await self._batcher.stop()
        await self.monitor.stop()
        if started:
            self.metrics.registry.unregister(self._collector)
        self._state = "stopped"

    def cache_info(self) -> dict[str, Any]:
        return {"enabled": False}  # a cache goes in front (``CachedEngine``), as locally

    def describe(self) -> dict[str, Any]:
        described = self.monitor.describe()
        cluster = described["cluster"]
        cluster.update(self.cluster_info)
        cluster["calls"] = dict(self.calls)
        cluster["chunk_items"] = self.chunk_items
        cluster["front_end"] = {
            "queued_items": self.queued_items,
            "calls_in_flight": self.calls_in_flight,
            "max_calls_in_flight": self._capacity(),
        }
        described["health"] = self.health.describe()  # as the local engine's describe has it
        return described

    # ---- the calls the service makes ----------------------------------------------------

    async def encode(self, items: Iterable[Item]) -> list[Any]:
        self._check_running()
        return await self._encode(values_of(items))

    async def encode_texts(self, texts: Sequence[str]) -> list[Any]:
        self._check_running()
        return await self._encode(list(texts))

    def _check_running(self) -> None:
        if self._state != "running":
            raise ServerUnavailableError(f"the front-end is {self._state}; it takes no new work")

    async def _encode(self, values: list[Value]) -> list[Any]:
        if not values:
            return []
        deadline = current_deadline()
        check_deadline(deadline)
        texts = sum(1 for value in values if type(value) is str)
        counts = {"text": texts, "image": len(values) - texts}
        await self._admission.reserve(counts, deadline)
        self._idle.clear()
        assert self._batcher is not None
        try:
            return await self._batcher.submit(values, deadline)
        finally:
            for modality, count in counts.items():
                if count:
                    self._admission.release(modality, count)
            if not self._admission.busy:
                self._idle.set()

    async def _encode_call(self, values: list[Value], timeout_s: float | None) -> list[Any]:
        return unpack(await self._call("encode", values, timeout_s), len(values))

    def _capacity(self) -> int:
        """Calls in flight at most: every replica's ``max_ongoing_requests``."""
        snapshot = self.monitor.snapshot
        per_replica = snapshot.max_ongoing or self.settings.max_ongoing_requests
        return max(1, snapshot.wanted) * per_replica

    def _queue_depth(self, items: int) -> None:
        self.queued_items = items

    # ---- one call, resent when its replica dies -----------------------------------------

    async def _call(self, method: str, *args: Any) -> Any:
        attempt = 0
        while True:
            try:
                result = await self._attempt(method, args)
            except REPLICA_LOST + RESEND + (ServerUnavailableError,) as exc:
                if isinstance(exc, REPLICA_LOST):
                    self.monitor.replica_lost(exc)
                attempt += 1
                if attempt > self.settings.max_retries or isinstance(exc, _NoReplica):
                    self.calls["failed"] += 1
                    raise self._unavailable(exc, attempt) from exc
                self.calls["resent"] += 1
                log.warning("clipserve: resending a %s call (%d of %d): %s", method, attempt,
                            self.settings.max_retries, _describe(exc))  # fmt: skip
                await asyncio.sleep(min(1.0, 0.05 * 2**attempt))  # the router learns meanwhile
                continue
            except ClipServeError as exc:
                self.calls["failed"] += 1
                raise _clean(exc) from None
            except Exception as exc:
                self.calls["failed"] += 1
                raise ModelError(f"the replica call failed: {_describe(exc)}") from exc
            self.calls["ok"] += 1
            self.monitor.call_answered()
            return result

    async def _attempt(self, method: str, args: tuple[Any, ...]) -> Any:
        """One call; while it waits, give up once no replica has run for too long."""
        response = getattr(self.handle, method).remote(*args)
        waiting = asyncio.ensure_future(_result(response))
        try:
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=_POLL_S)
                if done:
                    return waiting.result()
                down = self.monitor.unavailable_for()
                if down >= self.settings.unavailable_after_s:
                    raise _NoReplica(self._no_replica_message(down))
        finally:
            if not waiting.done():
                waiting.cancel()
                response.cancel()

    def _where(self) -> str:
        return f"Serve app {self.settings.app!r} on {self.cluster_info.get('address', 'Ray')}"

    def _no_replica_message(self, down: float) -> str:
        snapshot = self.monitor.snapshot
        reason = f" ({snapshot.error})" if snapshot.error else ""
        return (
            f"{self._where()}: no replica has been reachable for {down:.0f} s "
            f"({self.monitor.running_count()} of {snapshot.wanted} running){reason}; retry later"
        )

    def _unavailable(self, exc: BaseException, attempts: int) -> ServerUnavailableError:
        if isinstance(exc, _NoReplica):
            return ServerUnavailableError(str(exc))
        if isinstance(exc, serve_errors.DeploymentUnavailableError):
            what = "its Embedder deployment is unavailable (deleted, or being redeployed)"
        else:
            what = f"the replica working on this request went away ({_describe(exc)})"
        return ServerUnavailableError(
            f"{self._where()}: {what}; gave up after {attempts} attempts; retry later"
        )


class _NoReplica(ServerUnavailableError):
    """No replica runs: not worth resending within this request."""


async def _result(response: Any) -> Any:
    return await response


def _clean(exc: ClipServeError) -> ClipServeError:
    """A replica's error arrives wrapped in Ray's RayTaskError: rebuild the plain one."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, ClipServeError):
        exc = cause
    try:
        return type(exc)(str(exc))
    except TypeError:
        return ModelError(str(exc))


def _describe(exc: BaseException) -> str:
    text = str(getattr(exc, "cause", None) or exc).strip().splitlines()
    first = text[0][:200] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class _Collector:
    """Prometheus: the monitor's replica families and the front-end's call counters."""

    def __init__(self, engine: RayEngine) -> None:
        self.engine = engine

    def describe(self) -> list[Metric]:
        return []  # families come and go with the replicas: no fixed names to reserve

    def collect(self) -> list[Metric]:
        calls = CounterMetricFamily(
            "clipserve_cluster_calls",
            "Calls from this front-end to replicas, by outcome (ok, resent, failed).",
            labels=["outcome"],
        )
        for outcome, count in self.engine.calls.items():
            calls.add_metric([outcome], count)
        failures = CounterMetricFamily(
            "clipserve_cluster_replica_failures",
            "Replicas this front-end saw die during a call (actor or node lost).",
        )
        failures.add_metric([], self.engine.monitor.replica_failures)
        queued = GaugeMetricFamily(
            "clipserve_cluster_queued_items",
            "Items at this front-end waiting for a call slot (all replicas' slots busy).",
        )
        queued.add_metric([], self.engine.queued_items)
        in_flight = GaugeMetricFamily(
            "clipserve_cluster_calls_in_flight", "Calls from this front-end not yet answered."
        )
        in_flight.add_metric([], self.engine.calls_in_flight)
        return [calls, failures, queued, in_flight, *self.engine.monitor.collect()]
