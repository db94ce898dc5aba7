"""What the front-end knows about the replicas: wanted and running, and each one's engine.

Every ``interval_s`` the monitor asks the Serve controller for the deployment's replicas
(state, node, target count) and every running replica for its engine's metrics (queue depth,
batch sizes, calls in flight). A replica whose actor a call saw die counts as down at once,
before the controller notices. The snapshot feeds /health (``describe``), /metrics
(``collect``, a Prometheus collector), the front-end's rule for giving up when no replica
runs at all (``unavailable_for``) and the front-end engine's ``health``: unhealthy once no
replica has been reachable for two polls (``capacity`` unavailable), healthy again when one is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from clipserve.engine.health import EngineHealth
from clipserve.engine.seam import CAPACITY_DEGRADED, CAPACITY_OK, CAPACITY_UNAVAILABLE

log = logging.getLogger("clipserve.cluster")
RUNNING = "RUNNING"
_NO_REPLICA = "no-replica"  # the key of the monitor's problem in ``EngineHealth``
#: the replica engine's metric families re-exposed per replica (``clipserve_replica_*``)
ENGINE_FAMILIES = frozenset(
    ("clipserve_batch_size", "clipserve_queue_depth", "clipserve_queue_waiting",
     "clipserve_items", "clipserve_forward_seconds")
)  # fmt: skip


@dataclass
class Replica:
    """One replica as the controller reports it, with its engine numbers when it answered."""

    replica: str
    state: str
    node_ip: str = ""
    node_id: str = ""
    actor_id: str = ""
    pid: int | None = None
    stats: dict[str, Any] | None = None


@dataclass
class Snapshot:
    app_status: str = "UNKNOWN"
    deployment_status: str = "UNKNOWN"
    wanted: int = 0
    replicas: list[Replica] = field(default_factory=list)
    taken_at: float = 0.0
    error: str | None = None
    #: False when the Serve controller did not answer the last time
    reachable: bool = True
    #: the deployment's max_ongoing_requests as deployed (None until read)
    max_ongoing: int | None = None


class ClusterMonitor:
    """Polls the controller and the replicas; see the module docstring."""

    def __init__(self, handle: Any, app: str, deployment: str, interval_s: float) -> None:
        self.handle = handle
        self.app = app
        self.deployment = deployment
        self.interval_s = interval_s
        self.snapshot = Snapshot()
        self.health = EngineHealth()
        self.replica_failures = 0
        self._lost: dict[str, float] = {}  # actor id -> when a call saw it die
        self._last_running = time.monotonic()
        self._controller: Any = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the monitor die; the snapshot says what failed
                log.exception("clipserve: reading the cluster state failed")

    # ---- reading the cluster ------------------------------------------------------------

    async def refresh(self) -> None:
        try:
            await self._read()
        finally:
            self._judge_health()

    def _judge_health(self) -> None:
        if self.capacity() != CAPACITY_UNAVAILABLE:
            self.health.clear(_NO_REPLICA)
            return
        reason = f" ({self.snapshot.error})" if self.snapshot.error else ""
        self.health.report(
            _NO_REPLICA,
            f"no replica of the Serve app {self.app!r} is reachable "
            f"({self.running_count()} of {self.snapshot.wanted} running){reason}",
        )

    async def _read(self) -> None:
        timeout = max(5.0, 2 * self.interval_s)  # a busy controller is slow, not gone
        try:
            details = await asyncio.wait_for(self._details(), timeout)
        except (asyncio.TimeoutError, Exception) as exc:  # controller unreachable
            self.snapshot.error = f"the Serve controller did not answer: {_describe(exc)}"
            self.snapshot.reachable = False
            return
        snapshot = _parse(details, self.app, self.deployment)
        current = {r.actor_id for r in snapshot.replicas}
        self._lost = {a: t for a, t in self._lost.items() if a in current}  # replaced: forget
        if self.running_count(snapshot):
            await self._read_replica_stats(snapshot)
        self.snapshot = snapshot
        if self.running_count(snapshot):
            self._last_running = time.monotonic()

    async def _details(self) -> dict[str, Any]:
        if self._controller is None:
            self._controller = await asyncio.to_thread(_controller_actor)
        return await self._controller.get_serve_instance_details.remote()

    async def _read_replica_stats(self, snapshot: Snapshot) -> None:
        try:
            response = self.handle.broadcast("stats")
            results = await response.results_async(
                timeout_s=max(2.0, self.interval_s), return_exceptions=True
            )
        except Exception as exc:
            snapshot.error = f"replica stats unavailable: {_describe(exc)}"
            return
        by_id = {r.get("replica"): r for r in results if isinstance(r, dict)}
        for replica in snapshot.replicas:
            replica.stats = by_id.get(replica.replica)

    # ---- what callers ask ---------------------------------------------------------------

    def replica_lost(self, error: BaseException) -> None:
        """A call saw its replica's actor die: count it down now, and look again soon."""
        self.replica_failures += 1
        actor_id = getattr(error, "actor_id", None)
        if actor_id:
            self._lost[str(actor_id)] = time.monotonic()
        self._wake.set()

    def running_count(self, snapshot: Snapshot | None = None) -> int:
        snapshot = snapshot or self.snapshot
        return sum(
            1 for r in snapshot.replicas if r.state == RUNNING and r.actor_id not in self._lost
        )

    def call_answered(self) -> None:
        """A replica answered a call: the surest sign that one works, whatever the
        controller says (it may be slow to answer on a busy head node)."""
        self._last_running = time.monotonic()
        if not self.health.ok:
            self._judge_health()

    def unavailable_for(self) -> float:
        """Seconds since a replica was last known to work: the controller reported one
        running, or one answered a call (0 while the controller reports one)."""
        if self.running_count() and self.snapshot.reachable:
            return 0.0
        return time.monotonic() - self._last_running

    def capacity(self) -> str:
        """``unavailable`` once nothing has shown a working replica for two polls;
        ``degraded`` while fewer replicas run than Serve wants."""
        if self.unavailable_for() > 2 * self.interval_s:
            return CAPACITY_UNAVAILABLE
        if not self.snapshot.reachable:
            return CAPACITY_OK  # replicas answer; the controller's count is out of date
        running = self.running_count()
        return CAPACITY_DEGRADED if running < self.snapshot.wanted else CAPACITY_OK

    def describe(self) -> dict[str, Any]:
        s = self.snapshot
        states: dict[str, int] = {}
        for replica in s.replicas:
            state = "DEAD" if replica.actor_id in self._lost else replica.state
            states[state] = states.get(state, 0) + 1
        return {
            "status": self.capacity(),
            "replicas": {"wanted": s.wanted, "running": self.running_count()},
            "cluster": {
                "app": self.app,
                "deployment": self.deployment,
                "app_status": s.app_status,
                "deployment_status": s.deployment_status,
                "replica_states": states,
                "replica_failures": self.replica_failures,
                "checked_s_ago": round(time.monotonic() - s.taken_at, 1),
                "error": s.error,
                "per_replica": [_replica_summary(r, r.actor_id in self._lost) for r in s.replicas],
            },
        }

    # ---- Prometheus ---------------------------------------------------------------------

    def collect(self) -> list[Metric]:
        s = self.snapshot
        wanted = GaugeMetricFamily(
            "clipserve_cluster_replicas_wanted", "Replicas the Serve deployment wants."
        )
        wanted.add_metric([], s.wanted)
        running = GaugeMetricFamily(
            "clipserve_cluster_replicas_running",
            "Replicas running and reachable (a replica a call saw die counts as down).",
        )
        running.add_metric([], self.running_count())
        families: list[Metric] = [wanted, running]
        families += _replica_families(s.replicas)
        return families


def _controller_actor() -> Any:
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    return ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)


def _parse(details: dict[str, Any], app: str, deployment: str) -> Snapshot:
    snapshot = Snapshot(taken_at=time.monotonic())
    application = (details.get("applications") or {}).get(app)
    if application is None:
        snapshot.app_status = "NOT_FOUND"
        snapshot.error = f"the Serve application {app!r} does not exist"
        return snapshot
    snapshot.app_status = str(_enum_value(application.get("status")))
    entry = (application.get("deployments") or {}).get(deployment) or {}
    snapshot.deployment_status = str(_enum_value(entry.get("status", "UNKNOWN")))
    snapshot.wanted = int(entry.get("target_num_replicas") or 0)
    deployed = entry.get("deployment_config") or {}
    if deployed.get("max_ongoing_requests"):
        snapshot.max_ongoing = int(deployed["max_ongoing_requests"])
    for item in entry.get("replicas") or []:
        snapshot.replicas.append(
            Replica(
                replica=str(item.get("replica_id", "")),
                state=str(_enum_value(item.get("state", ""))),
                node_ip=str(item.get("node_ip") or ""),
                node_id=str(item.get("node_id") or ""),
                actor_id=str(item.get("actor_id") or ""),
                pid=item.get("pid"),
            )
        )
    return snapshot


def _enum_value(value: Any) -> Any:
    return getattr(value, "value", value)


def _replica_summary(replica: Replica, lost: bool) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "replica": replica.replica,
        "state": "DEAD" if lost else replica.state,
        "node_ip": replica.node_ip,
        "node_id": replica.node_id[:12],
        "pid": replica.pid,
    }
    if replica.stats is None:
        return summary
    samples = _samples(replica.stats)
    summary["calls_in_flight"] = replica.stats.get("calls_in_flight", 0)
    summary["queue_depth"] = {
        labels["modality"]: int(value)
        for name, labels, value in samples
        if name == "clipserve_queue_depth"
    }
    batches: dict[str, dict[str, float]] = {}
    for name, labels, value in samples:
        if name in ("clipserve_batch_size_count", "clipserve_batch_size_sum"):
            entry = batches.setdefault(labels["modality"], {})
            entry["count" if name.endswith("count") else "items"] = int(value)
    for entry in batches.values():
        count = entry.get("count", 0)
        entry["mean_size"] = round(entry.get("items", 0) / count, 1) if count else 0.0
    summary["batches"] = batches
    return summary


def _samples(stats: dict[str, Any]) -> list[tuple[str, dict[str, str], float]]:
    return [sample for family in stats.get("families", []) for sample in family[3]]


def _replica_families(replicas: list[Replica]) -> list[Metric]:
    """Each replica's engine metrics, renamed ``clipserve_replica_*`` and labelled with the
    replica and its node (``clipserve_replica_queue_depth{replica, node, modality}``...)."""
    families: dict[str, Metric] = {}
    for replica in replicas:
        if replica.stats is None:
            continue
        extra = {"replica": replica.replica, "node": replica.node_ip}
        for name, kind, documentation, samples in replica.stats.get("families", []):
            if name not in ENGINE_FAMILIES:  # a replica has no requests of its own
                continue
            renamed = name.replace("clipserve_", "clipserve_replica_", 1)
            family = families.get(renamed)
            if family is None:
                family = families[renamed] = Metric(renamed, documentation, kind)
            for sample_name, labels, value in samples:
                if sample_name.endswith("_created"):
                    continue
                sample = sample_name.replace("clipserve_", "clipserve_replica_", 1)
                family.add_sample(sample, {**extra, **labels}, value)
        calls = families.setdefault(
            "clipserve_replica_calls_in_flight",
            Metric("clipserve_replica_calls_in_flight", "Calls a replica works on.", "gauge"),
        )
        calls.add_sample(
            "clipserve_replica_calls_in_flight", extra, replica.stats.get("calls_in_flight", 0)
        )
    return list(families.values())


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
