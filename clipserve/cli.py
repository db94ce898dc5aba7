"""``clipserve`` command line: ``serve`` runs the server, ``models`` lists the known models,
``prepare`` fills the caches (download, ONNX export, int8 quantization) ahead of serving.

This is the one place that turns flags/YAML/environment into a ``ServerConfig`` and runs
it until SIGINT/SIGTERM, which drain in-flight requests and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
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
#: exit status of ``serve --exit-on-stuck`` when the engine turned unhealthy (EX_SOFTWARE)
EXIT_STUCK = 70


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
    p.add_argument(
        "--auth-tokens-file",
        help="YAML/JSON map of tenant name -> token (or 'sha256:<hex>', or a mapping with a "
        "rate limit); reloaded on SIGHUP (default: none)",
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
    p.add_argument(
        "--max-queue-image-mb",
        type=float,
        help="MiB of images (encoded files, tensors) admitted and unanswered; bounds memory "
        f"under big photos (default: {d.max_queue_image_mb:g})",
    )
    p.add_argument(
        "--max-decoding-megapixels",
        type=float,
        help="decoded image pixels (millions) the preprocessing threads hold at once; one "
        f"larger image still decodes, alone (default: {d.max_decoding_megapixels:g})",
    )
    p.add_argument(
        "--forward-timeout-s",
        type=float,
        help="a forward pass running longer makes the server unhealthy (503 / gRPC "
        "NOT_SERVING, calls fail fast) until it returns; 0: no watchdog "
        f"(default: {d.forward_timeout_s:g})",
    )
    p.add_argument(
        "--exit-on-stuck",
        action="store_true",
        help=f"exit with status {EXIT_STUCK} when the server turns unhealthy (a stuck pass, "
        "a dead inference thread), for a supervisor to restart it (default: off)",
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
        action=argparse.BooleanOptionalAction,
        help="fetch the public http(s) image URLs documents name (default: on; "
        "--no-fetch-uris turns it off; data: URIs always work)",
    )
    p.add_argument(
        "--uri-allowed-hosts",
        help="fetch URIs only from these comma-separated hosts ('*.example.com' for "
        "subdomains; default: any public host)",
    )
    p.add_argument(
        "--uri-allow-private",
        action="store_true",
        help="also fetch from loopback, private and link-local addresses (an image store on "
        "10.x, say); cloud metadata addresses stay refused (default: off)",
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
    if "fetch_uris" in values:
        uri_policy["enabled"] = values.pop("fetch_uris")
    if values.pop("uri_allow_private", False):
        uri_policy["allow_private"] = True
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
    if config.auth_tokens_file:
        loop.add_signal_handler(signal.SIGHUP, _reload_tokens, server)
    log.info("clipserve: loading model %s (backend %s, device %s, precision %s)", config.model,
             config.backend, config.device, config.precision)  # fmt: skip
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
    fatal = asyncio.ensure_future(server.fatal.wait())
    await asyncio.wait({stopping, fatal}, return_when=asyncio.FIRST_COMPLETED)
    if fatal.done():  # --exit-on-stuck: stop taking work, then exit non-zero at once
        log.error("clipserve: unhealthy (%s); exiting with status %d (--exit-on-stuck)",
                  server.fatal_reason, EXIT_STUCK)  # fmt: skip
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(server.stop(), config.shutdown_grace_s + 5)
        return EXIT_STUCK
    fatal.cancel()
    log.info("clipserve: shutting down, draining in-flight requests")
    await server.stop()
    log.info("clipserve: stopped")
    return 0


def _reload_tokens(server: Any) -> None:
    """SIGHUP: read the tokens file again; a bad file keeps the old tokens."""
    try:
        server.reload_auth()
    except ValueError as exc:
        log.error("clipserve: auth tokens NOT reloaded, the old ones stay: %s", exc)


def _models(cache_dir: str | None) -> int:
    from clipserve.models.registry import list_models

    rows = [(m.name, str(m.dim), "yes" if m.local else "no", m.description) for m in list_models(
        cache_dir
    )]  # fmt: skip
    header = ("NAME", "DIM", "LOCAL", "DESCRIPTION")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
            + "  "
            + row[3]
        )
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
        code = asyncio.run(_serve(config))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        if isinstance(exc, ClipServeError | ValueError | OSError):
            print(f"clipserve: error: {exc}", file=sys.stderr)
            return 1
        raise
    if code == EXIT_STUCK:  # a stuck pass cannot be interrupted: do not wait for its thread
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
