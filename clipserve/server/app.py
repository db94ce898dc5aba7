"""The whole server in one process and one event loop: model -> engine -> service, with the
gRPC (grpc.aio) and HTTP/WebSocket (uvicorn) listeners in front.

``ClipServer`` is the async lifecycle (``start``/``stop``); ``running_server`` runs one in
a background thread for tests and scripts::

    with running_server(ServerConfig(model="hash", host="127.0.0.1",
                                     grpc_port=0, http_port=0)) as server:
        server.grpc_port, server.http_port, server.urls["http"]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import uvicorn

from clipserve.engine import CachedEngine, Engine
from clipserve.engine.health import EngineHealth
from clipserve.engine.metrics import METRICS, Metrics
from clipserve.models.base import EmbeddingModel
from clipserve.server.auth import TokenAuth
from clipserve.server.config import ServerConfig
from clipserve.server.dispatch import Dispatcher
from clipserve.server.grpc_server import GrpcFrontend
from clipserve.server.http_app import HttpState, build_app
from clipserve.server.limits import MiB
from clipserve.server.service import EmbeddingService
from clipserve.server.startup import (
    bind_socket,
    in_daemon_thread,
    limits_from,
    load_configured_model,
    replica_devices,
    uri_policy_from,
    with_cache,
    write_port_file,
)
from clipserve.server.tls import TlsFiles

log = logging.getLogger("clipserve.server")
T = TypeVar("T")


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the process owner decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ClipServer:
    """Loads the model, starts the engine and every configured listener; stops gracefully."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        model: EmbeddingModel | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or METRICS
        self.model = model
        self._owns_model = model is None
        self._replicas: list[EmbeddingModel] = []
        self.engine: Engine | CachedEngine | None = None
        self.service: EmbeddingService | None = None
        self.grpc: GrpcFrontend | None = None
        self.auth: TokenAuth | None = None
        self.http_state: HttpState | None = None
        self._uvicorn: _Uvicorn | None = None
        self._uvicorn_task: asyncio.Task[None] | None = None
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        self._http_socket: socket.socket | None = None
        self._stopped = False
        #: set when the engine turns unhealthy under ``exit_on_stuck``: the process owner
        #: (``clipserve serve``) stops and exits non-zero; ``fatal_reason`` says why
        self.fatal = asyncio.Event()
        self.fatal_reason: str | None = None
        self._background: set[asyncio.Task[None]] = set()

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every port, load and warm up the model, start the engine, then serve."""
        config = self.config
        tls = TlsFiles.from_paths(config.tls_cert, config.tls_key)
        auth = self.auth = TokenAuth(config.auth_token, config.auth_tokens_file)
        try:
            if "grpc" in config.protocols:
                self.grpc = GrpcFrontend(
                    auth,
                    max_message_mb=config.grpc_max_message_mb,
                    max_inflight=config.max_inflight_per_stream,
                    tls=tls,
                    open_health=config.open_health,
                )
                self.grpc_port = self.grpc.bind(config.host, config.grpc_port)
            if config.serves_http:
                self._http_socket = bind_socket(config.host, config.http_port)
                self.http_port = self._http_socket.getsockname()[1]
            dispatcher = Dispatcher(await self._start_engine(), self.metrics)
            if self.grpc is not None:
                await self.grpc.start(dispatcher)
                await self.grpc.set_serving(True)
            if self._http_socket is not None:
                await self._start_http(dispatcher, auth, tls)
        except BaseException:
            await self.stop()
            raise
        for url in self.listening_urls():
            log.info("clipserve: serving %s", url)
        if config.port_file:
            write_port_file(config.port_file, {"grpc": self.grpc_port, "http": self.http_port})

    async def _start_engine(self) -> EmbeddingService:
        config = self.config
        if self.model is None:
            self.model = await in_daemon_thread(load_configured_model, config)
        model = self.model
        await in_daemon_thread(model.warmup)
        log.info("clipserve: model %s loaded (dim %d, backend %s, precision %s)", model.name,
                 model.dim, model.backend, model.precision)  # fmt: skip
        # replicas are real model copies (one per listed device) when the server loads the
        # model itself; an injected model is shared by the replicas' inference threads
        replicas: EmbeddingModel | list[EmbeddingModel] = model
        if self._owns_model and config.replicas > 1:
            self._replicas = [model]
            for device in replica_devices(config)[1:]:
                copy = await in_daemon_thread(load_configured_model, config, device)
                await in_daemon_thread(copy.warmup)
                self._replicas.append(copy)
            replicas = self._replicas
            log.info("clipserve: %d model replicas on %s", len(self._replicas),
                     ", ".join(replica_devices(config)))  # fmt: skip
        engine = Engine(
            replicas,
            max_batch_size=config.max_batch_size,
            max_wait_ms=config.max_wait_ms,
            max_queue_items=config.max_queue_items,
            max_queue_image_mb=config.max_queue_image_mb,
            max_queue_wait_s=config.max_queue_wait_s,
            replicas=config.replicas,
            preprocess_workers=config.preprocess_workers,
            max_decoding_megapixels=config.max_decoding_megapixels,
            forward_timeout_s=config.forward_timeout_s or None,
            metrics=self.metrics,
        )
        self.engine = with_cache(engine, config, self.metrics)
        await self.engine.start()
        self.engine.health.subscribe(self._health_changed)
        self.service = EmbeddingService(
            self.engine,
            model_name=model.name,
            limits=limits_from(config.limits),
            uri_policy=uri_policy_from(config.uri_policy),
        )
        return self.service

    async def _start_http(
        self, dispatcher: Dispatcher, auth: TokenAuth, tls: TlsFiles | None
    ) -> None:
        config = self.config
        self.http_state = HttpState(
            dispatcher=dispatcher,
            service=dispatcher.service,
            auth=auth,
            metrics=self.metrics,
            max_body_bytes=config.http_max_body_mb * MiB,
            serve_http="http" in config.protocols,
            serve_websocket="websocket" in config.protocols,
            serve_ui=config.ui,
            max_inflight=config.max_inflight_per_stream,
        )
        app = build_app(
            self.http_state,
            cors=config.cors,
            open_health=config.open_health,
            open_metrics=config.open_metrics,
        )
        sock = self._http_socket
        assert sock is not None
        sock.listen(2048)
        uv_config = uvicorn.Config(
            app,
            lifespan="off",
            log_level="warning",
            log_config=None,  # uvicorn's records go through clipserve's log format
            access_log=False,  # clipserve writes its own (--access-log), for every protocol
            ssl_certfile=str(tls.cert) if tls else None,
            ssl_keyfile=str(tls.key) if tls else None,
            ws_max_size=config.grpc_max_message_mb * MiB,
            timeout_graceful_shutdown=max(1, int(config.shutdown_grace_s)),
            server_header=False,
        )
        self._uvicorn = _Uvicorn(uv_config)
        self._uvicorn_task = asyncio.create_task(self._uvicorn.serve(sockets=[sock]))
        while not self._uvicorn.started:  # uvicorn offers no "started" event to await
            if self._uvicorn_task.done():
                self._uvicorn_task.result()
                raise OSError(f"the HTTP server on port {self.http_port} did not start")
            await asyncio.sleep(0.01)

    def reload_auth(self) -> tuple[list[str], list[str]]:
        """Read ``auth_tokens_file`` again (SIGHUP): new tokens work at once, removed ones
        are refused and their open streams ended. A bad file keeps the old tokens and
        raises ``ValueError``. Returns the tenant names added and removed."""
        if self.auth is None:
            return [], []
        added, removed = self.auth.reload()
        log.info("clipserve: auth tokens reloaded: %d tenants (added: %s; removed: %s)",
                 len(self.auth.tenants), ", ".join(added) or "none",
                 ", ".join(removed) or "none")  # fmt: skip
        return added, removed

    def _health_changed(self, health: EngineHealth) -> None:
        """The engine turned unhealthy or recovered: gRPC health follows (HTTP health
        routes read it on each request); under ``exit_on_stuck`` the server is done."""
        if self.grpc is not None and not self._stopped:
            task = asyncio.ensure_future(self.grpc.set_serving(health.ok))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        if not health.ok and self.config.exit_on_stuck and not self.fatal.is_set():
            self.fatal_reason = health.reason
            self.fatal.set()

    async def stop(self) -> None:
        """Stop taking requests, let in-flight ones finish (``shutdown_grace_s``), stop.
        Safe to call more than once, and after a failed or interrupted ``start``."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.config.shutdown_grace_s
        if self.http_state is not None:
            self.http_state.ready = False
        jobs = []
        if self.grpc is not None:
            jobs.append(self.grpc.stop(grace))
        if self._uvicorn is not None and self._uvicorn_task is not None:
            jobs.append(self._stop_http(grace))
        await asyncio.gather(*jobs, return_exceptions=True)
        if self._http_socket is not None:
            self._http_socket.close()
        if self.engine is not None:
            await self.engine.stop(drain_timeout=grace)
        if self.model is not None and self._owns_model:
            for owned in self._replicas[1:]:
                await asyncio.to_thread(owned.close)
            await asyncio.to_thread(self.model.close)

    async def _stop_http(self, grace: float) -> None:
        assert self._uvicorn is not None and self._uvicorn_task is not None
        if self.http_state is not None:
            await self.http_state.sessions.drain(grace)
        self._uvicorn.should_exit = True
        await self._uvicorn_task

    # ---- addresses ----------------------------------------------------------------------

    def listening_urls(self, host: str | None = None) -> list[str]:
        """``grpc://host:port``, ``http://...``, ``ws://...`` (TLS forms with TLS)."""
        host = host or self.config.host
        shown = f"[{host}]" if ":" in host else host
        tls = self.config.tls
        urls = []
        if self.grpc_port is not None:
            urls.append(f"{'grpcs' if tls else 'grpc'}://{shown}:{self.grpc_port}")
        if self.http_port is not None:
            if "http" in self.config.protocols:
                urls.append(f"{'https' if tls else 'http'}://{shown}:{self.http_port}")
            if "websocket" in self.config.protocols:
                urls.append(f"{'wss' if tls else 'ws'}://{shown}:{self.http_port}")
        return urls


# ---- in-process helper for tests and scripts -------------------------------------------


@dataclass
class RunningServer:
    """What ``running_server`` yields."""

    server: ClipServer
    grpc_port: int | None
    http_port: int | None
    #: by protocol (``grpc``, ``http``, ``websocket``) and by scheme (``ws``, ``grpcs``...)
    urls: dict[str, str] = field(default_factory=dict)
    loop: asyncio.AbstractEventLoop | None = None

    def call(self, function: Callable[[], T], timeout: float = 60.0) -> T:
        """Run ``function()`` on the server's event loop (its thread); its result."""
        assert self.loop is not None

        async def run() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    @property
    def config(self) -> ServerConfig:
        return self.server.config

    @property
    def model(self) -> EmbeddingModel:
        assert self.server.model is not None
        return self.server.model


def loopback_config(**changes: Any) -> ServerConfig:
    """Loopback, ephemeral ports, the ``hash`` model and a short grace: for tests."""
    values: dict[str, Any] = dict(
        model="hash", host="127.0.0.1", grpc_port=0, http_port=0, shutdown_grace_s=2.0
    )
    values.update(changes)
    return ServerConfig(**values)


@contextlib.contextmanager
def running_server(
    config: ServerConfig | None = None,
    *,
    model: EmbeddingModel | None = None,
    metrics: Metrics | None = None,
    start_timeout: float = 300.0,
) -> Iterator[RunningServer]:
    """Run a whole server in a background thread (own event loop) until the block exits.

    ``config`` defaults to ``loopback_config()``; pass ``model`` to reuse a loaded model.
    """
    config = config or loopback_config()
    server = ClipServer(config, model=model, metrics=metrics)
    started = threading.Event()
    outcome: dict[str, Any] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)

        async def main() -> None:
            stop = asyncio.Event()
            outcome["loop"], outcome["stop"] = loop, stop
            try:
                await server.start()
            except BaseException as exc:
                outcome["error"] = exc
                started.set()
                return
            started.set()
            await stop.wait()
            await server.stop()

        try:
            loop.run_until_complete(main())
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="clipserve-test-server", daemon=True)
    thread.start()
    if not started.wait(start_timeout):
        raise TimeoutError(f"the server did not start within {start_timeout} s")
    if "error" in outcome:
        thread.join()
        raise outcome["error"]
    try:
        yield RunningServer(
            server, server.grpc_port, server.http_port, _urls(server), outcome["loop"]
        )
    finally:
        outcome["loop"].call_soon_threadsafe(outcome["stop"].set)
        thread.join(timeout=config.shutdown_grace_s * 3 + 30)


def _urls(server: ClipServer) -> dict[str, str]:
    host = server.config.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    urls: dict[str, str] = {}
    for url in server.listening_urls(host):
        scheme = url.split("://", 1)[0]
        protocol = {"grpcs": "grpc", "https": "http", "ws": "websocket", "wss": "websocket"}
        urls[scheme] = url
        urls[protocol.get(scheme, scheme)] = url
    return urls
