"""Turning one input (a string or a docarray ``Document``) into the ``DocumentProto`` sent.

Images travel as ``blob`` bytes + ``mime_type`` + the original ``uri``, as clip-client does.
Local files and data URIs are read here (called from a worker thread, just before the batch
is sent); http(s) URLs are left as ``PendingFetch`` for the async pipeline to download.
Every failure is an ``InvalidInputError`` naming the input.
"""

from __future__ import annotations

import mimetypes
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from clipserve.client.detect import classify_string
from clipserve.client.png import encode_png
from clipserve.errors import InvalidInputError
from clipserve.wire.clipserve_wire_pb2 import DocumentProto
from clipserve.wire.data_uri import decode_data_uri, is_data_uri

MAX_IMAGE_BYTES = 64 * 1024 * 1024


@dataclass
class PendingFetch:
    """An http(s) image to download into ``target.blob`` before its request is sent."""

    target: DocumentProto
    url: str


def describe(value: Any) -> str:
    """A short description of an input for error messages."""
    if isinstance(value, str):
        return repr(value if len(value) <= 80 else value[:77] + "...")
    doc_id = getattr(value, "id", None)
    return f"Document {doc_id!r}" if doc_id else type(value).__name__


def fill_from_string(text: str, out: DocumentProto, pending: list[PendingFetch]) -> None:
    """Fill ``out`` from an auto-detected input string."""
    if classify_string(text) == "text":
        out.text = text
        out.mime_type = "text/plain"
    else:
        fill_image_uri(text, out, pending)


def fill_image_uri(uri: str, out: DocumentProto, pending: list[PendingFetch]) -> None:
    """An image named by a data URI, http(s) URL, ``file://`` URL or local path."""
    out.uri = uri
    lowered = uri[:8].lower()
    if is_data_uri(uri):
        out.mime_type, out.blob = decode_data_uri(uri)
        out.uri = ""  # the blob is the content; echoing a huge data URI back helps nobody
    elif lowered.startswith(("http://", "https://")):
        out.mime_type = mimetypes.guess_type(urlsplit(uri).path)[0] or ""
        pending.append(PendingFetch(out, uri))
    else:
        path = local_path(uri)
        out.blob = read_file(path, uri)
        out.mime_type = mimetypes.guess_type(path)[0] or sniff_mime(out.blob)


def fill_from_document(
    doc: Any,
    out: DocumentProto,
    pending: list[PendingFetch],
    *,
    nested: tuple[str, ...] = ("matches",),
    require_content: bool = True,
) -> None:
    """A docarray ``Document``: ``.text`` -> sentence; ``.blob``/``.tensor``/``.uri`` -> image.
    The ``nested`` fields (``matches`` for rank; ``chunks``/``matches`` an access path
    reaches) are converted the same way, at every depth. Without ``require_content`` a
    Document with nothing to encode travels empty (the server decides, by its access path)."""
    if getattr(doc, "id", None):
        out.id = doc.id
    text = getattr(doc, "text", None)
    blob = getattr(doc, "blob", None)
    tensor = getattr(doc, "tensor", None)
    uri = getattr(doc, "uri", None)
    if text:
        out.text = text
        out.mime_type = "text/plain"
    elif blob is not None and len(blob):
        out.blob = bytes(blob)
        out.mime_type = getattr(doc, "mime_type", None) or sniff_mime(out.blob)
        if uri:
            out.uri = uri
    elif tensor is not None:
        out.blob = tensor_to_png(tensor, describe(doc))
        out.mime_type = "image/png"
        if uri:
            out.uri = uri
    elif uri:
        fill_image_uri(uri, out, pending)
    elif require_content:
        raise InvalidInputError(
            f"{describe(doc)} has nothing to encode: set .text, .uri, .blob or .tensor"
        )
    for name in nested:
        for child in getattr(doc, name, None) or ():
            target = getattr(out, name).add()
            fill_from_document(
                child, target, pending, nested=nested, require_content=require_content
            )


def local_path(uri: str) -> str:
    if uri[:7].lower() == "file://":
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise InvalidInputError(f"cannot read {uri!r}: only local file:// URLs are supported")
        return unquote(parts.path)
    return os.path.expanduser(uri)


def read_file(path: str, name: str) -> bytes:
    try:
        size = os.path.getsize(path)
        if size > MAX_IMAGE_BYTES:
            raise InvalidInputError(f"image file {name!r} is {size} bytes, above the limit")
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InvalidInputError(f"cannot read image file {name!r}: {reason}") from exc
    if not data:
        raise InvalidInputError(f"image file {name!r} is empty")
    return data


_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)


def sniff_mime(data: bytes) -> str:
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return ""


def tensor_to_png(tensor: Any, name: str) -> bytes:
    """An [H, W, C] (or [H, W]) array -> PNG bytes; floats in [0, 1] are scaled to 0..255."""
    array = np.asarray(tensor)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or 0 in array.shape:
        raise InvalidInputError(
            f"{name}: tensor must have shape [H, W, C] with C in 1, 3 or 4, got {list(array.shape)}"
        )
    if array.dtype != np.uint8:
        if array.dtype.kind not in "biuf":
            raise InvalidInputError(f"{name}: tensor dtype {array.dtype} is not numeric")
        values = array.astype(np.float32)
        if not np.isfinite(values).all():
            raise InvalidInputError(f"{name}: tensor holds NaN or infinity")
        if array.dtype.kind == "f" and values.size and values.max() <= 1.0:
            values = values * 255.0
        array = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return encode_png(array)
