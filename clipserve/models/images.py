"""Turning untrusted image input into a clean RGB ``PIL.Image``.

Every model's preprocessing starts here, so one place enforces the pixel limit and turns
each way an image can be broken into an ``InvalidInputError`` with a readable reason.

Big photos are decoded straight to near the size a model needs (``min_side``): a JPEG is
decoded at 1/2, 1/4 or 1/8 scale inside libjpeg (``draft``: the DCT is scaled, so most of
the pixel work never happens), any image is then box-averaged by a whole factor
(``reduce``), both only as far as the shorter side stays ``>= min_side``. Models ask for
about twice their input, so their own resize still averages many pixels into each one.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from clipserve.errors import InvalidInputError
from clipserve.models.pixel_budget import charge_decoded_pixels

#: default cap on width x height, checked before any pixel is decoded (decompression bombs)
DEFAULT_MAX_PIXELS = 64_000_000
MAX_ENCODED_BYTES = 64 * 1024 * 1024
#: names the reduced-decode recipe below; part of every model's ``identity()`` (so of
#: embedding cache keys): change it when the fast path's pixels change
DECODE_VERSION = "decode-v1"


def decode_image(
    source: bytes | np.ndarray,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
) -> Image.Image:
    """Encoded bytes (any Pillow format) or a uint8 [H, W, C] array -> RGB image.

    ``min_side``: the image may come back smaller than stored, by a whole factor, as long as
    its shorter side stays at least ``min_side`` pixels; None decodes at full size.
    """
    if isinstance(source, np.ndarray):
        return image_from_array(source, max_pixels=max_pixels, min_side=min_side)
    data = _checked_bytes(source)
    with _readable(data):
        image = _open(data, max_pixels)
        image.seek(0)  # first frame of GIF/APNG/WebP animations
        if min_side:  # JPEG only (a no-op elsewhere): decode at a reduced scale
            image.draft(None, (min_side, min_side))
        # the size it will decode at: keep this after any reduced-scale draft() call
        charge_decoded_pixels(image.width * image.height)
        image.load()
    image = shrink(image, min_side)
    image = ImageOps.exif_transpose(image) or image
    return to_rgb(image)


@dataclass(frozen=True)
class ImageHeader:
    """What an encoded image's header tells without decoding a pixel."""

    format: str  # Pillow's name: "JPEG", "PNG", ...
    width: int  # as stored (before any EXIF rotation)
    height: int
    mode: str  # Pillow's mode: "RGB" (also YCbCr JPEGs), "L", "CMYK", ...
    #: EXIF orientation, 1 (as stored) to 8
    orientation: int = 1


def probe_image(source: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageHeader:
    """Read an encoded image's header with the checks and errors of ``decode_image``
    (empty, too big, not an image, over the pixel limit); no pixel is decoded."""
    data = _checked_bytes(source)
    with _readable(data):
        image = _open(data, max_pixels)
        orientation = image.getexif().get(_ORIENTATION, 1)
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        orientation = 1
    return ImageHeader(str(image.format), image.width, image.height, image.mode, orientation)


def _checked_bytes(source: object) -> bytes:
    if not isinstance(source, (bytes, bytearray, memoryview)):
        raise InvalidInputError(f"image must be bytes or an array, got {type(source).__name__}")
    data = bytes(source)
    if not data:
        raise InvalidInputError("image is empty (zero bytes)")
    if len(data) > MAX_ENCODED_BYTES:
        raise InvalidInputError(f"image is {len(data)} bytes, above the {MAX_ENCODED_BYTES} limit")
    return data


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Pillow's lazy open (header only) with the pixel limit checked."""
    image = Image.open(io.BytesIO(data))
    _check_size(image.width, image.height, max_pixels)
    return image


@contextmanager
def _readable(data: bytes) -> Iterator[None]:
    """Every way Pillow fails on bad data -> ``InvalidInputError`` with the reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except InvalidInputError:
        raise
    except UnidentifiedImageError as exc:
        raise InvalidInputError(
            f"not a readable image: unknown image format (starts with {_magic(data)})"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidInputError(f"not a readable image: {_short(exc)}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt data
        raise InvalidInputError(f"corrupt or truncated image: {_short(exc)}") from exc


#: the EXIF tag of the orientation
_ORIENTATION = 0x0112


def shrink(image: Image.Image, min_side: int | None) -> Image.Image:
    """Box-average by the largest whole factor that keeps the shorter side ``>= min_side``
    (the image itself when that factor is 1 or ``min_side`` is None)."""
    factor = min(image.size) // min_side if min_side else 1
    if factor < 2:
        return image
    if image.mode not in _REDUCIBLE:
        image = to_rgb(image)
    return image.reduce(factor)


#: modes ``Image.reduce`` averages directly (alpha ones premultiplied); others go RGB first
_REDUCIBLE = ("RGB", "L", "RGBA", "LA", "CMYK", "YCbCr")


def image_from_array(
    array: np.ndarray, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int | None = None
) -> Image.Image:
    """A [H, W, C] (or [H, W]) array, uint8 or float in [0, 1] / [0, 255] -> RGB image."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InvalidInputError(
            f"image tensor must have shape [H, W, C] with C in 1, 3 or 4; got {list(array.shape)}"
        )
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise InvalidInputError(f"image tensor is empty: shape {list(array.shape)}")
    _check_size(width, height, max_pixels)
    charge_decoded_pixels(width * height)  # converted copies of it are made below
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.number) or np.issubdtype(
            array.dtype, np.complexfloating
        ):
            raise InvalidInputError(f"image tensor dtype {array.dtype} is not numeric")
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            raise InvalidInputError("image tensor contains NaN or infinite values")
        if np.issubdtype(array.dtype, np.floating) and values.max(initial=0) <= 1.0:
            values = values * 255.0
        array = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    channels = array.shape[2]
    if channels == 1:
        image = Image.fromarray(array[:, :, 0], mode="L")
    else:
        image = Image.fromarray(
            np.ascontiguousarray(array), mode="RGB" if channels == 3 else "RGBA"
        )
    return to_rgb(shrink(image, min_side))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparency is composited onto white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        grey = np.clip(values / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        values = np.nan_to_num(values)
        span = float(values.max() - values.min()) or 1.0
        grey = ((values - values.min()) / span * 255.0).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise InvalidInputError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InvalidInputError(
            f"image is {width}x{height} = {width * height} pixels, above the limit of {max_pixels}"
        )


#: Python object reprs Pillow puts in its messages, e.g. ``<_io.BytesIO object at 0x7f...>``
_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _short(exc: BaseException) -> str:
    """Pillow's reason, without object addresses, at most 200 characters."""
    text = _OBJECT_REPR.sub("", str(exc)).strip() or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _magic(data: bytes) -> str:
    """The first bytes, for telling a PDF, HTML page or text file from a damaged image."""
    head = data[:8]
    if all(32 <= byte < 127 for byte in head):
        return repr(head.decode("ascii"))
    return "0x" + head.hex()
