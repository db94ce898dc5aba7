"""How ``clipserve`` reads: ``--version``, ``serve --help`` in groups with value-like
metavars and real defaults, and every setting from ``CLIPSERVE_<FLAG>`` variables with
defaults < YAML < environment < flags."""

from __future__ import annotations

import argparse

import pytest

from clipserve import __version__
from clipserve.cli import build_parser, config_from_args, main
from clipserve.cli_options import NOT_FROM_ENV, env_actions, from_environment
from clipserve.models.cache import clipserve_cache_dir, onnx_cache_dir


def serve_parser() -> argparse.ArgumentParser:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices["serve"]
    raise AssertionError("no serve command")


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"clipserve {__version__}"


def test_serve_help_reads_as_a_manual(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    for group in ("model:", "network:", "TLS and auth:", "limits:", "engine:", "logs:"):
        assert f"\n{group}\n" in text, group
    for usage in ("--max-batch-wait-ms MS", "--grpc-port PORT", "--cache-dir DIR",
                  "--tls-cert FILE", "--shutdown-grace SECONDS", "--max-queue-wait-s SECONDS",
                  "--http-max-body-mb MB", "--max-batch-size N", "--model NAME"):  # fmt: skip
        assert usage in text, usage
    assert "MAX_WAIT_MS" not in text and "SHUTDOWN_GRACE_S" not in text
    flat = " ".join(text.split())
    assert "refuse requests with more documents (default: 2048)" in flat
    assert f"exports in {clipserve_cache_dir()}" in flat
    assert "(default: 51000)" in flat and "(default: builtin)" in flat
    assert "CLIPSERVE_MAX_BATCH_SIZE" in flat and "< flags" in flat


def test_every_flag_has_an_environment_variable() -> None:
    parser = serve_parser()
    named = env_actions(parser)
    dests = {a.dest for a in parser._actions if a.option_strings and a.dest != "help"}
    assert {a.dest for a in named.values()} == dests - NOT_FROM_ENV
    assert named["CLIPSERVE_MAX_BATCH_WAIT_MS"].dest == "max_wait_ms"  # named after the flag
    assert named["CLIPSERVE_OPEN_HEALTH"].dest == "open_health"
    assert "CLIPSERVE_PROTECT_HEALTH" not in named  # one variable per setting
    assert "CLIPSERVE_CACHE_DIR" not in named  # it keeps naming clipserve's own cache


def test_environment_sits_between_yaml_and_flags(tmp_path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("model: hash\nmax_batch_size: 4\nreplicas: 2\nprotocols: [grpc]\n")
    environ = {
        "CLIPSERVE_CONFIG": str(config),
        "CLIPSERVE_MAX_BATCH_SIZE": "16",  # over the YAML
        "CLIPSERVE_REPLICAS": "5",  # under the flag
        "CLIPSERVE_MAX_BATCH_WAIT_MS": "2.5",
        "CLIPSERVE_UI": "off",
        "CLIPSERVE_OPEN_METRICS": "0",
        "CLIPSERVE_FETCH_URIS": "yes",
        "CLIPSERVE_MAX_DOCS_PER_REQUEST": "64",
        "CLIPSERVE_PROTOCOLS": "grpc,http",
        "CLIPSERVE_AUTH_TOKEN": "env-token",
        "CLIPSERVE_LOG_FORMAT": "json",
        "CLIPSERVE_ACCESS_LOG": "true",
        "CLIPSERVE_CACHE_DIR": str(tmp_path / "own-cache"),
    }
    args = build_parser().parse_args(["serve", "--replicas", "3"])
    config = config_from_args(args, environ=environ)
    assert (config.model, config.max_batch_size, config.replicas) == ("hash", 16, 3)
    assert config.max_wait_ms == 2.5 and config.ui is False and config.open_metrics is False
    assert config.uri_policy == {"enabled": True}
    assert config.limits == {"max_docs_per_request": 64}
    assert config.protocols == ("grpc", "http") and config.auth_token == "env-token"
    assert config.log_format == "json" and config.access_log is True
    assert config.cache_dir is None  # CLIPSERVE_CACHE_DIR is not --cache-dir


def test_a_bad_variable_is_named(monkeypatch, capsys) -> None:
    monkeypatch.setenv("CLIPSERVE_GRPC_PORT", "fifty")
    with pytest.raises(SystemExit) as info:
        main(["serve"])
    assert info.value.code == 2
    assert "CLIPSERVE_GRPC_PORT='fifty' is not a valid int" in capsys.readouterr().err
    for name, value, message in [
        ("CLIPSERVE_BACKEND", "tensorflow", "must be one of torch, onnx"),
        ("CLIPSERVE_FETCH_URIS", "maybe", "use 1/0, true/false"),
    ]:
        with pytest.raises(ValueError, match=message):
            from_environment(serve_parser(), {name: value})


def test_clipserve_cache_follows_xdg_cache_home(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("CLIPSERVE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert clipserve_cache_dir() == tmp_path / "xdg" / "clipserve"
    assert onnx_cache_dir() == tmp_path / "xdg" / "clipserve" / "onnx"
    monkeypatch.setenv("CLIPSERVE_CACHE_DIR", str(tmp_path / "mine"))
    assert clipserve_cache_dir() == tmp_path / "mine"  # the explicit setting wins
    monkeypatch.delenv("CLIPSERVE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # not absolute: ignored, as XDG says
    assert clipserve_cache_dir().parent.is_absolute()


def test_reliability_settings_come_from_the_environment_too(tmp_path) -> None:
    """The watchdog, memory, tenant and URI settings read like every other one."""
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("alice: alice-token\n")
    environ = {
        "CLIPSERVE_MODEL": "hash",
        "CLIPSERVE_FORWARD_TIMEOUT_S": "12.5",
        "CLIPSERVE_EXIT_ON_STUCK": "on",
        "CLIPSERVE_MAX_QUEUE_IMAGE_MB": "64",
        "CLIPSERVE_MAX_DECODING_MEGAPIXELS": "24",
        "CLIPSERVE_AUTH_TOKENS_FILE": str(tokens),
        "CLIPSERVE_FETCH_URIS": "0",
        "CLIPSERVE_URI_ALLOW_PRIVATE": "1",
        "CLIPSERVE_URI_ALLOWED_HOSTS": "img.example.com, *.cdn.example",
    }
    config = config_from_args(build_parser().parse_args(["serve"]), environ=environ)
    assert (config.forward_timeout_s, config.exit_on_stuck) == (12.5, True)
    assert (config.max_queue_image_mb, config.max_decoding_megapixels) == (64, 24)
    assert config.auth_tokens_file == str(tokens)
    assert config.uri_policy == {
        "enabled": False,
        "allow_private": True,
        "allowed_hosts": ("img.example.com", "*.cdn.example"),
    }
    # a flag still wins over its variable
    args = build_parser().parse_args(["serve", "--fetch-uris", "--forward-timeout-s", "0"])
    config = config_from_args(args, environ={**environ, "CLIPSERVE_EXIT_ON_STUCK": "0"})
    assert config.uri_policy["enabled"] is True and config.forward_timeout_s == 0


def test_serve_help_shows_the_reliability_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    flat = " ".join(capsys.readouterr().out.split())
    for shown in ("--forward-timeout-s SECONDS", "(0: no watchdog) (default: 300)",
                  "--max-decoding-megapixels MEGAPIXELS", "--auth-tokens-file FILE",
                  "--fetch-uris, --no-fetch-uris", "data: URIs always work) (default: on)",
                  "cloud metadata addresses stay refused (default: off)",
                  "(default: any public host)", "--exit-on-stuck", "status 70"):  # fmt: skip
        assert shown in flat, shown
