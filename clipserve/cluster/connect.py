"""Joining a Ray cluster (or starting one), then deploying the model app or attaching to it.

``--ray local`` starts a one-machine cluster in this process, bound to 127.0.0.1.
``--ray auto`` joins the cluster this machine belongs to (``RAY_ADDRESS``, or the one
``ray start`` left a note of). ``--ray <host>:<port>`` joins that head's GCS and
``--ray ray://<host>:<port>`` connects through Ray Client. Before Ray is asked, the address
is checked with a plain TCP connect: with no cluster there, ``ray.init`` would retry for
minutes, and the user gets a clear error naming the address instead.

The app is found by name, so any number of front-ends can serve the same replicas; see
``RaySettings.deploy`` for who deploys it. This module imports Ray only inside functions:
``prepare_environment`` must run before the first ``import ray``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from clipserve.cluster.settings import (
    ADDRESS_AUTO,
    ADDRESS_LOCAL,
    DEPLOY_ATTACH,
    DEPLOY_REPLACE,
    EMBEDDER,
    RaySettings,
)
from clipserve.errors import ServerUnavailableError

log = logging.getLogger("clipserve.cluster")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
#: how long the TCP check and ray.init may take before the address is declared unreachable
CONNECT_TIMEOUT_S = 5.0
#: how long an existing app may stay DEPLOYING before an attaching front-end gives up
ATTACH_TIMEOUT_S = 900.0


@dataclass
class ClusterSession:
    """A front-end's hold on the cluster: the Embedder handle, and what to undo on close."""

    settings: RaySettings
    address: str
    handle: Any
    #: how the app was joined: "deployed", "replaced" or "attached"
    joined: str
    started_local: bool = False
    connected_here: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"address": self.address, "joined": self.joined, **self.info}

    def close(self) -> None:
        """Delete the app if this front-end deployed it (unless ``keep_app``); disconnect."""
        from ray import serve

        owns = self.joined in ("deployed", "replaced") and not self.settings.keep_app
        if self.started_local:
            serve.shutdown()
        elif owns:
            log.info("clipserve: deleting Serve app %r", self.settings.app)
            serve.delete(self.settings.app)
        if self.connected_here:
            import ray

            ray.shutdown()


def prepare_environment(address: str) -> None:
    """Settings Ray reads when it is imported, so this runs before the first ``import ray``.

    - Ray's core installs a crash handler that turns SIGTERM into an abort; the front-end
      owns SIGTERM (it drains in-flight requests, then exits 0), so the handler stays off.
    - A cluster on loopback (``--ray local``, ``127.0.0.1:port``) keeps the driver on
      loopback too: otherwise Ray rewrites 127.0.0.1 to the machine's interface address,
      where a loopback-bound GCS does not listen.
    """
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    if address == ADDRESS_LOCAL or _host_port(address)[0] in LOOPBACK_HOSTS:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def open_session(config: Any, settings: RaySettings) -> ClusterSession:
    """Blocking: connect (unless this process already is), start Serve if needed, then
    deploy or attach per ``settings.deploy``. Raises ``ServerUnavailableError`` naming the
    address when there is no cluster to join."""
    prepare_environment(settings.address)
    import ray

    started_local = connected_here = False
    if ray.is_initialized():
        address = ray.get_runtime_context().gcs_address
    elif settings.address == ADDRESS_LOCAL:
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
        started_local = connected_here = True
        address = ray.get_runtime_context().gcs_address
        log.info("clipserve: started a local Ray cluster at %s", address)
    else:
        address = _connect(settings.address)
        connected_here = True
    info = _cluster_info()
    log.info("clipserve: joined Ray cluster at %s (%d nodes, %g CPUs, %g GPUs)", address,
             info["nodes"], info["cpus"], info["gpus"])  # fmt: skip
    _start_serve()
    joined = _deploy_or_attach(config, settings)
    from ray import serve

    handle = serve.get_deployment_handle(EMBEDDER, settings.app)
    log.info("clipserve: %s Serve app %r (deployment %s)", joined, settings.app, EMBEDDER)
    return ClusterSession(settings, address, handle, joined, started_local, connected_here, info)


def _connect(address: str) -> str:
    import ray

    target = address
    if address == ADDRESS_AUTO:
        from ray._private.services import canonicalize_bootstrap_address

        try:
            target = canonicalize_bootstrap_address(ADDRESS_AUTO) or ""
        except (ConnectionError, ValueError):
            target = ""
        if not target:
            raise ServerUnavailableError(
                "--ray auto found no Ray cluster on this machine (RAY_ADDRESS unset, no "
                "`ray start` here); start one with `ray start --head`, name its address, or "
                "use --ray local"
            )
    host, port = _host_port(target)
    _check_reachable(address, host, port)
    try:
        ray.init(address=target, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ServerUnavailableError(f"could not join the Ray cluster at {address}: {exc}") from exc
    return ray.get_runtime_context().gcs_address if not target.startswith("ray://") else target


def _check_reachable(address: str, host: str, port: int) -> None:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ServerUnavailableError(
            f"no Ray cluster at {address} ({host}:{port}: {reason}); start one with "
            "`ray start --head`, check the address, or use --ray local"
        ) from exc


def _host_port(address: str) -> tuple[str, int]:
    rest = address.split("://", 1)[-1]
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        return rest, 0
    return host.strip("[]"), int(port)


def _cluster_info() -> dict[str, Any]:
    import ray

    resources = ray.cluster_resources()
    alive = [node for node in ray.nodes() if node.get("Alive")]
    return {
        "nodes": len(alive),
        "cpus": float(resources.get("CPU", 0)),
        "gpus": float(resources.get("GPU", 0)),
    }


def _start_serve() -> None:
    """Serve with its own HTTP proxy off (clipserve's front-ends are the way in) when this
    front-end is the first to start it; an already running Serve is left as it is."""
    from ray import serve

    if _serve_running():
        return
    serve.start(proxy_location="Disabled")


def _serve_running() -> bool:
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return False
    return True


def _deploy_or_attach(config: Any, settings: RaySettings) -> str:
    from ray import serve

    status = serve.status().applications.get(settings.app)
    if settings.deploy == DEPLOY_REPLACE or (status is None and settings.deploy != DEPLOY_ATTACH):
        _deploy(config, settings)
        return "replaced" if status is not None else "deployed"
    if status is None:
        raise ServerUnavailableError(
            f"no Serve app {settings.app!r} on the cluster to attach to; start one front-end "
            "with --ray-deploy auto, or deploy it from a Serve config (deploy/serve-config.yaml)"
        )
    _wait_running(settings.app)
    return "attached"


def _deploy(config: Any, settings: RaySettings) -> None:
    from ray import serve

    from clipserve.cluster.app import embedder, replica_spec

    options = settings.deployment_options(config.replicas)
    log.info("clipserve: deploying Serve app %r: %s on %s", settings.app, config.model,
             _replicas_text(options))  # fmt: skip
    application = embedder(replica_spec(config, settings), options)
    try:
        serve.run(application, name=settings.app, route_prefix=None)
    except RuntimeError as exc:
        raise ServerUnavailableError(f"Serve app {settings.app!r} failed to deploy: {exc}") from exc


def _wait_running(app: str) -> None:
    from ray import serve

    deadline = time.monotonic() + ATTACH_TIMEOUT_S
    while True:
        status = serve.status().applications.get(app)
        state = str(getattr(status.status, "value", status.status)) if status else "DELETED"
        if state == "RUNNING":
            return
        if state in ("DEPLOY_FAILED", "DELETING", "DELETED") or time.monotonic() > deadline:
            message = status.message if status else "it was deleted"
            raise ServerUnavailableError(f"Serve app {app!r} is {state}: {message}")
        time.sleep(1.0)  # waiting on another process's deployment: nothing to await


def _replicas_text(options: dict[str, Any]) -> str:
    scaling = options.get("autoscaling_config")
    if scaling:
        return f"{scaling.get('min_replicas', 1)}..{scaling.get('max_replicas', 1)} replicas"
    count = options.get("num_replicas", 1)
    return f"{count} replica{'s' if count != 1 else ''}"
