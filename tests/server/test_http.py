"""The HTTP front-end: the spec's curl examples run by the real ``curl``, the jina-shaped
JSON that clip-client posts, protobuf bodies, OpenAI embeddings, health, metrics, errors."""

from __future__ import annotations

import base64
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from google.protobuf import json_format

from clipserve.models.cpu import cpu_features, precision_verdicts
from clipserve.server.app import loopback_config, running_server
from clipserve.wire import DataRequestProto, StatusProto
from clipserve.wire.ndarray import read_ndarray
from tests.engine.helpers import BLOCK, WrappedModel
from tests.reliability.public_origin import PUBLIC_IP, public_image_host
from tests.server.conftest import CORS_ORIGIN, text_request
from tests.waiting import FAILSAFE_S

# The spec's three examples, verbatim apart from the address (the spec leaves it out).
PROTOBUF_BODY = {"Content-Type": "application/x-protobuf"}
CURL_TEXT = """curl -s -X POST "$URL" \\
     -H 'Content-Type: application/json' \\
     -d '{"data":[{"text": "First do it"}, {"text": "then do it right"}, {"text": "then do it better"}], "execEndpoint":"/"}'"""  # noqa: E501
CURL_BLOB = """curl -s -X POST "$URL" \\
     -H 'Content-Type: application/json' \\
     -d '{"data":[{"text": "First do it"}, {"blob":"'"$( base64 test-1.jpeg)"'" }], "execEndpoint":"/"}'"""  # noqa: E501
CURL_URI = """curl -s -X POST "$URL" \\
     -H 'Content-Type: application/json' \\
     -d '{"data":[{"text": "First do it"}, {"uri": "%s"}], "execEndpoint":"/"}'"""


def run_curl(script: str, url: str, cwd: str | None = None) -> dict:
    done = subprocess.run(
        ["bash", "-c", script],
        env={"URL": url, "PATH": "/usr/bin:/bin", "NO_PROXY": "*"},
        cwd=cwd,
        capture_output=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


def test_curl_text_example(hash_server, hash_model):
    reply = run_curl(CURL_TEXT, hash_server.urls["http"] + "/post")
    texts = ["First do it", "then do it right", "then do it better"]
    assert [doc["text"] for doc in reply["data"]] == texts
    expected = hash_model.encode_texts(texts)
    got = np.array([doc["embedding"] for doc in reply["data"]], dtype=np.float32)
    np.testing.assert_array_equal(got, expected)
    assert all(doc["id"] for doc in reply["data"])  # ids are filled in when none is sent
    assert reply["header"]["status"]["code"] == 0
    assert [route["executor"] for route in reply["routes"]] == ["gateway", "clip_t"]


def test_curl_base64_blob_example(hash_server, hash_model, jpeg_photos, tmp_path):
    (tmp_path / "test-1.jpeg").write_bytes(jpeg_photos["chelsea"])
    reply = run_curl(CURL_BLOB, hash_server.urls["http"] + "/post", cwd=str(tmp_path))
    assert reply["header"]["status"]["code"] == 0
    image = np.array(reply["data"][1]["embedding"], dtype=np.float32)
    np.testing.assert_array_equal(image, hash_model.encode_images([jpeg_photos["chelsea"]])[0])
    assert base64.b64decode(reply["data"][1]["blob"]) == jpeg_photos["chelsea"]


def test_curl_uri_example_fetches_a_public_image_on_a_default_server(
    hash_server, hash_model, jpeg_photos, monkeypatch
):
    """The spec's remote-image example against a default server: the URL names a public
    host (resolved by a fake DNS answer and routed to a loopback origin, see
    ``public_image_host``), and the image is fetched and embedded."""
    photo = jpeg_photos["chelsea"]
    with public_image_host(hash_server, monkeypatch, photo) as (url, transport):
        reply = run_curl(CURL_URI % url, hash_server.urls["http"] + "/post")
    assert reply["header"]["status"]["code"] == 0, reply["header"]["status"]
    image = np.array(reply["data"][1]["embedding"], dtype=np.float32)
    np.testing.assert_array_equal(image, hash_model.encode_images([photo])[0])
    assert [address for address, _ in transport.connected] == [PUBLIC_IP]
    # verbatim (an empty uri): on "/" an empty document is embedded as "" like profile()
    verbatim = run_curl(CURL_URI % "", hash_server.urls["http"] + "/post")
    assert verbatim["header"]["status"]["code"] == 0


def test_curl_uri_example_on_a_private_address_is_refused_naming_the_rule(hash_server):
    reply = run_curl(CURL_URI % "http://10.0.0.8/cat.jpg", hash_server.urls["http"] + "/post")
    status = reply["header"]["status"]
    assert status["code"] == StatusProto.ERROR
    assert "10.0.0.8 is a private address" in status["description"]
    assert "--uri-allow-private" in status["description"]
    assert reply["data"][0]["embedding"] is not None  # the text still got its embedding


def test_openapi_lists_the_post_paths_clip_client_looks_for(hash_server):
    spec = httpx.get(hash_server.urls["http"] + "/openapi.json").json()
    posts = {path.strip("/") for path, methods in spec["paths"].items() if "post" in methods}
    assert {"post", "encode", "rank"} <= posts


def test_clip_client_shaped_body_on_encode(hash_server, hash_model):
    null_doc = dict.fromkeys(["parent_id", "granularity", "adjacency", "blob", "tensor",
                              "mime_type", "weight", "uri", "tags", "offset", "location",
                              "embedding", "modality", "evaluations", "scores", "chunks",
                              "matches"])  # fmt: skip
    body = {
        "header": {"request_id": "req-1", "exec_endpoint": "/encode"},
        "parameters": {"drop_image_content": True},
        "data": [{**null_doc, "id": "d1", "text": "hello"}, {**null_doc, "id": "d2", "text": "x"}],
        "exec_endpoint": "/encode",
    }
    response = httpx.post(hash_server.urls["http"] + "/encode", json=body)
    assert response.status_code == 200
    reply = response.json()
    assert set(reply) == {"header", "parameters", "routes", "data"}  # strict parse on client
    assert reply["header"]["requestId"] == "req-1"
    assert [doc["id"] for doc in reply["data"]] == ["d1", "d2"]
    np.testing.assert_array_equal(
        np.array(reply["data"][0]["embedding"], dtype=np.float32),
        hash_model.encode_texts(["hello"])[0],
    )
    # what clip-client does with everything but "data": parse it strictly as proto JSON
    json_format.ParseDict({k: v for k, v in reply.items() if k != "data"}, DataRequestProto())


def test_rank_orders_matches(hash_server):
    body = {
        "data": [
            {
                "id": "q",
                "text": "query",
                "matches": [{"id": "m1", "text": "a"}, {"id": "m2", "text": "b"}],
            }
        ]
    }
    reply = httpx.post(hash_server.urls["http"] + "/rank", json=body).json()
    matches = reply["data"][0]["matches"]
    scores = [m["scores"]["clip_score"]["value"] for m in matches]
    assert scores == sorted(scores, reverse=True)
    assert {m["scores"]["clip_score_cosine"]["op_name"] for m in matches} == {"cosine"}


def test_protobuf_body_and_reply(hash_server, hash_model):
    request = text_request("pb", "fast path")
    response = httpx.post(
        hash_server.urls["http"] + "/post",
        content=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf", "Accept": "application/x-protobuf"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    reply = DataRequestProto.FromString(response.content)
    assert reply.header.request_id == "pb"
    embedding = read_ndarray(reply.data.docs.docs[0].embedding)
    np.testing.assert_array_equal(embedding, hash_model.encode_texts(["fast path"])[0])


def test_openai_embeddings(hash_server, hash_model):
    body = {"input": ["one", "two"], "model": hash_model.name}
    reply = httpx.post(hash_server.urls["http"] + "/v1/embeddings", json=body).json()
    assert reply["object"] == "list"
    got = np.array([item["embedding"] for item in reply["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, hash_model.encode_texts(["one", "two"]), atol=1e-6)
    wrong = httpx.post(hash_server.urls["http"] + "/v1/embeddings", json={"input": 3})
    assert wrong.status_code == 400
    assert wrong.json()["error"]["type"] == "InvalidInputError"


def test_health_and_readiness(hash_server):
    base = hash_server.urls["http"]
    for path in ("/health", "/healthz", "/readyz"):
        body = httpx.get(base + path).json()
        assert body["status"] == "ok"
        assert body["dim"] == hash_server.model.dim
    cpu = httpx.get(base + "/health").json()["cpu"]
    assert cpu["kind"] == cpu_features().kind and cpu["name"]
    assert {p: v["status"] for p, v in cpu["precisions"].items()} == {
        v.precision: v.status for v in precision_verdicts(cpu_features())
    }
    state = hash_server.server.http_state
    state.ready = False  # what stop() does first
    try:
        assert httpx.get(base + "/readyz").status_code == 503
        assert httpx.get(base + "/health").status_code == 200
    finally:
        state.ready = True


def test_metrics_count_http_requests(hash_server):
    base = hash_server.urls["http"]
    httpx.post(base + "/post", json={"data": [{"text": "counted"}]})
    httpx.post(base + "/v1/embeddings", json={"input": ["counted", "too"]})
    httpx.post(base + "/v1/embeddings", content=b"{not json")
    text = httpx.get(base + "/metrics").text
    assert 'clipserve_requests_total{endpoint="/",protocol="http",status="ok"}' in text
    assert "clipserve_batch_size_bucket" in text
    assert 'clipserve_request_seconds_count{endpoint="/",protocol="http"}' in text
    # the OpenAI route is counted by the same dispatcher, latency included
    openai = 'endpoint="/v1/embeddings",protocol="http"'
    assert f'clipserve_requests_total{{{openai},status="ok"}}' in text
    assert f'clipserve_requests_total{{{openai},status="invalid"}}' in text
    assert f'clipserve_documents_total{{{openai},status="ok"}}' in text
    assert f"clipserve_request_seconds_count{{{openai}}}" in text


def test_error_statuses(hash_server, tight_server):
    base = hash_server.urls["http"]
    malformed = httpx.post(
        base + "/post", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 400
    assert "malformed JSON" in malformed.json()["error"]["message"]
    unknown = httpx.post(base + "/post", json={"data": [{"text": "x"}], "execEndpoint": "/nope"})
    assert unknown.status_code == 400
    assert httpx.post(base + "/nowhere", json={}).status_code == 404
    assert httpx.get(base + "/post").status_code == 405
    tight = tight_server.urls["http"]
    too_big = httpx.post(tight + "/post", content=b"x" * (1024 * 1024 + 1))
    assert too_big.status_code == 413
    metrics = httpx.get(tight + "/metrics").text  # an oversized body is refused, not an error
    assert 'clipserve_requests_total{endpoint="/",protocol="http",status="refused"}' in metrics


def test_a_full_queue_is_429(hash_model):
    model = WrappedModel(hash_model)
    config = loopback_config(max_queue_items=4, max_queue_wait_s=0.0, max_batch_size=64)
    with running_server(config, model=model) as server, ThreadPoolExecutor(1) as pool:
        url = server.urls["http"] + "/post"
        fill = text_request("fill", BLOCK, "fill 1", "fill 2", "fill 3").SerializeToString()
        filling = pool.submit(
            httpx.post, url, content=fill, headers=PROTOBUF_BODY, timeout=FAILSAFE_S
        )
        try:
            assert model.forward_entered.wait(FAILSAFE_S)  # the queue's 4 items are held
            refused = httpx.post(url, json={"data": [{"text": "no room"}]})
        finally:
            model.release.set()
        assert filling.result().status_code == 200
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "OverloadedError"


def test_cors_preflight_and_headers(tight_server, hash_server):
    url = tight_server.urls["http"] + "/post"
    preflight = httpx.options(
        url,
        headers={
            "Origin": CORS_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == CORS_ORIGIN
    posted = httpx.post(url, json={"data": [{"text": "x"}]}, headers={"Origin": CORS_ORIGIN})
    assert posted.headers["access-control-allow-origin"] == CORS_ORIGIN
    plain = httpx.post(
        hash_server.urls["http"] + "/post", json={"data": []}, headers={"Origin": CORS_ORIGIN}
    )
    assert "access-control-allow-origin" not in plain.headers


@pytest.mark.parametrize("path", ["/post", "/encode"])
def test_builtin_model_over_http_matches_in_process(
    builtin_server, builtin_model, jpeg_photos, path
):
    photo = jpeg_photos["astronaut"]
    body = {
        "data": [
            {"id": "t", "text": "an astronaut"},
            {"id": "i", "blob": base64.b64encode(photo).decode()},
        ],
        "execEndpoint": "/",
    }
    reply = httpx.post(builtin_server.urls["http"] + path, json=body, timeout=60).json()
    by_id = {doc["id"]: np.array(doc["embedding"], dtype=np.float32) for doc in reply["data"]}
    np.testing.assert_allclose(
        by_id["t"], builtin_model.encode_texts(["an astronaut"])[0], atol=1e-5
    )
    np.testing.assert_allclose(by_id["i"], builtin_model.encode_images([photo])[0], atol=1e-5)
