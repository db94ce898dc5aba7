"""A front-end as a Serve deployment: clipserve's own gRPC/HTTP/WebSocket server inside the
cluster, serving the Embedder replicas through a ``RayEngine``.

Ray Serve's proxies do not carry bidirectional gRPC streams, so this replica opens its own
ports (the ``frontend`` settings: host, ports, TLS, auth...) on its node; Serve keeps the
wanted number of them running, at most one per node, and restarts one that dies. A load
balancer (a Kubernetes Service) spreads clients over them.
"""

from __future__ import annotations

import contextlib
from typing import Any

from clipserve.cluster.engine import RayEngine
from clipserve.cluster.settings import RaySettings


class FrontendReplica:
    """The Serve deployment class (see ``app.build``)."""

    def __init__(self, embedder: Any, frontend: dict[str, Any]) -> None:
        from ray import serve

        from clipserve.server.app import running_server
        from clipserve.server.config import build_config

        settings = dict(frontend)
        section = dict(settings.pop("ray", None) or {})
        section["app"] = serve.get_replica_context().app_name
        self.ray_settings = RaySettings.from_mapping(section)
        self.config = build_config(overrides=settings)  # the token may come from the env
        self._stack = contextlib.ExitStack()
        self.server = self._stack.enter_context(
            running_server(self.config, engine_factory=self._engine(embedder))
        )

    def _engine(self, embedder: Any) -> Any:
        def build(config: Any, metrics: Any) -> RayEngine:
            return RayEngine(
                embedder,
                self.ray_settings,
                max_queue_items=config.max_queue_items,
                max_queue_wait_s=config.max_queue_wait_s,
                metrics=metrics,
                cluster={"front_end": "Frontend deployment"},
            )

        return build

    def urls(self) -> dict[str, Any]:
        """Where this front-end listens (its node's address for wildcard hosts)."""
        import ray

        node = ray.util.get_node_ip_address()
        host = self.config.host
        shown = node if host in ("0.0.0.0", "::", "") else host
        return {
            "node_ip": node,
            "grpc_port": self.server.grpc_port,
            "http_port": self.server.http_port,
            "urls": self.server.server.listening_urls(shown),
        }

    def check_health(self) -> None:
        if self.server.server.engine is None or not self.server.server.engine.running:
            raise RuntimeError("the front-end's engine is not running")

    def __del__(self) -> None:
        stack = self.__dict__.pop("_stack", None)
        if stack is not None:
            stack.close()
