"""The published clip-client 0.8.3 through the Ray path, on the built-in model.

The repository's own Serve config (deploy/serve-config.yaml) is deployed on a two-node
cluster the way ``serve run`` deploys it, changed only where this machine differs from a
GPU cluster: the built-in model on CPU, loopback and free ports. Each node offers one (fake)
GPU and the custom resource ``frontend``, so the config's placement rules hold as written:
one Embedder replica per GPU and one Frontend replica per node. clip-client then runs the
compatibility suite's operations (tests/compat) against an in-cluster Frontend on grpc,
http and websocket, and against a TLS front-end outside the cluster that attaches to the
same app by name (grpcs). Expected values come from the built-in model in this process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml
from ray import serve

from clipserve import Client
from tests.cluster.conftest import TwoNodes, front_end, ray_config, wait_until
from tests.compat.harness import DriverResults
from tests.compat.test_clip_client_builtin import (  # noqa: F401 - the same tests, re-run here
    drive,
    expected,
    test_a_bad_image_fails_the_call_naming_the_document,
    test_embeddings_equal_the_model_in_process,
    test_one_client_at_batch_64_over_http_is_never_refused,
    test_one_request_larger_than_4_mib,
    test_profile_reports_real_timings,
    test_rank_image_against_texts,
    test_rank_text_against_images,
    test_strings_give_an_ndarray_and_documents_a_document_array,
)

pytestmark = [pytest.mark.cluster, pytest.mark.compat, pytest.mark.timeout(1200)]
REPO = Path(__file__).resolve().parents[2]
APP = "clipserve"
PROTOCOLS = ["grpc", "http", "websocket", "grpcs"]


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[TwoNodes]:
    """This module's cluster: each node also has one GPU (fake: nothing here uses CUDA)
    and the "frontend" resource, as a GPU node and a front-end pod would."""
    from tests.cluster import conftest

    with conftest.two_node_cluster(num_gpus=1, resources={"frontend": 1}) as nodes:
        yield nodes


def config_for_this_machine() -> dict[str, Any]:
    config = yaml.safe_load((REPO / "deploy" / "serve-config.yaml").read_text())
    (application,) = config["applications"]
    args = application["args"]
    args.update(model="builtin", device="cpu", max_batch_size=32, preprocess_workers=1)
    args["frontend"].update(host="127.0.0.1", grpc_port=0, http_port=0)
    args["frontend"]["ray"]["monitor_interval_s"] = 0.5
    for deployment in application["deployments"]:
        deployment["ray_actor_options"]["num_cpus"] = 1
        if deployment["name"] == "Embedder":
            deployment["max_ongoing_requests"] = 8
            args["max_queue_items"] = 8 * args["max_batch_size"]
            deployment["autoscaling_config"].update(min_replicas=2, max_replicas=2)
    return config


@pytest.fixture(scope="module")
def servers(two_nodes: TwoNodes, compat_cert: tuple[Path, Path]) -> Iterator[dict[str, Any]]:
    """The Serve config deployed as ``serve run`` does; "plain" is one of its in-cluster
    Frontend replicas, "tls" a front-end in this process attached to the app by name."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config_for_this_machine())
    _get_global_client().deploy_apps(schema)
    status = lambda: serve.status().applications.get(APP)  # noqa: E731
    wait_until(lambda: status() and status().status == "RUNNING", "the config's app runs", 900)
    handle = serve.get_deployment_handle("Frontend", APP)
    frontends = handle.broadcast("urls").results(timeout_s=60)
    cert, key = compat_cert
    tls = ray_config(two_nodes, APP, model="builtin", deploy="attach")
    tls = tls.replace(tls_cert=str(cert), tls_key=str(key))
    with contextlib.ExitStack() as stack:
        attached, session = stack.enter_context(front_end(tls))
        assert session.joined == "attached"
        yield {
            "frontends": frontends,
            "plain": SimpleNamespace(**frontends[0]),
            "tls": attached,
        }
    serve.delete(APP)


def test_one_frontend_per_node_one_replica_per_gpu(servers: dict[str, Any], two_nodes) -> None:
    from tests.cluster.conftest import deployment_details

    for name in ("Embedder", "Frontend"):
        replicas = deployment_details(APP, name)["replicas"]
        running = [r for r in replicas if r["state"] == "RUNNING"]
        assert {r["node_id"] for r in running} == two_nodes.node_ids(), name


def test_our_client_through_each_frontend_and_protocol(
    servers: dict[str, Any], builtin_model: Any, photos: Any
) -> None:
    texts = [f"a photo number {i}" for i in range(40)]
    images = [str(path) for path in photos.jpeg.values()]
    want = np.concatenate([builtin_model.encode_texts(texts), builtin_model.encode_images(
        [Path(p).read_bytes() for p in images])])  # fmt: skip
    for frontend in servers["frontends"]:
        for scheme, port in (("grpc", "grpc_port"), ("http", "http_port"), ("ws", "http_port")):
            with Client(f"{scheme}://127.0.0.1:{frontend[port]}") as client:
                got = client.encode(texts + images, batch_size=8)
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"{scheme} {frontend}")


@pytest.fixture(scope="module", params=PROTOCOLS)
def run(
    request: pytest.FixtureRequest,
    servers: dict[str, Any],
    clip_client_python: Path,
    photos: Any,
    compat_cert: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> DriverResults:
    """Every op of the compatibility suite through one clip-client process: grpc, http and
    websocket to an in-cluster Frontend, grpcs to the attached TLS front-end."""
    return drive(request.param, servers, clip_client_python, photos, compat_cert, tmp_path_factory)


def test_the_frontends_health_shows_the_shared_replicas(servers: dict[str, Any]) -> None:
    import httpx

    plain = servers["plain"]
    health = httpx.get(f"http://127.0.0.1:{plain.http_port}/health").json()
    assert health["model"] == "builtin" and health["status"] == "ok"
    assert health["replicas"] == {"wanted": 2, "running": 2}
    attached = servers["tls"].server.engine.describe()
    mine = {r["replica"] for r in health["cluster"]["per_replica"]}
    assert mine == {r["replica"] for r in attached["cluster"]["per_replica"]}
    assert health["cluster"]["app"] == APP
