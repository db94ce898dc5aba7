"""Input checks, batching and reassembly in input order, failure parsing (no server)."""

from __future__ import annotations

import numpy as np
import pytest
from docarray import Document, DocumentArray

from clipserve import Client
from clipserve.client.core import Results, next_batch, plan_job
from clipserve.client.failures import parse_failure_description, reply_failures
from clipserve.client.jsonreply import reply_from_json, request_to_json_body
from clipserve.client.retry import RetryPolicy
from clipserve.errors import InvalidInputError
from clipserve.wire.clipserve_wire_pb2 import DataRequestProto
from clipserve.wire.messages import set_error
from clipserve.wire.ndarray import write_ndarray


def answer(request: DataRequestProto, skip: set[str] = frozenset(), reverse=False):
    """A reply as a server would send it: embedding [id, id] per doc, optionally reordered."""
    reply = DataRequestProto()
    reply.CopyFrom(request)
    docs = list(reply.data.docs.docs)
    del reply.data.docs.docs[:]
    for doc in reversed(docs) if reverse else docs:
        out = reply.data.docs.docs.add()
        out.CopyFrom(doc)
        if doc.id not in skip:
            write_ndarray(np.array([float(doc.id), -1.0], np.float32), out.embedding)
    return reply


@pytest.mark.parametrize("bad", ["hello", None, 42, b"bytes", Document(text="x")])
def test_wrong_content_type_fails_before_sending(bad) -> None:
    client = Client("grpc://127.0.0.1:1")  # nothing listens: must fail before connecting
    with pytest.raises(TypeError):
        client.encode(bad)


def test_bad_items_fail_before_sending() -> None:
    client = Client("grpc://127.0.0.1:1")
    with pytest.raises(TypeError, match="#1"):
        client.encode(["a", 3])
    with pytest.raises(TypeError, match="mixes"):
        client.encode(["a", Document(text="b")])
    with pytest.raises(InvalidInputError, match="nothing to encode"):
        client.encode([Document(text="a"), Document()])
    with pytest.raises(ValueError, match="batch_size"):
        client.encode(["a"], batch_size=0)
    with pytest.raises(ValueError, match="matches"):
        client.rank([Document(text="q")])
    with pytest.raises(TypeError, match="Documents"):
        client.rank(["q"])


def test_empty_inputs_need_no_server() -> None:
    client = Client("grpc://127.0.0.1:1")
    assert client.encode([]).shape[0] == 0
    assert len(client.encode(DocumentArray())) == 0
    assert client.encode(x for x in []).shape[0] == 0


def test_out_of_order_replies_come_back_in_input_order() -> None:
    texts = [f"sentence {i}" for i in range(10)]
    job = plan_job((t for t in texts), "/encode", None, 3, collect=True)
    assert job.kind == "strings" and job.total is None
    batches = []
    while (batch := next_batch(job, len(batches), sum(len(b.ids) for b in batches))) is not None:
        batches.append(batch)
    assert [len(b.ids) for b in batches] == [3, 3, 3, 1]
    assert batches[0].request.parameters["drop_image_content"] is True
    results = Results(job.kind, job.endpoint, True)
    for batch in reversed(batches):
        assert results.accept(batch, answer(batch.request, reverse=True)) == {}
    out = results.finish()
    assert out.shape == (10, 2)
    assert out[:, 0].tolist() == list(range(10))


def test_documents_get_embeddings_in_place_and_duplicates_are_matched_in_order() -> None:
    docs = [Document(text="a"), Document(text="b")]
    docs.append(docs[0])  # the same Document twice
    for i, d in enumerate(docs[:2]):
        d.id = str(i)
    job = plan_job(docs, "/encode", {"x": 1}, 8, collect=True)
    batch = next_batch(job, 0, 0)
    assert batch.ids == ["0", "1", "0"]
    results = Results(job.kind, job.endpoint, True)
    results.accept(batch, answer(batch.request))
    out = results.finish()
    assert isinstance(out, DocumentArray) and out[1] is docs[1]
    assert out[1].embedding.tolist() == [1.0, -1.0]


def test_failures_are_named_and_rows_are_nan() -> None:
    job = plan_job(["a", "b", "c"], "/encode", None, 8, collect=True)
    batch = next_batch(job, 0, 0)
    reply = answer(batch.request, skip={"1"})
    set_error(reply, "1 of 3 documents failed: '1': not a readable image", "InvalidInputError")
    assert reply_failures(reply, batch) == {"1": "not a readable image"}
    results = Results(job.kind, job.endpoint, True)
    results.accept(batch, reply)
    out = results.finish()
    assert np.isnan(out[1]).all() and out[0, 0] == 0 and out[2, 0] == 2


def test_failure_description_parsing() -> None:
    text = "3 of 9 documents failed: 'a': bad; really; 'b:c': x; ... and 1 more"
    assert parse_failure_description(text) == {"a": "bad; really", "b:c": "x"}
    assert parse_failure_description("unknown endpoint '/x'") == {}


def test_json_body_and_reply() -> None:
    job = plan_job(["hello"], "/encode", None, 8, collect=True)
    request = next_batch(job, 0, 0).request
    body = request_to_json_body(request)
    assert body["exec_endpoint"] == "/encode" == body["header"]["exec_endpoint"]
    assert body["data"][0]["text"] == "hello" and body["data"][0]["blob"] is None
    reply = reply_from_json(
        {
            "header": {"requestId": "r1", "status": {"code": "ERROR", "description": "boom"}},
            "routes": [{"executor": "gateway", "startTime": "2024-01-01T00:00:00Z",
                        "endTime": "2024-01-01T00:00:00.005Z"}],
            "data": [{"id": "q", "embedding": [1, 2], "matches": [
                {"id": "m", "text": "t", "scores": {"clip_score": {"value": 0.5}}}]}],
            "extra": 1,
        }
    )  # fmt: skip
    assert reply.header.request_id == "r1" and reply.header.status.code == 1
    route = reply.routes[0]
    assert route.end_time.ToNanoseconds() - route.start_time.ToNanoseconds() == 5_000_000
    assert reply.data.docs.docs[0].matches[0].scores["clip_score"].value == 0.5


def test_retry_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    policy = RetryPolicy(retries=3, backoff=0.2, max_backoff=0.5)
    for attempt, base in ((1, 0.2), (2, 0.4), (3, 0.5), (4, 0.5)):
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(0.75 * base <= delay <= 1.25 * base for delay in delays), (attempt, delays)
        assert max(delays) - min(delays) > 0.1 * base  # jittered, not one fixed value
