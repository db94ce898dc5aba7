"""The one data: URI decoder the client and the server share."""

from __future__ import annotations

import base64

import pytest

from clipserve.errors import InvalidInputError
from clipserve.wire.data_uri import DataUri, decode_data_uri, is_data_uri, shorten_uri

PAYLOAD = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


def test_base64_and_percent_encoded_payloads() -> None:
    encoded = base64.b64encode(PAYLOAD).decode()
    assert decode_data_uri(f"data:image/png;base64,{encoded}") == DataUri("image/png", PAYLOAD)
    # parameters before base64, line breaks and percent-escapes inside the payload
    wrapped = encoded[:40] + "\n" + encoded[40:].replace("+", "%2B")
    assert decode_data_uri(f"DATA:image/png;name=a.png;BASE64,{wrapped}").data == PAYLOAD
    assert decode_data_uri("data:,hello%20there") == DataUri("text/plain", b"hello there")


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("data:image/png;base64", "has no ',' before its payload"),
        ("data:image/png;base64,@@@not-base64", "has invalid base64"),
        ("data:image/png;base64,", "is empty"),
        ("data:,", "is empty"),
    ],
)
def test_malformed_uris_name_the_problem(uri: str, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason) as info:
        decode_data_uri(uri)
    assert str(info.value).startswith(f"data URI {uri!r}")


def test_size_cap_before_and_after_decoding() -> None:
    encoded = base64.b64encode(b"z" * 2000).decode()
    assert decode_data_uri(f"data:;base64,{encoded}", max_bytes=2000).data == b"z" * 2000
    with pytest.raises(InvalidInputError, match="larger than 1999 bytes"):
        decode_data_uri(f"data:;base64,{encoded}", max_bytes=1999)
    with pytest.raises(InvalidInputError, match="larger than 100 bytes"):  # refused undecoded
        decode_data_uri("data:;base64," + "A" * 10_000_000, max_bytes=100)


def test_long_uris_are_shortened_in_messages() -> None:
    uri = "data:image/png;base64," + "@" * 1000
    with pytest.raises(InvalidInputError) as info:
        decode_data_uri(uri)
    assert len(str(info.value)) < 300 and shorten_uri(uri) in str(info.value)
    assert is_data_uri("Data:x") and not is_data_uri("https://example.com/data:x")
