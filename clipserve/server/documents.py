"""Documents -> what the engine takes, and the words for those that fail.

A document holds a text, an image (``blob`` bytes, a ``tensor``, or a ``uri`` to read
under the server's URI policy), or nothing. ``DocumentReader.prepare`` turns each into a
``str`` (a text), an ``ImageItem``, or the ``ClipServeError`` that document already has:
one bad document never fails the others. Size limits come from ``Limits``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from clipserve.engine import ImageItem
from clipserve.errors import ClipServeError, InputRefusedError, InvalidInputError
from clipserve.server.limits import Limits
from clipserve.server.uri_fetch import fetch_uri
from clipserve.server.uri_policy import UriPolicy
from clipserve.wire import DocumentProto
from clipserve.wire.messages import doc_kind
from clipserve.wire.ndarray import read_ndarray

MAX_LISTED_FAILURES = 10
MAX_CONCURRENT_FETCHES = 8

#: a document ready for the engine: a text (``str``), an image, or the error it already has
Prepared = str | ImageItem | ClipServeError
#: a failed document: its label (``'id'`` or ``#index``) and its error
Failure = tuple[str, ClipServeError]


@dataclass(frozen=True, slots=True)
class _Fetch:
    """An image the document names by ``uri`` only: fetched under the URI policy."""

    uri: str


class DocumentReader:
    """Reads documents under the request limits and the URI policy."""

    def __init__(self, limits: Limits, uri_policy: UriPolicy | None = None) -> None:
        self.limits = limits
        self.uri_policy = uri_policy or UriPolicy()
        #: httpx transport for URI fetches (None: httpx's own; tests route with it)
        self.transport: httpx.AsyncBaseTransport | None = None
        self._fetch_slots = asyncio.Semaphore(MAX_CONCURRENT_FETCHES)

    async def prepare(
        self, docs: Sequence[DocumentProto], *, empty_as_text: bool
    ) -> list[Prepared]:
        """Each document as the engine takes it; URIs are fetched concurrently."""
        prepared: list[Prepared] = []
        fetches: dict[int, str] = {}
        for index, doc in enumerate(docs):
            try:
                item = self._item_for(doc, empty_as_text)
            except InvalidInputError as exc:
                prepared.append(exc)
                continue
            if isinstance(item, _Fetch):
                fetches[index] = item.uri
                prepared.append(InvalidInputError("uri was not fetched"))  # replaced below
            else:
                prepared.append(item)
        if fetches:
            results = await asyncio.gather(*map(self.image_from_uri, fetches.values()))
            for index, result in zip(fetches, results, strict=True):
                prepared[index] = result
        return prepared

    async def image_from_uri(self, uri: str) -> ImageItem | ClipServeError:
        """The image ``uri`` names, read under the URI policy (data: URIs always work)."""
        try:
            async with self._fetch_slots:
                data = await fetch_uri(uri, self.uri_policy, transport=self.transport)
            self.check_image_size(len(data), "image at uri")
            return ImageItem(data)
        except ClipServeError as exc:
            return exc

    def check_image_size(self, size: int, what: str) -> None:
        if size > self.limits.max_image_bytes:
            raise InputRefusedError(
                f"{what} is {size} bytes, above the limit of {self.limits.max_image_bytes}"
            )

    def _item_for(self, doc: DocumentProto, empty_as_text: bool) -> str | ImageItem | _Fetch:
        """A document -> its text (a ``str``), an image item, or its uri when the image must
        be fetched."""
        if doc.WhichOneof("content") == "text" and (text := doc.text):  # the common case
            return text[: self.limits.max_text_chars]
        if doc_kind(doc) == "empty":
            if empty_as_text:
                return ""
            raise InvalidInputError("document has no content: set text, blob, tensor or uri")
        content = doc.WhichOneof("content")
        if content == "blob":
            self.check_image_size(len(doc.blob), "image blob")
            return ImageItem(doc.blob)
        if content == "tensor":
            array = read_ndarray(doc.tensor, "image tensor")
            if array is not None:
                if array.ndim != 3:
                    raise InvalidInputError(
                        f"image tensor must have shape [H, W, C]; got {list(array.shape)}"
                    )
                self.check_image_size(array.nbytes, "image tensor")
                return ImageItem(array)
            if not doc.uri:
                raise InvalidInputError("image tensor is set but holds no array")
        return _Fetch(doc.uri)


def drop_image_content(doc: DocumentProto) -> None:
    """Clear a document's blob or tensor (its ``uri`` stays)."""
    if doc.WhichOneof("content") in ("blob", "tensor"):
        doc.ClearField(doc.WhichOneof("content"))


def describe_failures(failures: list[Failure], total: int) -> str:
    """``2 of 8 documents failed: 'a': reason; 'b': reason``."""
    listed = [f"{label}: {reason(error)}" for label, error in failures[:MAX_LISTED_FAILURES]]
    more = len(failures) - len(listed)
    tail = f"; ... and {more} more" if more else ""
    noun = "document" if total == 1 else "documents"
    return f"{len(failures)} of {total} {noun} failed: " + "; ".join(listed) + tail


def reason(error: ClipServeError) -> str:
    """What went wrong, without the ``document 'id':`` prefix an input error may carry."""
    return error.reason if isinstance(error, InvalidInputError) else str(error)


def doc_label(doc: DocumentProto, index: int) -> str:
    """``'id'`` with ``\\`` and ``'`` backslash-escaped (what clients parse), or ``#index``."""
    if not doc.id:
        return f"#{index}"
    return "'" + doc.id.replace("\\", "\\\\").replace("'", "\\'") + "'"
