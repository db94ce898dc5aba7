"""Inputs a careless or hostile client may send, generated here with Pillow, numpy and zlib."""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from functools import cache

import numpy as np
from PIL import Image
from skimage import data as skdata


@cache
def photo() -> np.ndarray:
    """A real photo (scikit-image's cat), 300x451 RGB."""
    return skdata.chelsea()


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo_jpeg() -> bytes:
    return encode(Image.fromarray(photo()), "JPEG", quality=90)


def photo_png() -> bytes:
    return encode(Image.fromarray(photo()), "PNG")


# --- images that are odd but valid: each must be embedded ---------------------------------


def one_pixel_png() -> bytes:
    return encode(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG")


def animated_gif() -> bytes:
    frames = [Image.fromarray(np.roll(photo(), shift, axis=1)) for shift in (0, 40, 80)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    return buffer.getvalue()


def sixteen_bit_png() -> bytes:
    grey = (np.asarray(Image.fromarray(photo()).convert("L"), np.uint16) * 257).astype(np.uint16)
    return encode(Image.fromarray(grey), "PNG")  # uint16 -> mode I;16


def cmyk_jpeg() -> bytes:
    return encode(Image.fromarray(photo()).convert("CMYK"), "JPEG", quality=90)


def palette_png() -> bytes:
    return encode(Image.fromarray(photo()).convert("P", palette=Image.Palette.ADAPTIVE), "PNG")


def rgba_png() -> bytes:
    rgba = Image.fromarray(photo()).convert("RGBA")
    rgba.putalpha(128)
    return encode(rgba, "PNG")


def greyscale_png() -> bytes:
    return encode(Image.fromarray(photo()).convert("L"), "PNG")


VALID_ODD_IMAGES = {
    "1x1": one_pixel_png,
    "animated-gif": animated_gif,
    "16-bit": sixteen_bit_png,
    "cmyk": cmyk_jpeg,
    "palette": palette_png,
    "rgba": rgba_png,
    "greyscale": greyscale_png,
}


# --- bytes that are not a usable image ------------------------------------------------------


def corrupt_bytes() -> bytes:
    return bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8))


def truncated_png() -> bytes:
    data = photo_png()
    return data[: len(data) // 2]


def truncated_jpeg() -> bytes:
    data = photo_jpeg()
    return data[: len(data) // 3]


def pdf_bytes() -> bytes:
    return (
        b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
        b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    )


def text_file_bytes() -> bytes:
    return b"This is a plain text file, not an image.\n" * 20


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def bomb_png(width: int, height: int, bit_depth: int = 1) -> bytes:
    """A valid greyscale PNG of ``width`` x ``height`` zeros: tiny file, huge image."""
    row = b"\x00" + bytes((width * bit_depth + 7) // 8)  # filter byte + zero pixels
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


@cache
def huge_png() -> bytes:
    """20000 x 20000 pixels (400 M) in about 60 KB."""
    return bomb_png(20000, 20000, bit_depth=1)


@cache
def bomb_8bit_png() -> bytes:
    """A classic decompression bomb: 12000 x 12000 8-bit (144 MB of pixels) in ~150 KB."""
    return bomb_png(12000, 12000, bit_depth=8)


class _Tripwire:
    """Unpickling this runs ``open(path, 'w')``: proof that a server unpickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def tripwire_pickle(path: str) -> bytes:
    return pickle.dumps(_Tripwire(path))
