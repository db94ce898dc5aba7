"""Image decode errors name the reason in clean words: no Python object reprs or addresses."""

from __future__ import annotations

import re

import pytest

from clipserve.errors import InvalidInputError
from clipserve.models.images import decode_image
from tests.reliability import samples

#: what Pillow's raw messages used to leak, e.g. ``<_io.BytesIO object at 0x7f3a...>``
LEAK = re.compile(r"object at 0x|<_io\.|BytesIO")

CASES = {
    "corrupt-bytes": (samples.corrupt_bytes, "not a readable image: unknown image format"),
    "pdf": (samples.pdf_bytes, "not a readable image: unknown image format (starts with '%PDF-"),
    "text-file": (samples.text_file_bytes, "not a readable image: unknown image format"),
    "truncated-png": (samples.truncated_png, "corrupt or truncated image: "),
    "truncated-jpeg": (samples.truncated_jpeg, "corrupt or truncated image: "),
    "bomb": (samples.bomb_8bit_png, "not a readable image: Image size (144000000 pixels)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_decode_error_is_clean_and_names_the_reason(case: str) -> None:
    make, expected = CASES[case]
    with pytest.raises(InvalidInputError) as info:
        decode_image(make())
    message = str(info.value)
    assert expected in message
    assert not LEAK.search(message), message
    assert len(message) < 260


def test_binary_garbage_is_shown_as_hex() -> None:
    with pytest.raises(InvalidInputError, match=r"starts with 0x00ff10ab") as info:
        decode_image(bytes([0x00, 0xFF, 0x10, 0xAB]) * 16)
    assert not LEAK.search(str(info.value))
