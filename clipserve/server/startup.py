"""Start-up helpers for ``ClipServer``: loading the model off the event loop, binding the
HTTP socket early, turning YAML mappings into ``Limits``/``UriPolicy``, the port file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from clipserve.engine import CachedEngine, EmbeddingCache, EncodingEngine
from clipserve.engine.inference import settle
from clipserve.engine.metrics import Metrics
from clipserve.models import devices
from clipserve.models.base import EmbeddingModel
from clipserve.server.config import ServerConfig
from clipserve.server.limits import Limits, MiB
from clipserve.server.uri_policy import UriPolicy

T = TypeVar("T")


def replica_devices(config: ServerConfig) -> list[str]:
    """The device of each replica: ``--device cuda:0,cuda:1`` spreads replicas over the
    listed devices in turn; a single device hosts every replica."""
    return devices.replica_devices(config.device, config.replicas)


def device_options(config: ServerConfig) -> devices.DeviceOptions:
    return devices.DeviceOptions(gpu_decode=config.gpu_decode, cuda_graphs=config.cuda_graphs)


def load_configured_model(config: ServerConfig, device: str | None = None) -> EmbeddingModel:
    from clipserve.models.registry import load_model

    model = load_model(
        config.model,
        backend=config.backend,
        device=device or replica_devices(config)[0],
        cache_dir=config.cache_dir,
        precision=config.precision,
    )
    model.exact_preprocess = config.exact_preprocess
    model.use_device_options(device_options(config))
    return model


async def in_daemon_thread(function: Callable[..., T], *args: Any) -> T:
    """Run slow start-up work (model loading) in a daemon thread: unlike ``to_thread``, a
    signal during start-up can end the process without waiting for it to finish."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def work() -> None:
        try:
            result = function(*args)
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # the loop may be gone already
                loop.call_soon_threadsafe(settle, future, None, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, future, result, None)

    threading.Thread(target=work, name="clipserve-load", daemon=True).start()
    return await future


def with_cache(engine: EncodingEngine, config: ServerConfig, metrics: Metrics) -> EncodingEngine:
    """``engine`` behind the embedding cache the config asks for (itself if none)."""
    if config.cache_mb <= 0 and not config.cache_disk_dir:
        return engine
    cache = EmbeddingCache(
        int(config.cache_mb * MiB),
        disk_dir=config.cache_disk_dir,
        disk_max_bytes=int(config.cache_disk_mb * MiB),
    )
    return CachedEngine(engine, cache, metrics)


def limits_from(value: Limits | Mapping[str, Any] | None) -> Limits | None:
    if value is None or isinstance(value, Limits):
        return value
    if isinstance(value, Mapping):
        return Limits(**dict(value))
    raise ValueError(f"limits must be a mapping of Limits fields, got {value!r}")


def uri_policy_from(value: UriPolicy | Mapping[str, Any] | None) -> UriPolicy | None:
    if value is None or isinstance(value, UriPolicy):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"uri_policy must be a mapping of UriPolicy fields, got {value!r}")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    return UriPolicy(**fields)


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"HTTP/WebSocket could not bind {host}:{port}: {exc.strerror}") from exc
    sock.setblocking(False)
    return sock


def write_port_file(path: str, ports: dict[str, int | None]) -> None:
    """Written atomically, so a reader never sees half a file."""
    target = Path(path)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(ports), encoding="utf-8")
    temp.replace(target)
