"""``clipserve`` command line: ``serve`` runs the server, ``models`` lists the known models,
``prepare`` fills the caches (download, ONNX export, int8 quantization) ahead of serving,
``doctor`` tells what this CPU can do for each precision.

This is the one place that turns flags/YAML/environment into a ``ServerConfig`` and runs
it until SIGINT/SIGTERM, which drain in-flight requests and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from clipserve.errors import ClipServeError
from clipserve.extras import missing
from clipserve.server.config import (
    AUTH_TOKEN_ENV,
    BACKENDS,
    PRECISIONS,
    PROTOCOLS,
    ServerConfig,
    build_config,
)

DEFAULTS = ServerConfig()
log = logging.getLogger("clipserve.server")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipserve", description="CLIP embedding service")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the server (gRPC, HTTP and WebSocket)",
        description="Serve a CLIP model over gRPC, HTTP and WebSocket. Settings come from "
        f"defaults < --config YAML < ${AUTH_TOKEN_ENV} < flags.",
        argument_default=argparse.SUPPRESS,  # only flags actually given override the YAML
    )
    _add_serve_flags(serve)
    models = commands.add_parser("models", help="list the known model names")
    models.add_argument("--cache-dir", default=None, help="model cache directory")
    commands.add_parser(
        "doctor",
        help="show this CPU's features and which precisions are fast, slow or refused here",
    )
    prepare = commands.add_parser(
        "prepare",
        help="download, export and quantize a model into the caches, then exit",
        description="Load a model as `serve` would (downloading weights, exporting ONNX and "
        "quantizing to int8 as needed), encode one text and one image, list the cached files "
        "and exit: for image builds and offline machines.",
    )
    d = DEFAULTS
    prepare.add_argument("--model", default=d.model, help=f"model name or directory ({d.model})")
    prepare.add_argument("--backend", choices=BACKENDS, default=d.backend)
    prepare.add_argument("--precision", choices=PRECISIONS, default=d.precision)
    prepare.add_argument("--device", default=d.device)
    prepare.add_argument("--cache-dir", default=None, help="model cache directory")
    return parser


def _add_serve_flags(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    p.add_argument("--config", dest="config_file", help="YAML file of settings (see docs)")
    p.add_argument("--model", help=f"model name or local directory (default: {d.model})")
    p.add_argument("--backend", choices=BACKENDS, help=f"inference backend (default: {d.backend})")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="float (float32 on CPU, float16 on CUDA), bf16 (backend torch, hardware with "
        f"bf16), int8 (backend onnx, CPU) (default: {d.precision})",
    )
    p.add_argument("--device", help=f"torch device or onnx provider hint (default: {d.device})")
    p.add_argument("--cache-dir", help="model cache directory (default: the registry's)")
    p.add_argument("--host", help=f"address to bind (default: {d.host})")
    p.add_argument("--grpc-port", type=int, help=f"gRPC port (default: {d.grpc_port}; 0: any)")
    p.add_argument(
        "--http-port", type=int, help=f"HTTP + WebSocket port (default: {d.http_port}; 0: any)"
    )
    p.add_argument(
        "--protocols",
        help=f"comma-separated subset of {','.join(PROTOCOLS)} (default: all three)",
    )
    p.add_argument("--tls-cert", help="PEM certificate: enables TLS on every listener")
    p.add_argument("--tls-key", help="PEM private key for --tls-cert")
    p.add_argument(
        "--auth-token",
        help=f"shared token clients must send (better: ${AUTH_TOKEN_ENV}; default: none)",
    )
    _pair(p, "health", "/health, /readyz and the gRPC health service", d.open_health)
    _pair(p, "metrics", "/metrics", d.open_metrics)
    p.add_argument(
        "--cors",
        help="comma-separated allowed CORS origins, '*' for any (default: no CORS headers)",
    )
    p.add_argument(
        "--ui",
        action=argparse.BooleanOptionalAction,
        help="the web page at / (default: on; --no-ui keeps only /static/clipserve.js)",
    )
    p.add_argument(
        "--max-batch-size", type=int, help=f"items per forward pass (default: {d.max_batch_size})"
    )
    p.add_argument(
        "--max-batch-wait-ms",
        dest="max_wait_ms",
        type=float,
        help=f"how long a batch waits to fill (default: {d.max_wait_ms})",
    )
    p.add_argument(
        "--max-queue-items",
        type=int,
        help=f"queued items per modality (default: {d.max_queue_items})",
    )
    p.add_argument(
        "--max-queue-wait-s",
        type=float,
        help="seconds a request waits for room in a full queue before it is refused "
        f"(default: {d.max_queue_wait_s:g}; 0: refuse at once)",
    )
    p.add_argument("--replicas", type=int, help=f"inference threads (default: {d.replicas})")
    p.add_argument(
        "--preprocess-workers",
        type=int,
        help="image decoding / text tokenising threads (default: one per CPU)",
    )
    p.add_argument(
        "--exact-preprocess",
        action="store_true",
        help="decode every image at full size and preprocess exactly like the model's "
        "reference (slow on big photos; default: big photos are decoded to ~2x the input)",
    )
    p.add_argument(
        "--cache-mb",
        type=float,
        help=f"in-memory embedding cache, MiB (default: {d.cache_mb:g}; 0: off)",
    )
    p.add_argument(
        "--cache-disk-dir",
        help="also keep embeddings on disk here, so a restart keeps them (default: memory only)",
    )
    p.add_argument(
        "--cache-disk-mb",
        type=float,
        help=f"size bound of the on-disk cache, MiB (default: {d.cache_disk_mb:g})",
    )
    p.add_argument(
        "--grpc-max-message-mb",
        type=int,
        help=f"gRPC (and WebSocket frame) size limit (default: {d.grpc_max_message_mb})",
    )
    p.add_argument(
        "--http-max-body-mb", type=int, help=f"HTTP body limit (default: {d.http_max_body_mb})"
    )
    p.add_argument(
        "--max-inflight-per-stream",
        type=int,
        help=f"concurrent requests per gRPC stream/WebSocket (default: "
        f"{d.max_inflight_per_stream})",
    )
    p.add_argument(
        "--shutdown-grace",
        dest="shutdown_grace_s",
        type=float,
        help=f"seconds in-flight requests get on shutdown (default: {d.shutdown_grace_s})",
    )
    p.add_argument(
        "--max-docs-per-request",
        type=int,
        help="refuse requests with more documents (default: the service's limit)",
    )
    p.add_argument(
        "--fetch-uris",
        action="store_true",
        help="let the server fetch http(s) image URIs (default: never; data: URIs always work)",
    )
    p.add_argument(
        "--uri-allowed-hosts",
        help="with --fetch-uris: comma-separated hosts ('*.example.com' for subdomains)",
    )
    p.add_argument("--port-file", help='write {"grpc": port, "http": port} here once ready')
    p.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help=f"(default: {d.log_level})",
    )


def _pair(p: argparse.ArgumentParser, name: str, what: str, default: bool) -> None:
    group = p.add_mutually_exclusive_group()
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


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    values: dict[str, Any] = dict(vars(args))
    values.pop("command", None)
    config_file = values.pop("config_file", None)
    if "max_docs_per_request" in values:
        values["limits"] = {"max_docs_per_request": values.pop("max_docs_per_request")}
    uri_policy: dict[str, Any] = {}
    if values.pop("fetch_uris", False):
        uri_policy["enabled"] = True
    if "uri_allowed_hosts" in values:
        hosts = values.pop("uri_allowed_hosts").split(",")
        uri_policy["allowed_hosts"] = tuple(h.strip() for h in hosts if h.strip())
    if uri_policy:
        values["uri_policy"] = uri_policy
    return build_config(config_file=config_file, overrides=values)


async def _serve(config: ServerConfig) -> int:
    try:
        from clipserve.server.app import ClipServer
    except ModuleNotFoundError as exc:  # a client-only install
        raise missing(exc.name or "?", "clipserve serve", error=ClipServeError) from exc

    server = ClipServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("clipserve: loading model %s (backend %s, device %s, precision %s)", config.model,
             config.backend, config.device, config.precision)  # fmt: skip
    _log_cpu(config)
    starting = asyncio.ensure_future(server.start())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # a signal during start-up (model loading): leave at once
        log.info("clipserve: interrupted during start-up")
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await server.stop()
        return 0
    starting.result()  # start-up failed: raise its error
    log.info("clipserve: ready")
    await stopping
    log.info("clipserve: shutting down, draining in-flight requests")
    await server.stop()
    log.info("clipserve: stopped")
    return 0


def _log_cpu(config: ServerConfig) -> None:
    """The CPU's verdicts at start-up; a warning where the chosen precision is not fast here."""
    from clipserve.models.cpu import FAST, cpu_summary, verdict_for

    log.info("clipserve: %s", cpu_summary())
    if config.device != "cpu" or config.precision == "float":
        return
    verdict = verdict_for(config.precision)
    level = logging.INFO if verdict.status == FAST else logging.WARNING
    log.log(level, "clipserve: precision %s is %s on this CPU: %s", config.precision,
            verdict.status, verdict.reason)  # fmt: skip


def _doctor() -> int:
    from clipserve.models.cpu import cpu_report

    report: dict[str, Any] = cpu_report()
    print(f"CPU: {report['name']} ({report['kind']}; features read by {report['source']})")
    flags = report["features"].items()
    print("features: " + ", ".join(f"{name} {'yes' if on else 'no'}" for name, on in flags))
    print(f"int8 kernel (onnxruntime u8 x s8): {report['int8_kernel']}")
    print(f"int8 recipe: {report['int8_recipe']}")
    print("precisions on this CPU:")
    for precision, verdict in report["precisions"].items():
        print(f"  {precision:<6} {verdict['status']:<8} {verdict['reason']}")
    return 0


def _models(cache_dir: str | None) -> int:
    from clipserve.models.registry import list_models

    header = ("NAME", "DIM", "FAMILY", "LANGUAGES", "LOCAL", "DESCRIPTION")
    rows = [
        (m.name, str(m.dim), m.family, m.languages, "yes" if m.local else "no", m.description)
        for m in list_models(cache_dir)
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))
    return 0


def _prepare(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from clipserve.models.registry import load_model

    started = time.perf_counter()
    try:
        model = load_model(
            args.model,
            backend=args.backend,
            device=args.device,
            cache_dir=args.cache_dir,
            precision=args.precision,
        )
        model.encode_texts(["a photo of a cat"])
        model.encode_images([np.zeros((64, 64, 3), dtype=np.uint8)])
    except (ClipServeError, ValueError, OSError) as exc:
        print(f"clipserve: error: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    print(f"clipserve: {model.name} ready in {seconds:.1f}s (dim {model.dim}, backend "
          f"{model.backend}, precision {model.precision})")  # fmt: skip
    for path in model.cache_files():
        print(f"cached: {path}")
    model.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "models":
        return _models(args.cache_dir)
    if args.command == "prepare":
        return _prepare(args)
    if args.command == "doctor":
        return _doctor()
    if args.command != "serve":
        parser.print_help()
        return 2
    try:
        config = config_from_args(args)
    except (ValueError, OSError) as exc:
        parser.exit(2, f"clipserve: error: {exc}\n")
    logging.basicConfig(
        level=config.log_level.upper(), format="%(message)s", stream=sys.stderr, force=True
    )
    try:
        return asyncio.run(_serve(config))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        if isinstance(exc, ClipServeError | ValueError | OSError):
            print(f"clipserve: error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())
