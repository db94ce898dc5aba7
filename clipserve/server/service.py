"""The protocol-agnostic core of the server: one ``DataRequestProto`` in, one reply out.

Front-ends (gRPC, HTTP, WebSocket) only decode, call :meth:`EmbeddingService.handle`, and
encode. Policies decided here:

- Endpoints: ``/encode`` (also ``/encode/<model>``), ``/`` (encode; an empty document is
  embedded as the empty string, which is what ``profile()`` sends) and ``/rank``. Anything
  else, and ``data.docs_bytes`` (pickle; never unpickled), refuse the whole request.
- Parameters: ``drop_image_content`` (bool), ``model_name`` (str, must name the served
  model), ``access_paths``/``traversal_paths`` (only ``"@r"``). Keys starting with ``__``
  (``__results__`` from ``profile()``) and other unknown keys are ignored, like Jina
  executors ignore parameters they do not read; a known key with the wrong type is refused.
- Documents are answered positionally and every id is echoed; duplicate ids are allowed.
- A document that cannot be encoded fails alone: the reply carries status ERROR naming
  each failing id and reason, and every good document still carries its embedding.
- The reply is built in the request message itself (no copy of image bytes): callers
  must not reuse the request after ``handle``.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipserve.engine import Engine, ImageItem, TextItem
from clipserve.engine.metrics import METRICS, Metrics
from clipserve.errors import (
    ClipServeError,
    InputRefusedError,
    InvalidInputError,
    OverloadedError,
)
from clipserve.models.scoring import ScoreRule
from clipserve.server import openai_embeddings
from clipserve.server import rank as ranking
from clipserve.server.limits import Limits
from clipserve.wire import DataRequestProto, DocumentProto
from clipserve.wire.messages import (
    add_route,
    doc_kind,
    endpoint_of,
    now_ns,
    parameters_named,
    set_error,
)
from clipserve.wire.ndarray import EmbeddingWriter, read_ndarray, write_ndarray

ENDPOINTS = ("/encode", "/", "/rank")
OPENAI_ENDPOINT = "/v1/embeddings"
URI_FETCH_DISABLED = "server-side URI fetching is disabled; send the bytes in blob"
MAX_LISTED_FAILURES = 10
MAX_CONCURRENT_FETCHES = 8
_PARAMETER_TYPES: dict[str, type] = {
    "drop_image_content": bool,
    "model_name": str,
    "access_paths": str,
    "traversal_paths": str,
}

#: a document ready for the engine: a text (``str``), an item, or the error it already has
Prepared = str | ImageItem | ClipServeError
Outcome = np.ndarray | ClipServeError


@dataclass(frozen=True, slots=True)
class _Fetch:
    """An image the document names by ``uri`` only: fetched under the URI policy."""

    uri: str


@dataclass(frozen=True)
class RequestOptions:
    drop_image_content: bool = False


class EmbeddingService:
    """Validates requests, encodes their documents through the engine, fills the reply."""

    def __init__(
        self,
        engine: Engine,
        *,
        model_name: str,
        limits: Limits | None = None,
        uri_policy: Any = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.engine = engine
        self.model_name = model_name
        self.limits = limits or Limits()
        self.metrics = metrics or METRICS
        self._uri_policy = uri_policy
        self._fetch_slots = asyncio.Semaphore(MAX_CONCURRENT_FETCHES)

    def info(self) -> dict[str, Any]:
        model = self.engine.model
        return {
            "model": self.model_name,
            "dim": model.dim,
            "backend": model.backend,
            "precision": model.precision,
            "family": model.family,
            "languages": model.languages,
            "clip_score": model.score_rule.describe(),
            "max_batch_size": self.engine.max_batch_size,
            "max_docs_per_request": self.limits.max_docs_per_request,
        }

    # ---- DataRequestProto -------------------------------------------------------------

    async def handle(self, request: DataRequestProto, protocol: str) -> DataRequestProto:
        """Answer one request (built in place). Raises ``InvalidInputError`` for request-level
        problems and ``OverloadedError`` when the engine queue is full."""
        started = now_ns()
        endpoint = endpoint_of(request)
        label = endpoint if endpoint in ENDPOINTS else "other"
        try:
            docs = self._check_request(request, endpoint)
            options = self._options(request)
            if endpoint == "/rank":
                failures, span = await self._rank(docs, options)
            else:
                failures, span = await self._encode_docs(docs, options, endpoint == "/")
        except ClipServeError as exc:
            self.metrics.requests.labels(protocol, label, _status_label(exc)).inc()
            raise
        reply = request
        del reply.routes[:]
        total = _count_docs(docs, endpoint)
        if failures:
            set_error(reply, describe_failures(failures, total), type(failures[0][1]).__name__)
        else:
            reply.header.ClearField("status")
        model_start, model_end = span[0], max(span[1], span[0] + 1_000_000)
        add_route(reply, "gateway", started, max(now_ns(), model_end))
        add_route(reply, "clip_t", model_start, model_end)
        self.metrics.requests.labels(protocol, label, "partial" if failures else "ok").inc()
        documents = self.metrics.documents
        documents.labels(protocol, label, "ok").inc(total - len(failures))
        if failures:
            documents.labels(protocol, label, "error").inc(len(failures))
        return reply

    def _check_request(self, request: DataRequestProto, endpoint: str) -> Sequence[DocumentProto]:
        if request.data.WhichOneof("documents") == "docs_bytes":
            raise InvalidInputError(
                "data.docs_bytes (a pickled DocumentArray) is not accepted; send data.docs"
            )
        if endpoint not in ENDPOINTS:
            raise InvalidInputError(
                f"unknown endpoint {request.header.exec_endpoint!r}; "
                "this server answers /encode, /rank and /"
            )
        docs = request.data.docs.docs
        count = _count_docs(docs, endpoint)
        if count > self.limits.max_docs_per_request:
            raise InputRefusedError(
                f"request has {count} documents, above the limit of "
                f"{self.limits.max_docs_per_request}; send smaller batches"
            )
        return docs

    def _options(self, request: DataRequestProto) -> RequestOptions:
        parameters = parameters_named(request, _PARAMETER_TYPES)
        for key, value in parameters.items():  # only the named ones were read
            expected = _PARAMETER_TYPES[key]
            if not isinstance(value, expected):
                raise InvalidInputError(
                    f"parameter {key!r} must be a {expected.__name__}, got {value!r}"
                )
        for key in ("access_paths", "traversal_paths"):
            if parameters.get(key, "@r") not in ("@r", "r"):
                raise InvalidInputError(
                    f"parameter {key}={parameters[key]!r} is not supported; only '@r' "
                    "(the top-level documents) is"
                )
        endpoint = request.header.exec_endpoint.strip("/").split("/", 1)
        self._check_model_name(parameters.get("model_name"))
        if len(endpoint) == 2:
            self._check_model_name(endpoint[1])
        return RequestOptions(bool(parameters.get("drop_image_content", False)))

    def _check_model_name(self, name: str | None) -> None:
        if name and name.lower() != self.model_name.lower():
            raise InvalidInputError(
                f"model {name!r} is not served here; this server serves {self.model_name!r}"
            )

    async def _encode_docs(
        self, docs: Sequence[DocumentProto], options: RequestOptions, empty_as_text: bool
    ) -> tuple[list[tuple[str, ClipServeError]], tuple[int, int]]:
        prepared = await self._prepare(docs, empty_as_text=empty_as_text)
        outcomes, span = await self._encode(prepared)
        failures = []
        writer = EmbeddingWriter()
        for index, (doc, outcome) in enumerate(zip(docs, outcomes, strict=True)):
            if isinstance(outcome, ClipServeError):
                failures.append((_doc_label(doc, index), outcome))
            else:
                writer.write(outcome, doc.embedding)
        if options.drop_image_content:  # a text document has no image content to drop
            for doc, ready in zip(docs, prepared, strict=True):
                if type(ready) is not str:
                    _drop_image_content(doc)
        return failures, span

    async def _rank(
        self, queries: Sequence[DocumentProto], options: RequestOptions
    ) -> tuple[list[tuple[str, ClipServeError]], tuple[int, int]]:
        flat = [doc for query in queries for doc in (query, *query.matches)]
        outcomes, span = await self._encode(await self._prepare(flat, empty_as_text=False))
        failures: list[tuple[str, ClipServeError]] = []
        position = 0
        for index, query in enumerate(queries):
            own, matched = (
                outcomes[position],
                outcomes[position + 1 : position + 1 + len(query.matches)],
            )
            position += 1 + len(query.matches)
            error = own if isinstance(own, ClipServeError) else _first_match_error(query, matched)
            if error is not None:
                failures.append((_doc_label(query, index), error))
            else:
                write_ndarray(own.astype(np.float32, copy=False), query.embedding)
                _sort_matches(query, own, matched, self.engine.model.score_rule)
            for match in query.matches:
                match.ClearField("embedding")
                if options.drop_image_content:
                    _drop_image_content(match)
            if options.drop_image_content:
                _drop_image_content(query)
        return failures, span

    # ---- documents -> engine items ----------------------------------------------------

    async def _prepare(
        self, docs: Sequence[DocumentProto], *, empty_as_text: bool
    ) -> list[Prepared]:
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
            results = await asyncio.gather(*map(self._image_from_uri, fetches.values()))
            for index, result in zip(fetches, results, strict=True):
                prepared[index] = result
        return prepared

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
            self._check_image_size(len(doc.blob), "image blob")
            return ImageItem(doc.blob)
        if content == "tensor":
            array = read_ndarray(doc.tensor, "image tensor")
            if array is not None:
                if array.ndim != 3:
                    raise InvalidInputError(
                        f"image tensor must have shape [H, W, C]; got {list(array.shape)}"
                    )
                self._check_image_size(array.nbytes, "image tensor")
                return ImageItem(array)
            if not doc.uri:
                raise InvalidInputError("image tensor is set but holds no array")
        return _Fetch(doc.uri)

    async def _image_from_uri(self, uri: str) -> Prepared:
        """Fetch an image named by ``uri`` under the URI policy (data: URIs always work)."""
        try:
            data = await self._fetch(uri)
            self._check_image_size(len(data), "image at uri")
            return ImageItem(data)
        except ClipServeError as exc:
            return exc

    async def _fetch(self, uri: str) -> bytes:
        try:
            uri_fetch = importlib.import_module("clipserve.server.uri_fetch")
        except ModuleNotFoundError as exc:
            if exc.name != "clipserve.server.uri_fetch":
                raise
            raise InputRefusedError(URI_FETCH_DISABLED) from None
        policy = self._uri_policy if self._uri_policy is not None else uri_fetch.UriPolicy()
        async with self._fetch_slots:
            return await uri_fetch.fetch_uri(uri, policy)

    def _check_image_size(self, size: int, what: str) -> None:
        if size > self.limits.max_image_bytes:
            raise InputRefusedError(
                f"{what} is {size} bytes, above the limit of {self.limits.max_image_bytes}"
            )

    async def _encode(self, prepared: list[Prepared]) -> tuple[list[Outcome], tuple[int, int]]:
        """One engine call for every item (a ``str`` is a text); errors already known pass
        through in place."""
        start = now_ns()
        if all(type(p) is str for p in prepared):  # texts only: no item object per text
            outcomes: list[Outcome] = await self.engine.encode_texts(prepared) if prepared else []
            return outcomes, (start, now_ns())
        items = [
            TextItem(p) if type(p) is str else p
            for p in prepared
            if not isinstance(p, ClipServeError)
        ]
        results = iter(await self.engine.encode(items) if items else [])  # type: ignore[arg-type]
        end = now_ns()
        outcomes = [p if isinstance(p, ClipServeError) else next(results) for p in prepared]
        return outcomes, (start, end)

    # ---- OpenAI-compatible /v1/embeddings ---------------------------------------------

    async def embed_openai(self, body: Any) -> dict[str, Any]:
        """Answer an OpenAI-style ``/v1/embeddings`` body (see ``openai_embeddings``)."""
        try:
            reply = await openai_embeddings.embed(self, body)
        except ClipServeError as exc:
            self.metrics.requests.labels("http", OPENAI_ENDPOINT, _status_label(exc)).inc()
            raise
        self.metrics.requests.labels("http", OPENAI_ENDPOINT, "ok").inc()
        self.metrics.documents.labels("http", OPENAI_ENDPOINT, "ok").inc(len(reply["data"]))
        return reply


def describe_failures(failures: list[tuple[str, ClipServeError]], total: int) -> str:
    """``2 of 8 documents failed: 'a': reason; 'b': reason``."""
    listed = [f"{label}: {_reason(error)}" for label, error in failures[:MAX_LISTED_FAILURES]]
    more = len(failures) - len(listed)
    tail = f"; ... and {more} more" if more else ""
    noun = "document" if total == 1 else "documents"
    return f"{len(failures)} of {total} {noun} failed: " + "; ".join(listed) + tail


def _reason(error: ClipServeError) -> str:
    return error.reason if isinstance(error, InvalidInputError) else str(error)


def _doc_label(doc: DocumentProto, index: int) -> str:
    """``'id'`` with ``\\`` and ``'`` backslash-escaped (what clients parse), or ``#index``."""
    if not doc.id:
        return f"#{index}"
    return "'" + doc.id.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _count_docs(docs: Sequence[DocumentProto], endpoint: str) -> int:
    if endpoint == "/rank":
        return sum(1 + len(doc.matches) for doc in docs)
    return len(docs)


def _first_match_error(query: DocumentProto, outcomes: list[Outcome]) -> ClipServeError | None:
    for index, (match, outcome) in enumerate(zip(query.matches, outcomes, strict=True)):
        if isinstance(outcome, ClipServeError):
            return type(outcome)(f"match {_doc_label(match, index)}: {_reason(outcome)}")
    return None


def _sort_matches(
    query: DocumentProto, embedding: np.ndarray, matched: list[Outcome], rule: ScoreRule
) -> None:
    if not matched:
        return
    result = ranking.rank(embedding, np.stack(matched), rule)  # type: ignore[arg-type]
    ordered = []
    for index in result.order:
        match = DocumentProto()
        match.CopyFrom(query.matches[index])
        match.scores["clip_score"].value = float(result.clip_scores[index])
        match.scores["clip_score"].op_name = result.op_name
        match.scores["clip_score"].ref_id = query.id
        match.scores["clip_score_cosine"].value = float(result.cosines[index])
        match.scores["clip_score_cosine"].op_name = "cosine"
        match.scores["clip_score_cosine"].ref_id = query.id
        ordered.append(match)
    del query.matches[:]
    query.matches.extend(ordered)


def _drop_image_content(doc: DocumentProto) -> None:
    if doc.WhichOneof("content") in ("blob", "tensor"):
        doc.ClearField(doc.WhichOneof("content"))


def _status_label(error: ClipServeError) -> str:
    if isinstance(error, OverloadedError):
        return "overloaded"
    if isinstance(error, InputRefusedError):
        return "refused"
    return "invalid" if isinstance(error, InvalidInputError) else "error"
