"""The Ray path without a cluster: settings, flags, what crosses the handle, the import
boundary (the plain server and the client never import Ray), and a clear error when there
is no cluster to join."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipserve.cli import build_parser, config_from_args
from clipserve.cluster.payload import pack, unpack, values_of
from clipserve.cluster.settings import RaySettings, ray_settings_of
from clipserve.engine.items import ImageItem, TextItem
from clipserve.errors import InputRefusedError, InvalidInputError, ModelError
from clipserve.server.config import ServerConfig

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]


def parse(*argv: str) -> ServerConfig:
    return config_from_args(build_parser().parse_args(["serve", *argv]))


def test_flags_fill_the_ray_section_and_fold_into_serve_options() -> None:
    config = parse(
        "--ray", "auto", "--replicas", "3", "--ray-num-gpus", "1", "--ray-num-cpus", "4",
        "--ray-app", "embed", "--ray-deploy", "attach", "--ray-max-replicas-per-node", "1",
    )  # fmt: skip
    settings = ray_settings_of(config)
    assert settings is not None and settings.app == "embed" and settings.deploy == "attach"
    options = settings.deployment_options(config.replicas)
    assert options["num_replicas"] == 3 and "autoscaling_config" not in options
    assert options["ray_actor_options"] == {"num_cpus": 4.0, "num_gpus": 1.0}
    assert options["max_replicas_per_node"] == 1
    assert options["logging_config"] == {"enable_access_log": False}


def test_autoscaling_flags_merge_over_the_yaml_section(tmp_path: Path) -> None:
    yaml_file = tmp_path / "clipserve.yaml"
    yaml_file.write_text(
        "model: hash\nray:\n  address: 10.0.0.1:6379\n  max_ongoing_requests: 4\n"
        "  autoscaling_config: {min_replicas: 1, max_replicas: 4, upscale_delay_s: 5}\n"
    )
    config = parse("--config", str(yaml_file), "--ray-max-replicas", "8")
    settings = ray_settings_of(config)
    assert settings is not None and settings.address == "10.0.0.1:6379"
    options = settings.deployment_options(config.replicas)
    assert options["autoscaling_config"] == {
        "min_replicas": 1, "max_replicas": 8, "upscale_delay_s": 5
    }  # fmt: skip
    assert options["max_ongoing_requests"] == 4 and "num_replicas" not in options


def test_every_ray_flag_is_also_a_clipserve_variable_and_flags_win() -> None:
    environ = {
        "CLIPSERVE_RAY": "local", "CLIPSERVE_RAY_NUM_GPUS": "1", "CLIPSERVE_RAY_KEEP_APP": "yes",
        "CLIPSERVE_RAY_MIN_REPLICAS": "1", "CLIPSERVE_RAY_MAX_REPLICAS": "4",
        "CLIPSERVE_RAY_DEPLOY": "attach",
    }  # fmt: skip
    args = build_parser().parse_args(["serve", "--ray-max-replicas", "6"])
    settings = ray_settings_of(config_from_args(args, environ))
    assert settings is not None and settings.address == "local" and settings.keep_app
    assert settings.deploy == "attach" and settings.ray_actor_options == {"num_gpus": 1.0}
    assert settings.autoscaling_config == {"min_replicas": 1, "max_replicas": 6}
    with pytest.raises(ValueError, match="CLIPSERVE_RAY_DEPLOY"):
        config_from_args(build_parser().parse_args(["serve"]), {"CLIPSERVE_RAY_DEPLOY": "x"})


def test_serve_help_shows_the_ray_group() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "clipserve", "serve", "--help"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    group = done.stdout.split("Ray cluster:", 1)[1]
    for flag in ("--ray ADDRESS", "--ray-deploy", "--ray-min-replicas", "--ray-num-gpus"):
        assert flag in group, flag


def test_bad_ray_settings_are_refused_with_their_name() -> None:
    with pytest.raises(ValueError, match="unknown ray setting.*replica_count"):
        RaySettings.from_mapping({"address": "auto", "replica_count": 2})
    with pytest.raises(ValueError, match="min_replicas <= max_replicas"):
        RaySettings(min_replicas=4, max_replicas=2)
    with pytest.raises(ValueError, match="ray.deploy"):
        RaySettings(deploy="sometimes")
    with pytest.raises(ValueError, match="need ray.address"):
        ServerConfig(ray={"app": "x"})
    assert ray_settings_of(ServerConfig()) is None


def test_outcomes_cross_the_handle_and_come_back_the_same() -> None:
    vectors = [np.full(4, i, dtype=np.float32) for i in range(3)]
    outcomes = [
        vectors[0],
        InvalidInputError("cannot decode image"),
        vectors[1],
        InputRefusedError("image too large"),
        ModelError("batch failed"),
        vectors[2],
    ]
    back = unpack(pack(outcomes), len(outcomes))
    for sent, got in zip(outcomes, back, strict=True):
        assert type(got) is type(sent)
        if isinstance(sent, np.ndarray):
            np.testing.assert_array_equal(got, sent)
        else:
            assert str(got) == str(sent)
    assert back[1].reason == "cannot decode image"
    with pytest.raises(ModelError, match="mismatched"):
        unpack(pack(outcomes), len(outcomes) + 1)
    assert values_of([TextItem("a"), ImageItem(b"png")]) == ["a", b"png"]


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    environ = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
        cwd=REPO, env=environ, check=False,
    )  # fmt: skip


def test_the_plain_server_and_the_client_never_import_ray() -> None:
    code = (
        "import sys\n"
        "import clipserve, clipserve.cli, clipserve.client\n"
        "from clipserve.server.app import loopback_config, running_server\n"
        "from clipserve import Client\n"
        "with running_server(loopback_config()) as server:\n"
        "    Client(server.urls['grpc']).encode(['no ray here'])\n"
        "loaded = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
        "sys.exit(f'Ray was imported: {loaded[:5]}' if loaded else 0)\n"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr[-2000:]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("how", ["address", "auto"])
def test_no_cluster_to_join_is_a_clear_error_naming_the_address(how: str) -> None:
    port = closed_port()
    address = f"127.0.0.1:{port}"
    flag, env = (address, {}) if how == "address" else ("auto", {"RAY_ADDRESS": address})
    code = (
        "import sys; from clipserve.cli import main\n"
        f"sys.exit(main(['serve', '--ray', '{flag}', '--model', 'hash', '--host', '127.0.0.1',"
        " '--grpc-port', '0', '--http-port', '0']))\n"
    )
    done = run_python(code, **env)
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"clipserve: error: no Ray cluster at {flag} (127.0.0.1:{port}:" in done.stderr
