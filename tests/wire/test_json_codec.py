import base64

import numpy as np
import pytest

from clipserve.errors import InvalidInputError
from clipserve.wire import DataRequestProto
from clipserve.wire.json_codec import loads, request_from_json, request_to_json
from clipserve.wire.messages import add_route, doc_kind, endpoint_of, new_request, set_error
from clipserve.wire.ndarray import read_ndarray, write_ndarray


def test_curl_body_with_wrapped_base64_blob_parses():
    blob = bytes(range(256)) * 3
    wrapped = base64.encodebytes(blob).decode()  # line breaks every 76 chars, like base64(1)
    assert "\n" in wrapped
    body = '{"data":[{"text": "First do it"}, {"blob":"' + wrapped + '" }], "execEndpoint":"/"}'
    request = request_from_json(loads(body.encode()))
    docs = request.data.docs.docs
    assert [doc_kind(d) for d in docs] == ["text", "image"]
    assert docs[0].text == "First do it" and docs[1].blob == blob
    assert endpoint_of(request) == "/"


def test_clip_client_style_body_with_snake_and_camel_keys():
    body = {
        "header": {"requestId": "r1", "exec_endpoint": "/encode"},
        "parameters": {"drop_image_content": True},
        "data": [{"id": "a", "text": "hi", "mimeType": "text/plain", "blob": None, "tensor": None}],
        "exec_endpoint": "/encode/ViT-B-32",
    }
    request = request_from_json(body)
    assert request.header.request_id == "r1"
    assert endpoint_of(request) == "/encode"
    assert request.data.docs.docs[0].mime_type == "text/plain"
    assert request.parameters["drop_image_content"] is True


def test_tensor_as_nested_list_round_trips():
    tensor = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    request = request_from_json({"data": [{"id": "t", "tensor": tensor.tolist()}]})
    doc = request.data.docs.docs[0]
    assert doc_kind(doc) == "image"
    np.testing.assert_array_equal(read_ndarray(doc.tensor), tensor)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "malformed JSON"),
        (b'{"data": [{"text": "a"}]}\xff', "UTF-8"),
        (b'{"data": {"x": 1}}', "'data' must be a list"),
        (b'{"data": [{"id": "d1", "blob": "@@@"}]}', "document 'd1': blob is not valid base64"),
        (b'{"data": [{"id": "d2", "tensor": [[1, 2], [3]]}]}', "document 'd2'.tensor"),
        (b'{"data": [], "bogus": 1}', "unknown request field(s): bogus"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"data": [{"text": 5}]}', "text must be a string"),
    ],
)
def test_bad_bodies_raise_clear_errors(body, message):
    with pytest.raises(InvalidInputError) as info:
        request_from_json(loads(body))
    assert message in str(info.value)


def test_response_json_shape_has_status_routes_and_embedding():
    request = new_request([], endpoint="/encode", request_id="rid")
    doc = request.data.docs.docs.add(id="x", text="hello")
    write_ndarray(np.array([0.5, -1.0], dtype=np.float32), doc.embedding)
    add_route(request, "gateway", 1_000_000_000, 1_000_000_000)  # widened to 1 ms
    out = request_to_json(request)
    assert set(out) == {"header", "parameters", "routes", "data"}
    assert out["header"]["requestId"] == "rid" and out["header"]["status"]["code"] == 0
    assert out["data"][0]["embedding"] == [0.5, -1.0]
    route = request.routes[0]
    assert route.end_time.ToNanoseconds() - route.start_time.ToNanoseconds() == 1_000_000
    set_error(request, "boom", "ModelError")
    assert request_to_json(request)["header"]["status"]["code"] == 1


def test_ndarray_rejects_mismatched_buffer_and_object_dtype():
    request = DataRequestProto()
    doc = request.data.docs.docs.add(id="z")
    write_ndarray(np.zeros((2, 2), dtype=np.float32), doc.tensor)
    doc.tensor.dense.buffer = b"\x00" * 3
    with pytest.raises(InvalidInputError, match="buffer holds 3 bytes"):
        read_ndarray(doc.tensor)
    doc.tensor.dense.dtype = "|O"
    with pytest.raises(InvalidInputError, match="not numeric"):
        read_ndarray(doc.tensor)


def test_nested_documents_keep_every_field_both_ways():
    """What docarray's to_dict sends for a chunk comes back as sent (HTTP carries documents
    the server does not embed, e.g. outside ``access_paths``)."""
    chunk = {
        "id": "c1", "parent_id": "root", "granularity": 1, "adjacency": 2, "weight": 0.5,
        "offset": 3.0, "location": [1.0, 2.5], "text": "a chunk", "mime_type": "text/plain",
        "tags": {"page": 4}, "scores": {"s": {"value": 0.25, "op_name": "cosine"}},
        "evaluations": {"e": {"value": 1.0, "description": "why", "refId": "root"}},
    }  # fmt: skip
    body = {"data": [{"id": "root", "chunks": [chunk], "matches": [{"id": "m", "text": "x"}]}]}
    request = request_from_json(body)
    proto = request.data.docs.docs[0].chunks[0]
    assert (proto.granularity, proto.adjacency, proto.weight, proto.offset) == (1, 2, 0.5, 3.0)
    assert list(proto.location) == [1.0, 2.5] and proto.evaluations["e"].ref_id == "root"
    out = request_to_json(request)["data"][0]
    assert out["matches"][0]["text"] == "x"
    echoed = out["chunks"][0]
    for key, value in chunk.items():
        if key not in ("scores", "evaluations"):
            assert echoed[key] == value, key
    assert echoed["scores"]["s"]["value"] == 0.25 and echoed["scores"]["s"]["op_name"] == "cosine"
    assert echoed["evaluations"]["e"]["description"] == "why"
    assert echoed["evaluations"]["e"]["ref_id"] == "root"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("granularity", -1, "granularity must be a count"),
        ("adjacency", 1.5, "adjacency must be a count"),
        ("weight", "heavy", "weight must be a number"),
        ("offset", 10**400, "offset must be a number"),
        ("location", 3, "location must be a list of numbers"),
        ("scores", {"s": 1}, "scores['s'] must be an object"),
        ("scores", {"s": {"value": "high"}}, "scores['s'].value must be a number"),
    ],
)
def test_bad_nested_fields_are_named(field, value, message):
    body = {"data": [{"id": "r", "chunks": [{"id": "c", "text": "t", field: value}]}]}
    with pytest.raises(InvalidInputError, match=message.replace("[", r"\[")):
        request_from_json(body)
