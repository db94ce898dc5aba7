"""Documents -> what the engine takes, and the words for those that fail.

``select_documents`` picks the documents a request asks to embed (its ``access_paths``,
``clipserve.wire.access_paths``) under the per-request document limit. A document holds
a text, an image (``blob`` bytes, a ``tensor``, or a ``uri`` to read under the server's
URI policy), or nothing. ``DocumentReader.prepare`` turns each into a ``str`` (a text),
an ``ImageItem``, or the ``ClipServeError`` that document already has: one bad document
never fails the others. Size limits come from ``Limits``.
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
from clipserve.wire.access_paths import AccessPaths, Selection, select
from clipserve.wire.messages import doc_kind
from clipserve.wire.ndarray import read_ndarray

MAX_LISTED_FAILURES = 10
MAX_CONCURRENT_FETCHES = 8
#: an access path may look at this many documents per document a request may embed
WALK_DOCS_PER_LIMIT = 64

#: a document ready for the engine: a text (``str``), an image, or the error it already has
Prepared = str | ImageItem | ClipServeError
#: a failed document: its label (``'id'`` or ``#index``) and its error
Failure = tuple[str, ClipServeError]


@dataclass(frozen=True, slots=True)
class _Fetch:
    """An image the document names by ``uri`` only: fetched under the URI policy."""

    uri: str


def select_documents(docs: Sequence[DocumentProto], paths: AccessPaths, limit: int) -> Selection:
    """The documents ``paths`` selects, refused whole (``InputRefusedError``) when more
    than ``limit`` are selected or more than ``WALK_DOCS_PER_LIMIT x limit`` would be
    looked at. When a selector reaches below the request's documents, a selected document
    with no content of its own but with chunks or matches is a container of what it holds:
    it is left out, untouched, rather than failed."""
    if paths.is_all_roots:
        check_document_count(len(docs), limit)
        return Selection(docs)
    keep = _has_content_or_no_nested if paths.reaches_nested else None
    return select(
        docs, paths, keep=keep, max_selected=limit, max_visits=WALK_DOCS_PER_LIMIT * limit
    )


def check_document_count(count: int, limit: int) -> None:
    if count > limit:
        raise InputRefusedError(
            f"request has {count} documents, above the limit of {limit}; send smaller batches"
        )


def _has_content_or_no_nested(doc: DocumentProto) -> bool:
    return not (doc.chunks or doc.matches) or doc_kind(doc) != "empty"


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
            raise InvalidInputError(
                "document has no content: set text, blob, tensor or uri" + _nested_hint(doc)
            )
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


def _nested_hint(doc: DocumentProto) -> str:
    for name, selector in (("chunks", "@c"), ("matches", "@m")):
        if count := len(getattr(doc, name)):
            return f" (it holds {count} {name}: access_paths={selector!r} embeds those)"
    return ""


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


def doc_label(doc: DocumentProto, where: str) -> str:
    """``'id'`` with ``\\`` and ``'`` backslash-escaped (what clients parse), or, for a
    document without an id, where it sits (``#2``, ``#0.chunks[1]``)."""
    if not doc.id:
        return where
    return "'" + doc.id.replace("\\", "\\\\").replace("'", "\\'") + "'"
