"""clipserve on a real two-node Ray cluster, with the hash and the ``sleep`` models.

One cluster for the module. The app ``spread`` (``sleep::50``: hash embeddings after 50 ms
per batch, so calls are in flight long enough to be cut) runs two replicas, one per node,
behind an in-process front-end; other tests deploy apps of their own. Results are compared
with the hash model run here: exact equality proves nothing was lost, duplicated or
reordered. The node-loss test goes last (it takes the worker node away).
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from ray import serve

from clipserve import Client
from clipserve.errors import AuthenticationError, ServerUnavailableError
from clipserve.models.hashing import HashModel
from tests.cluster.conftest import (
    TwoNodes,
    deployment_details,
    front_end,
    ray,
    ray_config,
    running_replicas,
    wait_until,
)
from tests.compat.harness import serve_subprocess

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

HASH = HashModel()
TEXTS = [f"sentence number {i} on the cluster" for i in range(150)]
SPREAD = "spread"


def encode_over(url: str, texts: list[str]) -> np.ndarray:
    with Client(url) as client:
        return client.encode(texts)


@pytest.fixture(scope="module")
def png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def spread(two_nodes: TwoNodes) -> Iterator[Any]:
    """Two ``sleep::50`` replicas, one per node, and one front-end that deployed them."""
    config = ray_config(
        two_nodes, SPREAD, model="sleep::50", num_replicas=2, max_replicas_per_node=1
    )
    with front_end(config) as (server, session):
        assert session.joined == "deployed"
        yield server


def test_the_replicas_run_on_both_nodes(two_nodes: TwoNodes, spread: Any) -> None:
    nodes = {replica["node_id"] for replica in running_replicas(SPREAD)}
    assert nodes == two_nodes.node_ids()


@pytest.mark.parametrize("scheme", ["grpc", "http", "websocket"])
def test_our_client_on_every_protocol(spread: Any, png: bytes, scheme: str) -> None:
    image = "data:image/png;base64," + base64.b64encode(png).decode()
    with Client(spread.urls[scheme]) as client:
        out = client.encode([*TEXTS, image, "after the image"], batch_size=16)
    after = HASH.encode_texts(["after the image"])
    expected = np.concatenate([HASH.encode_texts(TEXTS), HASH.encode_images([png]), after])
    np.testing.assert_array_equal(out, expected)


def test_openai_embeddings_through_the_cluster(spread: Any) -> None:
    body = {"model": "sleep::50", "input": TEXTS[:5]}
    reply = httpx.post(spread.urls["http"] + "/v1/embeddings", json=body, timeout=60).json()
    vectors = np.array([item["embedding"] for item in reply["data"]], dtype=np.float32)
    np.testing.assert_allclose(vectors, HASH.encode_texts(TEXTS[:5]), atol=1e-7)


def test_health_and_metrics_show_each_replica(two_nodes: TwoNodes, spread: Any) -> None:
    with Client(spread.urls["grpc"]) as client:
        client.encode(TEXTS, batch_size=10)  # both replicas get batches
    url = spread.urls["http"]

    def health_with_batches() -> dict[str, Any] | None:
        health = httpx.get(url + "/health").json()
        replicas = health["cluster"]["per_replica"]
        done = len(replicas) == 2 and all(r.get("batches", {}).get("text") for r in replicas)
        return health if done else None

    health = wait_until(health_with_batches, "both replicas' batch sizes in /health")
    assert health["status"] == "ok"
    assert health["replicas"] == {"wanted": 2, "running": 2}
    cluster = health["cluster"]
    assert cluster["app"] == SPREAD and cluster["replica_states"] == {"RUNNING": 2}
    assert cluster["address"] == two_nodes.address and cluster["joined"] == "deployed"
    assert {r["node_id"] for r in cluster["per_replica"]} == {n[:12] for n in two_nodes.node_ids()}
    for replica in cluster["per_replica"]:
        assert set(replica["queue_depth"]) == {"text", "image"}
        assert 1 <= replica["batches"]["text"]["mean_size"] <= 32

    metrics = {
        family.name: family
        for family in text_string_to_metric_families(httpx.get(url + "/metrics").text)
    }
    assert metrics["clipserve_cluster_replicas_wanted"].samples[0].value == 2
    assert metrics["clipserve_cluster_replicas_running"].samples[0].value == 2
    ids = {replica["replica"] for replica in cluster["per_replica"]}
    counted = {
        s.labels["replica"]
        for s in metrics["clipserve_replica_batch_size"].samples
        if s.name.endswith("_count") and s.labels["modality"] == "text" and s.value > 0
    }
    assert counted == ids
    depths = {s.labels["replica"] for s in metrics["clipserve_replica_queue_depth"].samples}
    assert depths == ids
    calls = {s.labels["outcome"]: s.value for s in metrics["clipserve_cluster_calls"].samples}
    assert calls["ok"] > 0


def test_a_second_front_end_attaches_by_name(two_nodes: TwoNodes, spread: Any) -> None:
    """The second front-end, with a token of its own, serves the same replicas."""
    before = {replica["replica_id"] for replica in running_replicas(SPREAD)}
    config = ray_config(two_nodes, SPREAD, model="sleep::50", deploy="attach")
    with front_end(config.replace(auth_token="s3cret")) as (second, session):
        assert session.joined == "attached"
        for server, credential in ((spread, None), (second, {"Authorization": "s3cret"})):
            with Client(server.urls["grpc"], credential=credential) as client:
                out = client.encode(TEXTS[:40])
            np.testing.assert_array_equal(out, HASH.encode_texts(TEXTS[:40]))
        with Client(second.urls["http"]) as client, pytest.raises(AuthenticationError):
            client.encode(TEXTS[:1])
    # no redeploy on attach, and the attached front-end left the app running on exit
    assert {replica["replica_id"] for replica in running_replicas(SPREAD)} == before


def test_the_embedding_cache_sits_in_front_of_the_cluster(two_nodes: TwoNodes, spread: Any) -> None:
    """With a cache, a repeated input is answered by the front-end: no call to a replica."""
    config = ray_config(two_nodes, SPREAD, model="sleep::50", deploy="attach", cache_mb=16)
    texts = [f"cached sentence {i}" for i in range(64)]
    with front_end(config) as (cached, _):
        engine = cached.server.engine
        first = encode_over(cached.urls["grpc"], texts)
        calls = engine.engine.calls["ok"]
        again = encode_over(cached.urls["grpc"], texts)
        assert engine.engine.calls["ok"] == calls and engine.cache_info()["hits"] == 64
        health = httpx.get(cached.urls["http"] + "/health").json()
    np.testing.assert_array_equal(first, HASH.encode_texts(texts))
    np.testing.assert_array_equal(again, first)
    assert health["cache"]["enabled"] and health["replicas"] == {"wanted": 2, "running": 2}


def test_a_family_model_runs_on_replicas_on_both_nodes(
    two_nodes: TwoNodes, png: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A dual-encoder family (a tiny random SigLIP checkpoint, loaded by path through the
    registry on each replica): embeddings equal the model in this process, and /health and
    /rank follow the family (its languages, its sigmoid score rule) as a single process does."""
    from clipserve.models.registry import load_model
    from tests.models.family_testkit import save_siglip

    directory = save_siglip(tmp_path_factory.mktemp("siglip") / "model")
    model = load_model(str(directory))
    texts = ["a photo of a cat", "Two dogs playing in the snow!", *TEXTS[:30]]
    config = ray_config(
        two_nodes, "siglip", model=str(directory), num_replicas=2, max_replicas_per_node=1
    )
    with front_end(config) as (server, _):
        assert {r["node_id"] for r in running_replicas("siglip")} == two_nodes.node_ids()
        image = "data:image/png;base64," + base64.b64encode(png).decode()
        with Client(server.urls["http"]) as client:
            out = client.encode([*texts, image], batch_size=8)
        health = httpx.get(server.urls["http"] + "/health", timeout=30).json()
        query = {"id": "photo", "blob": base64.b64encode(png).decode(), "matches": [
            {"id": f"t{i}", "text": text} for i, text in enumerate(texts[:2])
        ]}  # fmt: skip
        reply = httpx.post(server.urls["http"] + "/rank", json={"data": [query]}, timeout=60)
    expected = np.concatenate([model.encode_texts(texts), model.encode_images([png])])
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert (health["family"], health["languages"], health["dim"]) == (
        model.family, model.languages, model.dim
    )  # fmt: skip
    assert health["clip_score"] == model.score_rule.describe() and "sigmoid" in health["clip_score"]
    assert reply.status_code == 200, reply.text
    unit = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    cosines = unit[:2] @ unit[-1]
    scores = model.score_rule.scores(cosines)
    for match in reply.json()["data"][0]["matches"]:
        assert match["scores"]["clip_score"]["op_name"] == "sigmoid"
        assert match["scores"]["clip_score"]["value"] == pytest.approx(
            scores[int(match["id"][1:])], abs=1e-5
        )
    model.close()


def test_the_cli_says_which_cluster_it_joined(
    two_nodes: TwoNodes, spread: Any, tmp_path: Path
) -> None:
    """``--ray auto`` finds the cluster this machine runs (its note in RAY_TMPDIR)."""
    log = tmp_path / "serve.log"
    args = ["--ray", "auto", "--ray-app", SPREAD, "--ray-deploy", "attach", "--model", "sleep::50"]
    args += ["--cache-mb", "0"]
    with serve_subprocess(args, log_file=log) as process:
        out = encode_over(f"grpc://127.0.0.1:{process.grpc_port}", TEXTS)
    np.testing.assert_array_equal(out, HASH.encode_texts(TEXTS))
    text = log.read_text()
    assert f"clipserve: joined Ray cluster at {two_nodes.address} (2 nodes" in text
    assert f"clipserve: attached Serve app '{SPREAD}'" in text
    assert "clipserve: stopped" in text  # SIGTERM drained and exited cleanly


def kill_a_busy_replica(app: str) -> str:
    """Kill (ray.kill) the actor of the replica with the most calls in flight."""
    handle = serve.get_deployment_handle("Embedder", app)
    stats = [s for s in handle.broadcast("stats").results(timeout_s=60) if isinstance(s, dict)]
    victim = max(stats, key=lambda s: s["calls_in_flight"])
    names = ray.util.list_named_actors(all_namespaces=True)
    name = next(a for a in names if a["name"].endswith(f"#{victim['replica']}"))
    ray.kill(ray.get_actor(name["name"], namespace=name["namespace"]), no_restart=True)
    return str(victim["replica"])


def stream_with(spread: Any, texts: list[str], at: int, action: Any) -> np.ndarray:
    """Encode ``texts`` over one gRPC stream (client retries on), running ``action`` once
    the client has pulled ``at`` inputs: requests are in flight on both replicas then."""
    done: list[Any] = []

    def inputs() -> Iterator[str]:
        for index, text in enumerate(texts):
            if index == at:
                done.append(action())
            yield text

    with Client(spread.urls["grpc"], retries=5, retry_backoff=0.2) as client:
        out = client.encode(inputs(), batch_size=20)
    assert done, "the action never ran"
    return out


def test_a_killed_replica_costs_no_request(spread: Any) -> None:
    engine = spread.server.engine
    failures = engine.monitor.replica_failures
    texts = [f"kill test {i}" for i in range(2400)]
    killed: list[str] = []
    out = stream_with(spread, texts, 600, lambda: killed.append(kill_a_busy_replica(SPREAD)))
    np.testing.assert_array_equal(out, HASH.encode_texts(texts))  # each once, in order
    assert engine.monitor.replica_failures > failures  # the kill hit calls in flight
    assert engine.calls["resent"] > 0

    def replaced() -> bool:
        ids = {replica["replica_id"] for replica in running_replicas(SPREAD)}
        return len(ids) == 2 and killed[0] not in ids

    wait_until(replaced, "Serve started a new replica for the killed one")
    url = spread.urls["http"]
    wait_until(lambda: httpx.get(url + "/health").json()["status"] == "ok", "health back to ok")


def test_autoscaling_adds_a_replica_under_load(two_nodes: TwoNodes) -> None:
    scaling = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1}
    scaling.update(upscale_delay_s=0, downscale_delay_s=600, look_back_period_s=12)
    config = ray_config(two_nodes, "auto", model="sleep::100", autoscaling_config=scaling)
    with front_end(config) as (server, _):
        assert len(running_replicas("auto")) == 1
        stop = threading.Event()

        def load() -> None:
            with Client(server.urls["grpc"], prefetch=8) as client:
                while not stop.is_set():
                    client.encode([f"load {i}" for i in range(256)], batch_size=8)

        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        try:

            def states() -> dict[str, int]:
                return serve.status().applications["auto"].deployments["Embedder"].replica_states

            wait_until(lambda: states().get("RUNNING") == 2, "Serve scaled 'auto' to 2 replicas")
        finally:
            stop.set()
            worker.join(timeout=120)
        assert deployment_details("auto")["target_num_replicas"] == 2
        health = httpx.get(server.urls["http"] + "/health").json()
        assert health["replicas"]["wanted"] == 2


def test_no_replica_gives_a_clear_error_not_a_hang(two_nodes: TwoNodes) -> None:
    config = ray_config(two_nodes, "gone", model="hash", num_replicas=1, unavailable_after_s=2.0)
    with front_end(config) as (server, _):
        with Client(server.urls["grpc"]) as client:
            np.testing.assert_array_equal(client.encode(["here"]), HASH.encode_texts(["here"]))
        serve.delete("gone")
        with Client(server.urls["grpc"]) as client, pytest.raises(ServerUnavailableError) as error:
            client.encode(["the app is gone"])
        assert "Serve app 'gone'" in str(error.value)
        url = server.urls["http"]
        reply = httpx.post(url + "/v1/embeddings", json={"input": ["x"]}, timeout=60)
        assert reply.status_code == 503 and "Serve app 'gone'" in reply.json()["error"]["message"]
        ready = wait_until(
            lambda: (r := httpx.get(url + "/readyz")).status_code == 503 and r,
            "/readyz reports no replica",
        )
        assert ready.json()["status"] == "unavailable"
        # the engine seam's health (the cluster monitor's verdict): every health path, gRPC too
        live = wait_until(
            lambda: (r := httpx.get(url + "/healthz")).status_code == 503 and r,
            "/healthz reports the engine unhealthy",
        )
        assert "Serve app 'gone'" in live.json()["reason"]
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            reply = check(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_losing_a_node_costs_no_request(two_nodes: TwoNodes, spread: Any) -> None:
    """Last: the worker node goes, with its replica; its calls are resent to the other one,
    and health reports the lost capacity (Serve cannot place the replacement: one per node)."""
    texts = [f"node loss {i}" for i in range(1600)]
    out = stream_with(
        spread, texts, 400, lambda: two_nodes.cluster.remove_node(two_nodes.worker, False)
    )
    np.testing.assert_array_equal(out, HASH.encode_texts(texts))
    url = spread.urls["http"]

    def degraded() -> dict[str, Any] | None:
        health = httpx.get(url + "/health").json()
        return health if health["status"] == "degraded" else None

    health = wait_until(degraded, "/health reports the lost replica")
    assert health["replicas"] == {"wanted": 2, "running": 1}
