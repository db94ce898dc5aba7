"""What ``clipserve`` accepts: the commands and their flags, in the groups ``serve --help``
shows (model, network, TLS and auth, limits, engine, embedding cache, logs, Ray cluster). A
new setting is a flag here and a ``ServerConfig`` field of the same name (its default then shows in
``--help`` and its ``CLIPSERVE_<FLAG>`` variable works by itself: ``cli_options``); its row
goes to docs/serving.md, which a test checks."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

from clipserve import __version__
from clipserve.cli_options import HelpFormatter, show_defaults
from clipserve.cluster.settings import DEFAULT_APP, DEPLOY_MODES
from clipserve.server import logs
from clipserve.server.config import (
    AUTH_TOKEN_ENV,
    BACKENDS,
    GPU_DECODE_MODES,
    PRECISIONS,
    PROTOCOLS,
    ServerConfig,
)
from clipserve.server.limits import Limits
from clipserve.server.uri_policy import UriPolicy

DEFAULTS = ServerConfig()
#: exit status of ``serve --exit-on-stuck`` when the engine turned unhealthy (EX_SOFTWARE)
EXIT_STUCK = 70
SERVE_EPILOG = f"""\
environment:
  Every flag can also be set as CLIPSERVE_ + the flag in capitals, dashes as underscores:
  --max-batch-size 64 is CLIPSERVE_MAX_BATCH_SIZE=64, --no-fetch-uris is CLIPSERVE_FETCH_URIS=0
  (switches take 1/0, true/false, yes/no, on/off), --config FILE is CLIPSERVE_CONFIG=FILE.
  Precedence: defaults < --config YAML < CLIPSERVE_* variables < flags.
  ${AUTH_TOKEN_ENV} keeps the token out of process listings. Exception: CLIPSERVE_CACHE_DIR
  is not --cache-dir; it moves only clipserve's own cache (exports, tables), not the
  Hugging Face hub cache (HF_HOME, HF_HUB_CACHE).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipserve",
        description="CLIP-style image and text embeddings as a service: gRPC, HTTP,\n"
        "WebSocket and an OpenAI-compatible /v1/embeddings, from one process.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"clipserve {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the server (gRPC, HTTP and WebSocket)",
        description="Serve an embedding model over gRPC, HTTP and WebSocket.",
        epilog=SERVE_EPILOG,
        formatter_class=HelpFormatter,
        argument_default=argparse.SUPPRESS,  # only settings actually given override the YAML
    )
    _serve_flags(serve)
    show_defaults(serve, serve_defaults())
    models = commands.add_parser(
        "models",
        help="list the model names serve takes, and which load without network",
        formatter_class=HelpFormatter,
    )
    models.add_argument("--cache-dir", metavar="DIR", help="the --cache-dir serve would use")
    commands.add_parser(
        "doctor",
        help="show this CPU's features and which precisions are fast, slow or refused here",
        formatter_class=HelpFormatter,
    )
    prepare = commands.add_parser(
        "prepare",
        help="download, export and quantize a model into the caches, then exit",
        description="Load a model as `serve` would (downloading weights, exporting ONNX and "
        "quantizing to int8 as needed), encode one text and one image, list the cached files "
        "and exit: for image builds and offline machines. Reads the same CLIPSERVE_* "
        "variables as serve.",
        formatter_class=HelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    _model_flags(prepare.add_argument_group("model"))
    show_defaults(prepare, serve_defaults())
    return parser


# ---- the flags ------------------------------------------------------------------------


def _serve_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", dest="config_file", metavar="FILE", help="YAML file of settings (docs/cli.md)"
    )
    _model_flags(p.add_argument_group("model"))
    _network_flags(p.add_argument_group("network"))
    _security_flags(p.add_argument_group("TLS and auth"))
    _limit_flags(p.add_argument_group("limits"))
    _engine_flags(p.add_argument_group("engine"))
    _cache_flags(p.add_argument_group("embedding cache"))
    _log_flags(p.add_argument_group("logs"))
    _ray_flags(
        p.add_argument_group(
            "Ray cluster",
            'replicas as a Ray Serve deployment (pip install "clipserve[server,ray]"; '
            "docs/cluster.md)",
        )
    )


def _model_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--model", metavar="NAME", help="model name (`clipserve models`) or directory")
    g.add_argument("--backend", choices=BACKENDS, help="inference backend")
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="float (float32 on CPU, float16 on CUDA), fp32, fp16 (CUDA), bf16 (backend "
        "torch, hardware with bf16), int8 (backend onnx, CPU)",
    )
    g.add_argument(
        "--device",
        metavar="DEVICE",
        help="cpu, cuda, cuda:N or auto (CUDA where torch sees a GPU); a comma list "
        "(cuda:0,cuda:1) spreads --replicas",
    )
    g.add_argument(
        "--gpu-decode",
        choices=GPU_DECODE_MODES,
        help="decode JPEGs on the GPU (nvJPEG via torchvision): auto for big JPEGs where it "
        "can run, on, off",
    )
    g.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="replay the image tower as CUDA graphs (opt-in, unmeasured: docs/gpu.md)",
    )
    g.add_argument("--cache-dir", metavar="DIR", help="root of both caches: DIR/hub, DIR/onnx")


def _network_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--host", metavar="ADDRESS", help="address to bind")
    g.add_argument("--grpc-port", type=int, help="gRPC port (0: any free port)")
    g.add_argument("--http-port", type=int, help="HTTP + WebSocket port (0: any free port)")
    g.add_argument("--protocols", metavar="LIST", help=f"comma-separated subset of "
                   f"{','.join(PROTOCOLS)}")  # fmt: skip
    g.add_argument("--cors", metavar="ORIGINS", help="comma-separated allowed CORS origins, "
                   "'*' for any; none: no CORS headers")  # fmt: skip
    g.add_argument(
        "--ui",
        action=argparse.BooleanOptionalAction,
        help="the web page at / (--no-ui keeps only /static/clipserve.js)",
    )
    g.add_argument("--port-file", help='write {"grpc": port, "http": port} here once ready')


def _security_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--tls-cert", metavar="FILE", help="PEM certificate: TLS on every listener")
    g.add_argument("--tls-key", metavar="FILE", help="PEM private key for --tls-cert")
    g.add_argument(
        "--auth-token", metavar="TOKEN", help=f"token clients must send (better: ${AUTH_TOKEN_ENV})"
    )
    g.add_argument(
        "--auth-tokens-file",
        help="YAML/JSON map of tenant name -> token (or 'sha256:<hex>', or a mapping with a "
        "rate limit); reloaded on SIGHUP (docs/reliability.md#tokens-per-tenant)",
    )
    _pair(g, "health", "/health, /readyz and the gRPC health service", DEFAULTS.open_health)
    _pair(g, "metrics", "/metrics", DEFAULTS.open_metrics)


def _limit_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--max-docs-per-request", type=int, help="refuse requests with more documents")
    g.add_argument("--http-max-body-mb", type=int, help="HTTP body limit")
    g.add_argument("--grpc-max-message-mb", type=int, help="gRPC (and WebSocket frame) limit")
    g.add_argument(
        "--max-inflight-per-stream", type=int, help="concurrent requests per gRPC stream/WebSocket"
    )
    g.add_argument(
        "--fetch-uris",
        action=argparse.BooleanOptionalAction,
        help="fetch the public http(s) image URLs documents name (data: URIs always work)",
    )
    g.add_argument(
        "--uri-allowed-hosts",
        help="fetch URIs only from these comma-separated hosts, '*.example.com' for subdomains",
    )
    g.add_argument(
        "--uri-allow-private",
        action="store_true",
        help="also fetch from loopback, private and link-local addresses (an image store on "
        "10.x, say); cloud metadata addresses stay refused",
    )


def _engine_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--max-batch-size", type=int, help="items per forward pass")
    g.add_argument(
        "--max-batch-wait-ms", dest="max_wait_ms", type=float, help="how long a batch waits to fill"
    )
    g.add_argument("--max-queue-items", type=int, help="queued items per modality")
    g.add_argument(
        "--max-queue-wait-s",
        type=float,
        help="how long a request waits for room in a full queue before it is refused (0: "
        "refuse at once)",
    )
    g.add_argument(
        "--max-queue-image-mb",
        type=float,
        help="MiB of images (encoded files, tensors) admitted and unanswered; bounds memory "
        "under big photos",
    )
    g.add_argument(
        "--max-decoding-megapixels",
        type=float,
        metavar="MEGAPIXELS",
        help="decoded image pixels (millions) the preprocessing threads hold at once; one "
        "larger image still decodes, alone",
    )
    g.add_argument(
        "--forward-timeout-s",
        type=float,
        help="a forward pass running longer makes the server unhealthy (503 / gRPC "
        "NOT_SERVING, calls fail fast) until it returns (0: no watchdog)",
    )
    g.add_argument(
        "--exit-on-stuck",
        action="store_true",
        help=f"exit with status {EXIT_STUCK} when the server turns unhealthy (a stuck pass, "
        "a dead inference thread), for a supervisor to restart it",
    )
    g.add_argument("--replicas", type=int, help="inference threads (model copies)")
    g.add_argument(
        "--preprocess-workers",
        type=int,
        help="image decoding / text tokenising threads (default: one per CPU)",
    )
    g.add_argument(
        "--exact-preprocess",
        action="store_true",
        help="decode every image at full size and preprocess exactly like the model's "
        "reference (slow on big photos; default: big photos are decoded to ~2x the input)",
    )
    g.add_argument(
        "--shutdown-grace",
        dest="shutdown_grace_s",
        metavar="SECONDS",
        type=float,
        help="how long in-flight requests may finish on shutdown",
    )


def _cache_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--cache-mb", type=float, help="in-memory embedding cache, MiB (0: off)")
    g.add_argument(
        "--cache-disk-dir",
        metavar="DIR",
        help="also keep embeddings on disk here, so a restart keeps them (default: memory only)",
    )
    g.add_argument("--cache-disk-mb", type=float, help="size bound of the on-disk cache, MiB")


def _log_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--log-level", choices=logs.LEVELS, help="the least severe messages logged")
    g.add_argument("--log-format", choices=logs.FORMATS, help="json: one object per line")
    g.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        help="a line per request: method, endpoint, protocol, documents, status, duration, client",
    )


#: --ray* flag dest -> key of the YAML ``ray`` section (``clipserve.cluster.settings``)
RAY_FLAGS = {
    "ray_address": "address",
    "ray_app": "app",
    "ray_deploy": "deploy",
    "ray_keep_app": "keep_app",
    "ray_num_cpus": "num_cpus",
    "ray_num_gpus": "num_gpus",
    "ray_max_replicas_per_node": "max_replicas_per_node",
    "ray_min_replicas": "min_replicas",
    "ray_max_replicas": "max_replicas",
    "ray_target_ongoing_requests": "target_ongoing_requests",
}


def _ray_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--ray",
        dest="ray_address",
        metavar="ADDRESS",
        help="run the model as replicas on a Ray cluster: auto (the cluster this machine is "
        "in), local (start one here), <head>:6379, or ray://<head>:10001; --replicas then "
        "counts Ray replicas (default: none, this process runs the model)",
    )
    g.add_argument("--ray-app", metavar="NAME", help="Serve application name (default: "
                   f"{DEFAULT_APP})")  # fmt: skip
    g.add_argument(
        "--ray-deploy",
        choices=DEPLOY_MODES,
        help="auto: deploy the app unless it runs, then attach; attach: only attach (more "
        "front-ends); replace: redeploy with these settings (default: auto)",
    )
    g.add_argument(
        "--ray-keep-app",
        action=argparse.BooleanOptionalAction,
        help="leave the app running when this front-end, which deployed it, exits (default: off)",
    )
    g.add_argument("--ray-num-cpus", type=float, help="CPUs per replica (Ray resource)")
    g.add_argument("--ray-num-gpus", type=float, help="GPUs per replica (Ray resource)")
    g.add_argument(
        "--ray-max-replicas-per-node", type=int, help="spread replicas: at most this many a node"
    )
    g.add_argument("--ray-min-replicas", type=int, help="autoscaling: fewest replicas")
    g.add_argument("--ray-max-replicas", type=int, help="autoscaling: most replicas")
    g.add_argument(
        "--ray-target-ongoing-requests",
        type=float,
        help="autoscaling: calls in flight per replica to aim for",
    )


def _pair(g: argparse._ArgumentGroup, name: str, what: str, default: bool) -> None:
    group = g.add_mutually_exclusive_group()
    dest = f"open_{name}"
    state = "open" if default else "protected"
    group.add_argument(
        f"--open-{name}",
        dest=dest,
        action="store_true",
        help=f"serve {what} without auth (default: {state})",
    )
    group.add_argument(
        f"--protect-{name}", dest=dest, action="store_false", help=f"require auth for {what}"
    )


def serve_defaults() -> dict[str, Any | Callable[[], Any]]:
    """What each setting is when nobody sets it, by flag ``dest``, for ``--help``."""
    values: dict[str, Any | Callable[[], Any]] = {
        field.name: getattr(DEFAULTS, field.name) for field in dataclasses.fields(ServerConfig)
    }
    values["max_docs_per_request"] = Limits().max_docs_per_request
    uri_policy = UriPolicy()
    values["fetch_uris"] = uri_policy.enabled
    values["uri_allow_private"] = uri_policy.allow_private
    values["uri_allowed_hosts"] = ",".join(uri_policy.allowed_hosts) or "any public host"
    values["cache_dir"] = _cache_default
    values["config_file"] = "none"
    return values


def _cache_default() -> str:
    from clipserve.models.cache import clipserve_cache_dir

    try:
        from clipserve.models.cache import hub_cache_dir

        hub = str(hub_cache_dir())
    except ImportError:  # a client-only install
        hub = "$HF_HUB_CACHE"
    return f"downloads in the Hugging Face hub cache {hub}, exports in {clipserve_cache_dir()}"
