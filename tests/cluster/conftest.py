"""A real two-node Ray cluster on loopback, one per test module, and front-ends on it.

The cluster is two Ray nodes in this machine (``ray.cluster_utils.Cluster``: a head and a
worker, each its own raylet), both bound to 127.0.0.1, with fake CPU counts so replicas
fit on two real cores. Ray keeps its sessions and its "current cluster" note in a private
temporary directory, so nothing here touches another run's Ray. The test process is the
driver; front-ends run in-process (``running_server``) or as ``clipserve serve`` children.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

# Read by Ray when it is imported, so set before anything imports it. Loopback only, a
# private temp dir (short: Ray's socket paths must stay under 108 bytes), no usage stats,
# quick autoscaling metrics, and patience with a busy two-core machine (queue-length probes).
RAY_TMP = tempfile.mkdtemp(prefix="csray", dir="/tmp")
os.environ.update(
    RAY_TMPDIR=RAY_TMP,
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
    RAY_USAGE_STATS_ENABLED="0",
    RAY_DISABLE_FAILURE_SIGNAL_HANDLER="1",
    RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S="1.0",
    RAY_SERVE_MAX_QUEUE_LENGTH_RESPONSE_DEADLINE_S="2.0",
    RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S="0.5",
    RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S="0.5",
)
os.environ.pop("RAY_ADDRESS", None)

ray = pytest.importorskip("ray", reason="the Ray tests need clipserve[ray]")
from prometheus_client import CollectorRegistry  # noqa: E402
from ray import serve  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from clipserve.cluster.connect import ClusterSession, open_session  # noqa: E402
from clipserve.cluster.frontend import ray_engine_factory  # noqa: E402
from clipserve.cluster.settings import ray_settings_of  # noqa: E402
from clipserve.engine.metrics import Metrics  # noqa: E402
from clipserve.server.app import RunningServer, loopback_config, running_server  # noqa: E402
from tests import waiting  # noqa: E402
from tests.compat.conftest import (  # noqa: E402, F401 - the compat fixtures, for test_clip_client_ray
    builtin_model,
    clip_client_python,
    compat_cert,
    photos,
)

#: fake CPUs per node: replicas ask for one each, and the machine has two real cores
NODE_CPUS = 4


@dataclass
class TwoNodes:
    cluster: Any
    head: Any
    worker: Any

    @property
    def address(self) -> str:
        return self.cluster.address

    def node_ids(self) -> set[str]:
        return {self.head.node_id, self.worker.node_id}


@contextlib.contextmanager
def two_node_cluster(
    num_gpus: int = 0, resources: dict[str, float] | None = None
) -> Iterator[TwoNodes]:
    """Head + worker on 127.0.0.1 (``num_gpus`` and ``resources`` per node: fake ones are
    fine, nothing checks them against hardware); this process joins as the driver; Serve
    runs without its HTTP proxy (clipserve's front-ends are the way in)."""
    node: dict[str, Any] = {
        "num_cpus": NODE_CPUS,
        "num_gpus": num_gpus,
        "object_store_memory": 96 << 20,
    }
    if resources:
        node["resources"] = dict(resources)
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        worker = cluster.add_node(**node)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.WARNING)
        serve.start(proxy_location="Disabled")
        yield TwoNodes(cluster, cluster.head_node, worker)
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[TwoNodes]:
    """One two-node cluster for the test module."""
    with two_node_cluster() as nodes:
        yield nodes


def pytest_sessionfinish(session: pytest.Session) -> None:
    shutil.rmtree(RAY_TMP, ignore_errors=True)


def ray_config(
    two_nodes: TwoNodes, app: str, *, model: str = "hash", cache_mb: float = 0, **ray: Any
) -> Any:
    """A loopback front-end config whose model runs as the Serve app ``app``; without the
    embedding cache unless asked (these tests watch what reaches the replicas)."""
    section = {"address": two_nodes.address, "app": app, "unavailable_after_s": 5.0}
    section.update(monitor_interval_s=0.5, **ray)
    return loopback_config(model=model, ray=section, cache_mb=cache_mb)


@contextlib.contextmanager
def front_end(config: Any) -> Iterator[tuple[RunningServer, ClusterSession]]:
    """A whole clipserve front-end in this process, on the app ``config`` names (deployed
    or attached per ``ray.deploy``), with its own metrics registry. The app is deleted on
    exit when this front-end deployed it."""
    session = open_session(config, ray_settings_of(config))
    try:
        metrics = Metrics(CollectorRegistry())
        factory = ray_engine_factory(session)
        with running_server(config, metrics=metrics, engine_factory=factory) as server:
            yield server, session
    finally:
        session.close()


def deployment_details(app: str, deployment: str = "Embedder") -> dict[str, Any]:
    """The Serve controller's view of one deployment (replicas with node ids, target)."""
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    return details["applications"][app]["deployments"][deployment]


def running_replicas(app: str) -> list[dict[str, Any]]:
    return [r for r in deployment_details(app)["replicas"] if r["state"] == "RUNNING"]


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 180.0) -> Any:
    """``tests.waiting.wait_until`` with a failsafe for cluster events (a replica starting
    on a busy two-core machine can take a minute); returns the condition's value."""
    return waiting.wait_until(condition, what, timeout=timeout, poll_s=0.1)
