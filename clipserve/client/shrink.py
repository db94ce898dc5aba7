"""``Client(image_max_side=N)``: big images are made smaller on the client before sending.

A photo whose longer side exceeds N is decoded at a reduced scale where the format allows
(JPEG), resized so its longer side is N (Pillow's ``thumbnail``: bicubic after a whole-factor
box reduction), turned upright (EXIF orientation) and re-encoded: JPEG at quality 90, or PNG
when it has transparency. Smaller images and bytes Pillow cannot read are sent unchanged
(the server names what is wrong with a broken image). This saves upload bandwidth and server
CPU; its effect on embeddings is measured in docs/benchmarks.md. Needs Pillow.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importing the client loads no protobuf (docs/client.md, "Installing")
    from clipserve.wire.clipserve_wire_pb2 import DataRequestProto, DocumentProto

JPEG_QUALITY = 90


def require_pillow() -> None:
    try:
        import PIL  # noqa: F401
    except ImportError as exc:
        raise ImportError("image_max_side needs Pillow on the client: pip install pillow") from exc


def check_max_side(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 16:
        raise ValueError(f"image_max_side must be an integer >= 16 (or None), got {value!r}")
    require_pillow()
    return value


def shrink_request(request: DataRequestProto, max_side: int) -> None:
    """Shrink every image blob of ``request`` (and of its documents' matches) in place."""
    for doc in request.data.docs.docs:
        _shrink_document(doc, max_side)


def _shrink_document(doc: DocumentProto, max_side: int) -> None:
    if doc.blob and not doc.text:
        shrunk = shrink_image(doc.blob, max_side)
        if shrunk is not None:
            doc.blob, doc.mime_type = shrunk
    for match in doc.matches:
        _shrink_document(match, max_side)


def shrink_image(data: bytes, max_side: int) -> tuple[bytes, str] | None:
    """(new bytes, mime type), or None to send ``data`` as it is."""
    from PIL import Image, ImageOps

    try:
        image = Image.open(io.BytesIO(data))
        if max(image.size) <= max_side:
            return None
        image.thumbnail((max_side, max_side))  # decodes JPEGs at a reduced scale first
        image = ImageOps.exif_transpose(image) or image
        transparent = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        buffer = io.BytesIO()
        if transparent:
            image.save(buffer, "PNG", compress_level=1)
            return buffer.getvalue(), "image/png"
        image.convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue(), "image/jpeg"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
