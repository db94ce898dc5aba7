"""The Serve application: the ``Embedder`` deployment (model replicas), optionally behind
``Frontend`` replicas (clipserve's own gRPC/HTTP/WebSocket servers, at most one per node).

``build`` is the application builder a Serve config names (``import_path:
clipserve.cluster.app:build``, its ``args`` a ``ReplicaSpec`` plus an optional ``frontend``
mapping); ``clipserve serve --ray`` deploys the same application from Python.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from clipserve.cluster.frontend_replica import FrontendReplica
from clipserve.cluster.replica import EmbedderReplica, ReplicaSpec
from clipserve.cluster.settings import EMBEDDER, FRONTEND, RaySettings

#: Frontend replicas bind fixed ports, so two cannot share a node
FRONTEND_OPTIONS: dict[str, Any] = {
    "max_replicas_per_node": 1,
    "logging_config": {"enable_access_log": False},
}


def replica_spec(config: Any, settings: RaySettings) -> ReplicaSpec:
    """A ``ServerConfig``'s model and engine settings, as each replica needs them."""
    chunk = settings.call_items(config.max_batch_size)
    return ReplicaSpec(
        model=config.model,
        backend=config.backend,
        device=config.device,
        precision=config.precision,
        gpu_decode=config.gpu_decode,
        cuda_graphs=config.cuda_graphs,
        cache_dir=config.cache_dir,
        max_batch_size=config.max_batch_size,
        max_wait_ms=config.max_wait_ms,
        preprocess_workers=config.preprocess_workers,
        max_queue_items=settings.max_ongoing_requests * chunk,
        max_queue_image_mb=config.max_queue_image_mb,
        max_decoding_megapixels=config.max_decoding_megapixels,
        forward_timeout_s=config.forward_timeout_s or None,
    )


def embedder(spec: ReplicaSpec, options: dict[str, Any] | None = None) -> Application:
    deployment = serve.deployment(EmbedderReplica, name=EMBEDDER)
    deployment = deployment.options(**(options or {"logging_config": {"enable_access_log": False}}))
    return deployment.bind(spec.as_args())


def build(args: dict[str, Any]) -> Application:
    """The application builder for Serve configs (see the module docstring)."""
    args = dict(args or {})
    frontend = args.pop("frontend", None)
    application = embedder(ReplicaSpec.from_args(args))
    if frontend is None:
        return application
    if not isinstance(frontend, dict):
        raise ValueError(f"args.frontend must be a mapping of clipserve settings, got {frontend!r}")
    deployment = serve.deployment(FrontendReplica, name=FRONTEND).options(**FRONTEND_OPTIONS)
    return deployment.bind(application, frontend)
