"""The auto-detection rule, URL parsing, credentials and input loading (no server)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from clipserve.client.client import credential_token
from clipserve.client.detect import classify_string
from clipserve.client.inputs import fill_from_string, tensor_to_png
from clipserve.client.urls import parse_server
from clipserve.errors import InvalidInputError
from clipserve.wire.clipserve_wire_pb2 import DocumentProto


@pytest.mark.parametrize(
    "text",
    [
        "https://host/img?id=3",
        "http://example.com/cat",
        "HTTPS://EXAMPLE.COM/A.PNG",
        "data:image/png;base64,iVBORw0KGgo=",
        "file:///tmp/whatever.bin",
        "cat.jpg",  # missing file with an image extension: still an image (error later)
        "photos/2024/IMG_0001.JPEG",
        "~/pictures/dog.webp",
    ],
)
def test_images(text: str) -> None:
    assert classify_string(text) == "image"


@pytest.mark.parametrize(
    "text",
    [
        "see file.png",
        "hello.world",
        "I love it.",
        "http://example.com is down",
        "https://",
        "data:no comma here",
        "a photo of a cat",
        "",
        "LICENSE",
        "multi\nline.png",
        "...",
    ],
)
def test_sentences(text: str) -> None:
    assert classify_string(text) == "text"


def test_existing_files_are_images_whatever_their_name(tmp_path, monkeypatch) -> None:
    (tmp_path / "notes.data").write_bytes(b"x")
    (tmp_path / "my photo.jpg").write_bytes(b"x")
    (tmp_path / "README").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert classify_string("notes.data") == "image"  # relative, extension not an image one
    assert classify_string(str(tmp_path / "notes.data")) == "image"  # absolute
    assert classify_string("my photo.jpg") == "image"  # spaces are fine when it exists
    assert classify_string("./README") == "image"
    assert classify_string("README") == "text"  # a bare word is never taken as a path
    monkeypatch.setenv("HOME", str(tmp_path))
    assert classify_string("~/notes.data") == "image"


def test_missing_image_file_is_an_error_naming_it() -> None:
    with pytest.raises(InvalidInputError, match="cat.jpg"):
        fill_from_string("cat.jpg", DocumentProto(), [])


def test_local_file_becomes_blob_with_mime_and_uri(tmp_path) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (3, 2), "red").save(path)
    doc = DocumentProto()
    fill_from_string(str(path), doc, [])
    assert doc.blob == path.read_bytes() and doc.mime_type == "image/png"
    assert doc.uri == str(path)
    doc2 = DocumentProto()
    fill_from_string(path.as_uri(), doc2, [])
    assert doc2.blob == doc.blob


def test_data_uri_and_url_loading() -> None:
    payload = b"\x89PNG\r\n\x1a\nrest"
    doc = DocumentProto()
    fill_from_string("data:image/png;base64," + base64.b64encode(payload).decode(), doc, [])
    assert (doc.blob, doc.mime_type, doc.uri) == (payload, "image/png", "")
    with pytest.raises(InvalidInputError, match="base64"):
        fill_from_string("data:image/png;base64,@@@", DocumentProto(), [])
    pending: list = []
    doc = DocumentProto()
    fill_from_string("https://host/img?id=3", doc, pending)
    assert [p.url for p in pending] == ["https://host/img?id=3"] and not doc.blob


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_tensor_to_png_round_trips(dtype) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(5, 7, 3)).astype(np.uint8)
    tensor = pixels.astype(dtype) / (255.0 if dtype != np.uint8 else 1)
    decoded = np.asarray(Image.open(io.BytesIO(tensor_to_png(tensor.astype(dtype), "t"))))
    assert decoded.shape == (5, 7, 3)
    assert np.abs(decoded.astype(int) - pixels.astype(int)).max() <= 1
    grey = np.asarray(Image.open(io.BytesIO(tensor_to_png(pixels[:, :, 0], "t"))))
    assert np.array_equal(grey, pixels[:, :, 0])
    with pytest.raises(InvalidInputError, match="shape"):
        tensor_to_png(np.zeros((4, 4, 5)), "t")


@pytest.mark.parametrize(
    ("url", "protocol", "tls", "port"),
    [
        ("grpc://127.0.0.1:5000", "grpc", False, 5000),
        ("grpc://localhost", "grpc", False, 51000),
        ("http://h", "http", False, 51001),
        ("websocket://h:1", "websocket", False, 1),
        ("ws://h:2", "websocket", False, 2),
        ("grpcs://h", "grpc", True, 443),
        ("https://h:8443", "http", True, 8443),
        ("websockets://h:3", "websocket", True, 3),
        ("wss://[::1]:4", "websocket", True, 4),
    ],
)
def test_server_urls(url: str, protocol: str, tls: bool, port: int) -> None:
    address = parse_server(url)
    assert (address.protocol, address.tls, address.port) == (protocol, tls, port)


@pytest.mark.parametrize(
    "url", ["ftp://h:1", "127.0.0.1:51000", "grpc://:51000", "grpc://h:x", "grpc://h:70000",
            "grpc://h:0", "http://h:1/?q=1", "grpc://h:1/path", "grpc://h:"]
)  # fmt: skip
def test_bad_server_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_server(url)


def test_credentials() -> None:
    assert credential_token({"Authorization": "tok"}) == "tok"
    assert credential_token({"authorization": "tok"}) == "tok"
    assert credential_token("tok") == "tok"
    assert credential_token(None) is None
    with pytest.raises(ValueError):
        credential_token({"user": "x"})


def test_any_unicode_whitespace_makes_a_missing_image_name_a_sentence() -> None:
    for space in (" ", "\t", "\u00a0", "\u2003", "\u3000", "\x1c"):
        assert classify_string(f"no{space}such{space}file.png") == "text", repr(space)
    assert classify_string("no_such_file.png") == "image"
