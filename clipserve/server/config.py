"""Server configuration: one dataclass, filled from defaults < YAML file < environment < flags
(the command line reads ``CLIPSERVE_<FLAG>`` variables for every flag: ``cli_options``).

The YAML file is a flat mapping of the field names below (dashes or underscores), e.g.::

    model: builtin
    grpc_port: 51000
    http_port: 51001
    protocols: [grpc, http, websocket]
    tls_cert: /etc/clipserve/cert.pem
    tls_key: /etc/clipserve/key.pem
    cors: ["https://example.com"]
    limits: {max_docs_per_request: 1024}

The auth token is best given through the environment (``CLIPSERVE_AUTH_TOKEN``) so it
stays out of process listings and config files; ``build_config`` reads that one variable
itself, for programs that build a configuration without the command line.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipserve.models.devices import GPU_DECODE_MODES, parse_devices
from clipserve.models.precision import BACKEND_OF, BACKENDS, FLOAT, PRECISIONS, check_precision
from clipserve.server.limits import Limits
from clipserve.server.logs import FORMATS as LOG_FORMATS
from clipserve.server.logs import LEVELS as LOG_LEVELS
from clipserve.server.uri_policy import UriPolicy

PROTOCOLS = ("grpc", "http", "websocket")
AUTH_TOKEN_ENV = "CLIPSERVE_AUTH_TOKEN"


@dataclass
class ServerConfig:
    """Everything ``clipserve serve`` can be told. Defaults are the CLI's defaults."""

    model: str = "builtin"
    backend: str = "torch"
    #: ``cpu``, ``cuda``, ``cuda:N``, ``auto`` or a comma list for replicas; see
    #: ``clipserve.models.devices``
    device: str = "cpu"
    #: ``float`` (float32 on CPU, float16 on CUDA), ``fp32``, ``fp16`` (CUDA), ``bf16``
    #: (backend torch) or ``int8`` (backend onnx on CPU); see ``clipserve.models.precision``
    precision: str = FLOAT
    #: JPEG decoding on the GPU (nvJPEG): ``auto`` (big JPEGs, where it can run), ``on``, ``off``
    gpu_decode: str = "auto"
    #: replay the image tower as CUDA graphs (opt-in: unmeasured; see docs/gpu.md)
    cuda_graphs: bool = False
    cache_dir: str | None = None
    host: str = "0.0.0.0"
    grpc_port: int = 51000
    #: HTTP and WebSocket share this port (WebSocket lives at path ``/``)
    http_port: int = 51001
    protocols: tuple[str, ...] = PROTOCOLS
    tls_cert: str | None = None
    tls_key: str | None = None
    auth_token: str | None = None
    #: YAML/JSON map of tenant name -> token (or its SHA-256, and a rate limit); reloaded
    #: on SIGHUP (``clipserve.server.tenants``)
    auth_tokens_file: str | None = None
    open_health: bool = True
    open_metrics: bool = True
    #: allowed CORS origins (``["*"]`` for any); empty means no CORS headers
    cors: tuple[str, ...] = ()
    #: the web page at ``GET /`` (``--no-ui`` turns it off; ``/static/clipserve.js`` stays)
    ui: bool = True
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    #: a stock clip-client keeps up to 100 requests in flight over HTTP: 6,400 items at its
    #: common batch size of 64, 12,800 at 128; the queue takes one such client whole
    max_queue_items: int = 16384
    #: seconds a call that does not fit in the queue waits for room before it is refused
    #: (a burst becomes latency, not errors; 0 refuses at once)
    max_queue_wait_s: float = 30.0
    #: MiB of image bytes (encoded files, tensors) admitted and unanswered: bounds memory
    #: under big photos where ``max_queue_items`` alone would not (docs/reliability.md)
    max_queue_image_mb: float = 512.0
    #: decoded image pixels the preprocessing threads may hold at once (counted at the size
    #: an image is actually decoded at); one larger image still decodes, alone
    max_decoding_megapixels: float = 48.0
    #: a forward pass running longer makes the server unhealthy (503 / NOT_SERVING) until
    #: it returns; 0 turns the watchdog off
    forward_timeout_s: float = 300.0
    #: exit (status 70) when the server turns unhealthy, for a supervisor to restart it
    exit_on_stuck: bool = False
    replicas: int = 1
    #: image decoding / tokenising threads (None: one per CPU)
    preprocess_workers: int | None = None
    #: decode every image at full size and preprocess exactly like the model's reference
    #: (slow on big photos); by default big photos are decoded straight to ~2x the input
    exact_preprocess: bool = False
    #: in-memory embedding cache in MiB (0: off); see ``clipserve.engine.cache``
    cache_mb: float = 128.0
    #: directory of an on-disk embedding cache that survives restarts (None: memory only)
    cache_disk_dir: str | None = None
    cache_disk_mb: float = 2048.0
    grpc_max_message_mb: int = 256
    http_max_body_mb: int = 256
    #: requests one gRPC stream / WebSocket connection may have in flight at once
    max_inflight_per_stream: int = 64
    #: seconds to let in-flight requests finish on shutdown
    shutdown_grace_s: float = 10.0
    port_file: str | None = None
    #: ``Limits`` or a mapping of its fields (YAML); None: its defaults
    limits: Limits | Mapping[str, Any] | None = None
    #: ``UriPolicy`` or a mapping of its fields (YAML); None: its defaults (public http(s)
    #: addresses are fetched, nothing private, no local files; data: URIs always work)
    uri_policy: UriPolicy | Mapping[str, Any] | None = None
    log_level: str = "info"
    #: the Ray path (``clipserve.cluster.settings.RaySettings`` fields); with an ``address``
    #: the model runs as replicas on a Ray cluster (None: this process runs it)
    ray: Any = None
    #: ``text`` (timestamp, level, message) or ``json`` (one object per line)
    log_format: str = "text"
    #: one log line per request: method, endpoint, protocol, documents, status, duration,
    #: client (``clipserve.server.logs``)
    access_log: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.protocols = _as_tuple(self.protocols)
        self.cors = _as_tuple(self.cors)
        self.validate()

    def validate(self) -> None:
        unknown = sorted(set(self.protocols) - set(PROTOCOLS))
        if unknown or not self.protocols:
            raise ValueError(
                f"protocols must be a non-empty subset of {', '.join(PROTOCOLS)}; got "
                f"{', '.join(self.protocols) or 'none'}"
            )
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        needed = BACKEND_OF.get(self.precision)
        if needed is not None and self.backend != needed:
            raise ValueError(
                f"precision {self.precision} needs backend {needed}, not {self.backend!r}"
            )
        for device in parse_devices(self.device):
            check_precision(self.precision, self.backend, device)
        if self.gpu_decode not in GPU_DECODE_MODES:
            raise ValueError(
                f"gpu_decode must be one of {', '.join(GPU_DECODE_MODES)}, got {self.gpu_decode!r}"
            )
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("TLS needs both a certificate (tls_cert) and a key (tls_key)")
        for name in ("grpc_port", "http_port"):
            port = getattr(self, name)
            if not 0 <= int(port) <= 65535:
                raise ValueError(f"{name} must be within 0..65535, got {port}")
        positive = ("max_batch_size", "max_queue_items", "replicas", "grpc_max_message_mb")
        positive += ("http_max_body_mb", "max_inflight_per_stream")
        if self.preprocess_workers is not None:
            positive += ("preprocess_workers",)
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.log_format not in LOG_FORMATS or self.log_level.lower() not in LOG_LEVELS:
            raise ValueError(
                f"log_format must be one of {', '.join(LOG_FORMATS)} and log_level one of "
                f"{', '.join(LOG_LEVELS)}; got {self.log_format!r}, {self.log_level!r}"
            )
        if self.cache_mb < 0 or self.cache_disk_mb <= 0:
            raise ValueError("cache_mb must be >= 0 (0: off) and cache_disk_mb > 0")
        if self.max_wait_ms < 0 or self.shutdown_grace_s < 0 or self.max_queue_wait_s < 0:
            raise ValueError("max_wait_ms, max_queue_wait_s and shutdown_grace_s must be >= 0")
        if self.ray is not None and not isinstance(self.ray, Mapping):
            raise ValueError(f"ray must be a mapping of Ray settings, got {self.ray!r}")
        if self.ray and not self.ray.get("address"):
            raise ValueError("ray settings need ray.address (auto, local, <head>:<port>)")
        if self.forward_timeout_s < 0 or self.max_queue_image_mb <= 0:
            raise ValueError("forward_timeout_s must be >= 0 and max_queue_image_mb > 0")
        if self.max_decoding_megapixels <= 0:
            raise ValueError("max_decoding_megapixels must be > 0")
        if self.exit_on_stuck and not self.forward_timeout_s:
            raise ValueError("exit_on_stuck needs the watchdog: set forward_timeout_s > 0")

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert and self.tls_key)

    @property
    def serves_http(self) -> bool:
        """Whether the HTTP/WebSocket listener is needed at all."""
        return "http" in self.protocols or "websocket" in self.protocols

    def replace(self, **changes: Any) -> ServerConfig:
        return dataclasses.replace(self, **changes)

    def public_dict(self) -> dict[str, Any]:
        """The configuration with the token masked (for logs and ``/health``)."""
        out = dataclasses.asdict(self)
        if out.get("auth_token"):
            out["auth_token"] = "***"
        return out


FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(ServerConfig))
#: settings that are mappings of their own (merged field by field across sources)
NESTED = ("limits", "uri_policy", "ray")
#: YAML keys spelled like their flags, accepted for the field names
ALIASES = {"max_batch_wait_ms": "max_wait_ms", "shutdown_grace": "shutdown_grace_s"}


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML config file into field values (keys normalised to underscores)."""
    import yaml

    text = Path(path).read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: the config file must hold a mapping of settings")
    values = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        values[ALIASES.get(name, name)] = value
    unknown = sorted(set(values) - FIELD_NAMES)
    if unknown:
        raise ValueError(f"{path}: unknown setting(s): {', '.join(unknown)}")
    return values


def build_config(
    *,
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServerConfig:
    """Defaults < YAML file < ``CLIPSERVE_AUTH_TOKEN`` < explicit overrides (flags)."""
    values: dict[str, Any] = {}
    if config_file:
        values.update(load_yaml(config_file))
    env = os.environ if environ is None else environ
    if env.get(AUTH_TOKEN_ENV):
        values["auth_token"] = env[AUTH_TOKEN_ENV]
    for key, value in (overrides or {}).items():
        if key in NESTED and isinstance(value, Mapping) and isinstance(values.get(key), Mapping):
            value = {**values[key], **value}  # a flag changes one field of a YAML mapping
        values[key] = value
    unknown = sorted(set(values) - FIELD_NAMES)
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(unknown)}")
    return ServerConfig(**values)


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(str(part) for part in value)
