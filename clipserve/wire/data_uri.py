"""``data:`` URIs (RFC 2397), the one decoder the client and the server share.

``data:[<media type>][;<parameter>...][;base64],<payload>``: the client reads them into a
document's ``blob``; the server decodes one a document names in ``uri`` without fetching
anything. Every failure is an ``InvalidInputError`` naming the (shortened) URI.
"""

from __future__ import annotations

import base64
import binascii
from typing import NamedTuple
from urllib.parse import unquote, unquote_to_bytes

from clipserve.errors import InvalidInputError

#: the media type a data URI without one declares (RFC 2397)
DEFAULT_MIME = "text/plain"


class DataUri(NamedTuple):
    mime: str
    data: bytes


def shorten_uri(uri: str, limit: int = 120) -> str:
    """The URI as error messages show it: quoted, and cut after ``limit`` characters."""
    return repr(uri if len(uri) <= limit else uri[:limit] + "...")


def is_data_uri(uri: str) -> bool:
    return uri[:5].lower() == "data:"


def decode_data_uri(uri: str, max_bytes: int | None = None) -> DataUri:
    """The media type and bytes of a ``data:`` URI. A URI without a comma, with invalid
    base64, with no bytes, or with more than ``max_bytes`` bytes is refused."""
    name = f"data URI {shorten_uri(uri)}"
    header, comma, payload = uri[5:].partition(",")
    if not comma:
        raise InvalidInputError(f"{name} has no ',' before its payload")
    too_large = f"{name} is larger than {max_bytes} bytes"
    if max_bytes is not None and len(payload) > max_bytes * 2 + 16:  # bound before decoding
        raise InvalidInputError(too_large)
    params = header.split(";")
    try:
        if any(param.strip().lower() == "base64" for param in params[1:]):
            data = base64.b64decode("".join(unquote(payload).split()), validate=True)
        else:
            data = unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(f"{name} has invalid base64 ({exc})") from exc
    if not data:
        raise InvalidInputError(f"{name} is empty")
    if max_bytes is not None and len(data) > max_bytes:
        raise InvalidInputError(too_large)
    return DataUri(params[0].strip() or DEFAULT_MIME, data)
