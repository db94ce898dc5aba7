"""``clipserve`` command line: ``serve`` runs the server, ``models`` lists the known models,
``prepare`` fills the caches (download, ONNX export, int8 quantization) ahead of serving,
``doctor`` tells what this CPU can do for each precision.

This is the one place that turns flags/YAML/environment into a ``ServerConfig`` and runs
it until SIGINT/SIGTERM, which drain in-flight requests and exit 0. Settings resolve as
defaults < ``--config`` YAML < ``CLIPSERVE_<FLAG>`` environment < flags; how help reads
and how the environment is read is derived from the parser (``cli_options``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from clipserve import __version__
from clipserve.cli_flags import DEFAULTS, EXIT_STUCK, build_parser
from clipserve.cli_options import from_environment
from clipserve.errors import ClipServeError
from clipserve.extras import missing
from clipserve.server import logs
from clipserve.server.config import ServerConfig, build_config

__all__ = ["build_parser", "config_from_args", "main"]
log = logging.getLogger("clipserve.server")
# ---- flags, environment and YAML -> ServerConfig --------------------------------------


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """``serve``'s configuration: defaults < YAML < ``CLIPSERVE_*`` variables < flags."""
    from_env = from_environment(_subparser(build_parser(), "serve"), _environ(environ))
    values: dict[str, Any] = {**from_env, **vars(args)}
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
    return build_config(config_file=config_file, overrides=values, environ=environ)


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


# ---- the commands ---------------------------------------------------------------------


async def _serve(config: ServerConfig) -> int:
    from clipserve.server.app import ClipServer

    server = ClipServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if config.auth_tokens_file:
        loop.add_signal_handler(signal.SIGHUP, _reload_tokens, server)
    log.info("clipserve %s: loading model %s", __version__, config.model)
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


def _serve_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except (ValueError, OSError) as exc:
        parser.exit(2, f"clipserve: error: {exc}\n")
    logs.configure(config.log_level, config.log_format, config.access_log)
    try:
        code = asyncio.run(_serve(config))
    except KeyboardInterrupt:
        return 0
    except (ClipServeError, ValueError, OSError) as exc:
        print(f"clipserve: error: {exc}", file=sys.stderr)
        return 1
    if code == EXIT_STUCK:  # a stuck pass cannot be interrupted: do not wait for its thread
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


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
    from clipserve.models.cache import hub_cache_dir, onnx_cache_dir
    from clipserve.models.registry import DEFAULT_MODEL, list_models

    columns: list[tuple[str, Callable[[Any], str]]] = [
        ("NAME", lambda m: m.name),
        ("DIM", lambda m: str(m.dim)),
        ("FAMILY", lambda m: m.family),
        ("LANGUAGES", lambda m: m.languages),
        ("LOCAL", lambda m: "yes" if m.local else "no"),
        ("DESCRIPTION", lambda m: m.description),
    ]
    infos = list_models(cache_dir)
    rows = [[cell(m) for _, cell in columns] for m in infos]
    marks = ["*" if m.name == DEFAULT_MODEL else " " for m in infos]
    table = [[header for header, _ in columns], *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns) - 1)]
    for mark, row in zip([" ", *marks], table, strict=True):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print(f"{mark} " + "  ".join([*cells, row[-1]]))
    print(
        "\n* the default (serve without --model). builtin is clipserve's own offline model:"
        "\n  MiniLM-L6 embeds texts; images get the text embedding of the ImageNet classes"
        "\n  EfficientNet-Lite0 sees in them (ConSE): docs/builtin-model.md."
        f"\nLOCAL: loads without network. Looked for weights in {hub_cache_dir(cache_dir)}"
        "\n  (the Hugging Face hub cache: HF_HUB_CACHE, HF_HOME or --cache-dir move it);"
        "\n  other names download there on first use."
        f"\nONNX exports and int8 graphs: {onnx_cache_dir(cache_dir)}"
    )
    return 0


def _prepare(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from clipserve.models.registry import load_model

    values = {**from_environment(_subparser(build_parser(), "prepare"), os.environ), **vars(args)}
    settings = {key: values.get(key, getattr(DEFAULTS, key))
                for key in ("model", "backend", "device", "cache_dir", "precision")}  # fmt: skip
    started = time.perf_counter()
    try:
        model = load_model(settings.pop("model"), **settings)
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
    command = args.command
    try:
        if command == "serve":
            return _serve_command(parser, args)
        if command == "models":
            return _models(args.cache_dir)
        if command == "prepare":
            return _prepare(args)
        if command == "doctor":
            return _doctor()
    except ModuleNotFoundError as exc:  # a client-only install: say what to install
        if not exc.name or exc.name.split(".")[0] == "clipserve":
            raise
        print(f"clipserve: error: {missing(exc.name, f'clipserve {command}')}", file=sys.stderr)
        return 1
    parser.print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
