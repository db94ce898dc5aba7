"""``clipserve serve --ray ...``: this process joins the cluster, deploys the model app or
attaches to it, and serves gRPC, HTTP and WebSocket exactly as the single-process server,
with a ``RayEngine`` in place of the local engine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from clipserve.cluster.connect import ClusterSession, open_session
from clipserve.cluster.engine import RayEngine
from clipserve.cluster.settings import RaySettings, ray_settings_of
from clipserve.engine.metrics import Metrics
from clipserve.server.app import ClipServer
from clipserve.server.config import ServerConfig

log = logging.getLogger("clipserve.cluster")
T = TypeVar("T")


class RayThread:
    """One daemon thread for every blocking Ray call of a front-end, alive until ``close``.

    Ray starts a local cluster's processes with ``PR_SET_PDEATHSIG``: they die with the
    *thread* that started them, so that thread must outlive the cluster. Being a daemon
    thread, it never holds the process up at exit (a signal during start-up ends it), and
    not being the main thread, Ray installs no SIGTERM handler of its own over ours."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._work, name="clipserve-ray", daemon=True).start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            function, args, future = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(function(*args))
                except BaseException as exc:
                    future.set_exception(exc)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((function, args, future))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._jobs.put(None)


def ray_engine_factory(session: ClusterSession) -> Any:
    """An ``EngineFactory`` for ``ClipServer``: a ``RayEngine`` on the session's handle."""

    def build(config: ServerConfig, metrics: Metrics) -> RayEngine:
        return RayEngine(
            session.handle,
            session.settings,
            max_queue_items=config.max_queue_items,
            max_queue_wait_s=config.max_queue_wait_s,
            metrics=metrics,
            cluster=session.describe(),
        )

    return build


class ClusterServer:
    """The same lifecycle as ``ClipServer`` (``start``/``stop``), on a Ray cluster."""

    def __init__(self, config: ServerConfig, *, metrics: Metrics | None = None) -> None:
        settings = ray_settings_of(config)
        if settings is None:
            raise ValueError("ClusterServer needs a ray address (--ray or ray.address)")
        self.config = config
        self.settings: RaySettings = settings
        self.metrics = metrics
        self.session: ClusterSession | None = None
        self.server: ClipServer | None = None
        self._ray = RayThread()

    async def start(self) -> None:
        try:
            self.session = await self._ray.run(open_session, self.config, self.settings)
            self.server = ClipServer(
                self.config, metrics=self.metrics, engine_factory=ray_engine_factory(self.session)
            )
            await self.server.start()
        except BaseException:
            await self.stop()  # delete an app deployed in vain, leave the cluster
            raise
        engine = self.server.engine
        assert engine is not None
        served = engine.model.name
        if self.session.joined == "attached" and served != self.config.model:
            log.warning(
                "clipserve: the Serve app %r serves %s; serving that (this front-end was "
                "configured for %s)",
                self.settings.app,
                served,
                self.config.model,
            )
        chunk = self.settings.call_items(engine.max_batch_size)
        log.info("clipserve: %s on the cluster (dim %d), %d items per call", served,
                 engine.model.dim, chunk)  # fmt: skip

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        if self.session is not None:
            session, self.session = self.session, None
            await self._ray.run(session.close)
        self._ray.close()

    def reload_auth(self) -> tuple[list[str], list[str]]:
        """SIGHUP: ``ClipServer.reload_auth`` (the tokens file read again)."""
        return self.server.reload_auth() if self.server else ([], [])

    @property
    def fatal(self) -> asyncio.Event:
        """Set when the engine turns unhealthy under ``exit_on_stuck`` (on Ray: no replica
        reachable); ``clipserve serve`` then exits non-zero. Read after ``start``."""
        assert self.server is not None, "start the server first"
        return self.server.fatal

    @property
    def fatal_reason(self) -> str | None:
        return self.server.fatal_reason if self.server else None

    @property
    def grpc_port(self) -> int | None:
        return self.server.grpc_port if self.server else None

    @property
    def http_port(self) -> int | None:
        return self.server.http_port if self.server else None
