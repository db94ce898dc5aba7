"""clipserve's client installed alone (a wheel of this checkout, no server extra) on the
oldest and newest supported Python: first the base install, where strings work, docarray
is never imported and everything that needs an extra names it; then with
``clipserve[docarray]``, where the spec's Document API works unchanged. Both against real
servers (gRPC, HTTP, WebSocket) with the built-in model; embeddings are compared with the
in-process model."""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from clipserve.server.app import RunningServer, loopback_config, running_server
from tests.client_envs.venvs import VERSIONS, ClientEnv, build_wheel, find_python

DRIVER = Path(__file__).resolve().parent / "driver.py"
TEXTS = ["a photo of a cat", "a diagram of a power plant", "a bowl of soup"]
PROTOCOLS = ("grpc", "http", "websocket")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def server(builtin_model) -> Iterator[RunningServer]:
    with running_server(loopback_config(model="builtin"), model=builtin_model) as running:
        yield running


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, jpeg_photos) -> dict[str, Path]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("inputs")
    image_file = folder / "astronaut.jpg"
    image_file.write_bytes(jpeg_photos["astronaut"])
    tensor = np.asarray(Image.open(io.BytesIO(jpeg_photos["chelsea"])).convert("RGB"))[::2, ::2]
    tensor_file = folder / "chelsea.npy"
    np.save(tensor_file, np.ascontiguousarray(tensor))
    return {"image_file": image_file, "tensor_file": tensor_file}


@pytest.fixture(scope="module")
def expected(builtin_model, inputs) -> dict[str, np.ndarray]:
    image = inputs["image_file"].read_bytes()
    return {
        "texts": builtin_model.encode_texts(TEXTS),
        "image": builtin_model.encode_images([image])[0],
        "tensor": builtin_model.encode_images([np.load(inputs["tensor_file"])])[0],
    }


class Run:
    def __init__(self, out_dir: Path, results: dict) -> None:
        self.out_dir, self.results = out_dir, results

    def ok(self, name: str) -> dict:
        record = self.results[name]
        assert record["ok"], f"{name}: {record['error_type']}: {record['error']}\n{record['trace']}"
        return record

    def array(self, name: str) -> np.ndarray:
        return np.load(self.out_dir / f"{name}.npy")


def drive(env: ClientEnv, mode: str, server: RunningServer, inputs: dict, out_dir: Path) -> Run:
    out_dir.mkdir(parents=True, exist_ok=True)
    job = {
        "mode": mode,
        "servers": {p: server.urls[p] for p in PROTOCOLS},
        "texts": TEXTS,
        "image_file": str(inputs["image_file"]),
        "tensor_file": str(inputs["tensor_file"]),
        "out_dir": str(out_dir),
    }
    job_file = out_dir / "job.json"
    job_file.write_text(json.dumps(job))
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environment.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    done = subprocess.run(
        [str(env.python), str(DRIVER), str(job_file)],
        capture_output=True, text=True, timeout=600, env=environment, cwd=out_dir, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"driver failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return Run(out_dir, json.loads((out_dir / "results.json").read_text()))


@pytest.fixture(scope="module", params=VERSIONS)
def env(request: pytest.FixtureRequest) -> ClientEnv:
    python = find_python(request.param)
    if python is None:  # CI has both (pyenv); say so loudly where it does not
        pytest.fail(f"no Python {request.param} found (pythonX.Y on PATH or pyenv)")
    client_env = ClientEnv(request.param, python)
    client_env.create()
    return client_env


@pytest.fixture(scope="module")
def runs(env, wheel, server, inputs, tmp_path_factory) -> dict[str, Run]:
    """Both phases for one Python version: the base install, then the docarray extra."""
    out = tmp_path_factory.mktemp(f"py{env.version}")
    env.install_base(wheel)
    base = drive(env, "base", server, inputs, out / "base")
    env.install_docarray_extra(wheel)
    documents = drive(env, "documents", server, inputs, out / "documents")
    return {"base": base, "documents": documents}


def close(actual: np.ndarray, wanted: np.ndarray) -> None:
    np.testing.assert_allclose(actual, wanted, atol=2e-4)


def test_it_is_the_python_asked_for(runs, env) -> None:
    version = runs["base"].ok("python")["version"]
    assert f"{version[0]}.{version[1]}" == env.version


def test_importing_the_client_loads_nothing_heavy(runs) -> None:
    assert runs["base"].ok("import")["loaded"] == []
    assert runs["documents"].ok("import")["loaded"] == []  # docarray installed, not imported


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_strings_work_without_docarray(runs, expected, protocol) -> None:
    base = runs["base"]
    assert base.ok(f"strings_{protocol}")["type"] == "ndarray"
    embeddings = base.array(f"strings_{protocol}")
    close(embeddings[: len(TEXTS)], expected["texts"])
    close(embeddings[-1], expected["image"])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_documents_without_the_extra_name_it(runs, protocol) -> None:
    base = runs["base"]
    refused = base.ok(f"response_docs_{protocol}")
    assert refused["error_type"] == "MissingDependencyError"
    assert "pip install 'clipserve[docarray]'" in refused["error"]
    assert "clipserve[docarray]" in base.ok(f"not_an_input_{protocol}")["error"]


@pytest.mark.parametrize("command", ["serve", "models", "prepare"])
def test_server_commands_name_the_server_extra(runs, command) -> None:
    outcome = runs["base"].ok(f"cli_{command}")
    assert outcome["returncode"] != 0
    assert "pip install 'clipserve[server]'" in outcome["stderr"], outcome["stderr"]
    assert "Traceback" not in outcome["stderr"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_document_array_in_document_array_out(runs, expected, protocol) -> None:
    documents = runs["documents"]
    record = documents.ok(f"document_array_{protocol}")
    assert record["type"] == "DocumentArray" and record["same_objects"]
    assert record["ids"] == ["t0", "t1", "t2", "blob", "uri", "tensor"]
    embeddings = documents.array(f"docs_{protocol}")
    close(embeddings[:3], expected["texts"])
    close(embeddings[3], expected["image"])  # blob
    close(embeddings[4], expected["image"])  # uri (a local file the client reads)
    close(embeddings[5], expected["tensor"])
    close(documents.array(f"generator_{protocol}"), embeddings)
    close(documents.array(f"async_{protocol}"), embeddings)
    listed = documents.ok(f"list_and_generator_{protocol}")
    assert listed["types"] == ["DocumentArray", "DocumentArray"] and listed["lengths"] == [6, 6]
    assert documents.ok(f"aencode_{protocol}")["type"] == "DocumentArray"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_rank_orders_matches_by_score(runs, expected, protocol) -> None:
    ranked = runs["documents"].ok(f"rank_{protocol}")
    assert ranked["type"] == "DocumentArray"
    cosines = expected["texts"] @ expected["image"]
    wanted = [TEXTS[i] for i in np.argsort(-cosines)]
    assert ranked["texts"] == wanted
    assert ranked["scores"] == sorted(ranked["scores"], reverse=True)
    assert abs(sum(ranked["scores"]) - 1.0) < 1e-4
    np.testing.assert_allclose(ranked["cosines"], np.sort(cosines)[::-1], atol=2e-4)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_callbacks_get_documents(runs, protocol) -> None:
    documents = runs["documents"]
    record = documents.ok(f"callback_docs_{protocol}")
    assert record["type"] == "DocumentArray" and len(record["ids"]) == 6
    close(documents.array(f"callback_{protocol}"), documents.array(f"docs_{protocol}"))
