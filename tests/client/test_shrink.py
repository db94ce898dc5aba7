"""``Client(image_max_side=N)``: big images travel shrunk, small ones untouched, and the
server embeds what was sent."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from docarray import Document
from PIL import Image

from clipserve import Client
from clipserve.client.shrink import shrink_image
from clipserve.models.hashing import HashModel
from clipserve.server.app import RunningServer
from tests.photos import encode, source_photos, upscaled


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    return encode(upscaled(dict(source_photos())["coffee"], 3.0))  # 2121x1414


def test_big_images_shrink_to_the_longer_side(big_jpeg: bytes) -> None:
    data, mime = shrink_image(big_jpeg, 512)  # type: ignore[misc]
    image = Image.open(io.BytesIO(data))
    assert (mime, image.format, image.size) == ("image/jpeg", "JPEG", (512, 341))
    assert len(data) < len(big_jpeg) / 10


def test_small_transparent_rotated_and_broken_images() -> None:
    photo = dict(source_photos())["chelsea"]  # 451x300
    assert shrink_image(encode(Image.fromarray(photo)), 512) is None  # small: sent as is
    assert shrink_image(b"not an image at all", 64) is None  # the server will name it
    rgba = Image.fromarray(photo).convert("RGBA")
    data, mime = shrink_image(encode(rgba, "PNG"), 200)  # type: ignore[misc]
    assert mime == "image/png" and Image.open(io.BytesIO(data)).mode == "RGBA"
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees: the shrunk copy is upright
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, "JPEG", exif=exif.tobytes())
    data, _ = shrink_image(buffer.getvalue(), 200)  # type: ignore[misc]
    assert Image.open(io.BytesIO(data)).size == (133, 200)


def test_the_server_embeds_the_shrunk_bytes(
    hash_server: RunningServer, big_jpeg: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "big.jpg"
    path.write_bytes(big_jpeg)
    shrunk, _ = shrink_image(big_jpeg, 640)  # type: ignore[misc]
    model = HashModel()  # the hash model embeds the exact bytes it was sent
    with Client(hash_server.urls["grpc"], image_max_side=640) as client:
        from_path = client.encode([str(path)])
        (doc,) = client.encode([Document(blob=big_jpeg)])
    with Client(hash_server.urls["grpc"]) as client:
        untouched = client.encode([str(path)])
    np.testing.assert_array_equal(from_path[0], model.encode_images([shrunk])[0])
    np.testing.assert_array_equal(doc.embedding, from_path[0])
    np.testing.assert_array_equal(untouched[0], model.encode_images([big_jpeg])[0])


def test_image_max_side_is_checked() -> None:
    for bad in (0, 8, 512.0, True, "512"):
        with pytest.raises(ValueError, match="image_max_side"):
            Client("grpc://127.0.0.1:1", image_max_side=bad)  # type: ignore[arg-type]
