"""The protocol-agnostic core of the server: one ``DataRequestProto`` in, one reply out.

Front-ends (gRPC, HTTP, WebSocket) only decode, hand the request to the ``Dispatcher``
(which calls :meth:`EmbeddingService.handle` and counts it), and encode. The OpenAI route
uses the same service through its small public surface (``encode_texts``,
``encode_images``, ``check_model_name``, ``resolve_uri``). Policies decided here:

- Endpoints: ``/encode`` (also ``/encode/<model>``), ``/`` (encode; an empty document is
  embedded as the empty string, which is what ``profile()`` sends) and ``/rank``. Anything
  else, and ``data.docs_bytes`` (pickle; never unpickled), refuse the whole request.
- Parameters: ``drop_image_content`` (bool), ``model_name`` (str, must name the served
  model), ``access_paths``/``traversal_paths`` (only ``"@r"``). Keys starting with ``__``
  (``__results__`` from ``profile()``) and other unknown keys are ignored, like Jina
  executors ignore parameters they do not read; a known key with the wrong type is refused.
- Documents are answered positionally and every id is echoed; duplicate ids are allowed.
- A document that cannot be encoded fails alone: the reply carries status ERROR naming
  each failing id and reason, and every good document still carries its embedding
  (reading documents, URIs and size checks: ``documents.py``).
- The reply is built in the request message itself (no copy of image bytes): callers
  must not reuse the request after ``handle``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from clipserve.engine import Engine, ImageItem, Outcome, TextItem
from clipserve.errors import ClipServeError, InputRefusedError, InvalidInputError
from clipserve.server import rank as ranking
from clipserve.server.documents import (
    DocumentReader,
    Failure,
    Prepared,
    describe_failures,
    doc_label,
    drop_image_content,
    reason,
)
from clipserve.server.limits import Limits
from clipserve.server.uri_policy import UriPolicy
from clipserve.wire import DataRequestProto, DocumentProto
from clipserve.wire.messages import (
    ENDPOINTS,
    add_route,
    endpoint_of,
    now_ns,
    parameters_named,
    set_error,
)
from clipserve.wire.ndarray import EmbeddingWriter, write_ndarray

_PARAMETER_TYPES: dict[str, type] = {
    "drop_image_content": bool,
    "model_name": str,
    "access_paths": str,
    "traversal_paths": str,
}


@dataclass(frozen=True)
class RequestOptions:
    drop_image_content: bool = False


class Answer(NamedTuple):
    """A reply and how many of its documents were answered, and how many of those failed."""

    reply: DataRequestProto
    documents: int
    failed: int


class EmbeddingService:
    """Validates requests, encodes their documents through the engine, fills the reply."""

    def __init__(
        self,
        engine: Engine,
        *,
        model_name: str,
        limits: Limits | None = None,
        uri_policy: UriPolicy | None = None,
    ) -> None:
        self.engine = engine
        self.model_name = model_name
        self.limits = limits or Limits()
        self.documents = DocumentReader(self.limits, uri_policy)

    def info(self) -> dict[str, Any]:
        model = self.engine.model
        return {
            "model": self.model_name,
            "dim": model.dim,
            "backend": model.backend,
            "precision": model.precision,
            "max_batch_size": self.engine.max_batch_size,
            "max_docs_per_request": self.limits.max_docs_per_request,
        }

    # ---- the public surface other front-ends build on -------------------------------

    def check_model_name(self, name: str | None) -> None:
        """Refuse a model name (any case) other than the served one; None passes."""
        if name and name.lower() != self.model_name.lower():
            raise InvalidInputError(
                f"model {name!r} is not served here; this server serves {self.model_name!r}"
            )

    async def resolve_uri(self, uri: str) -> ImageItem | ClipServeError:
        """The image a URI names (data: URIs always; others under the URI policy), or the
        error that keeps it from being read."""
        return await self.documents.image_from_uri(uri)

    async def encode_texts(self, texts: Sequence[str]) -> list[Outcome]:
        """One engine call for sentences (cut to ``limits.max_text_chars``)."""
        limit = self.limits.max_text_chars
        return await self._encode([text[:limit] for text in texts])

    async def encode_images(self, images: Sequence[ImageItem | ClipServeError]) -> list[Outcome]:
        """One engine call for images; errors already known pass through in place."""
        return await self._encode(list(images))

    # ---- DataRequestProto -------------------------------------------------------------

    async def handle(self, request: DataRequestProto) -> Answer:
        """Answer one request (built in place). Raises ``InvalidInputError`` for request-level
        problems and ``OverloadedError`` when the engine queue is full."""
        started = now_ns()
        endpoint = endpoint_of(request)
        docs = self._check_request(request, endpoint)
        options = self._options(request)
        if endpoint == "/rank":
            failures, span = await self._rank(docs, options)
        else:
            failures, span = await self._encode_docs(docs, options, endpoint == "/")
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
        return Answer(reply, total, len(failures))

    def _check_request(self, request: DataRequestProto, endpoint: str) -> Sequence[DocumentProto]:
        if request.data.WhichOneof("documents") == "docs_bytes":
            raise InvalidInputError(
                "data.docs_bytes (a pickled DocumentArray) is not accepted; send data.docs"
            )
        if endpoint not in ENDPOINTS:
            raise InvalidInputError(
                f"unknown endpoint {request.header.exec_endpoint!r}; "
                f"this server answers {', '.join(ENDPOINTS[:-1])} and {ENDPOINTS[-1]}"
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
        self.check_model_name(parameters.get("model_name"))
        if len(endpoint) == 2:
            self.check_model_name(endpoint[1])
        return RequestOptions(bool(parameters.get("drop_image_content", False)))

    async def _encode_docs(
        self, docs: Sequence[DocumentProto], options: RequestOptions, empty_as_text: bool
    ) -> tuple[list[Failure], tuple[int, int]]:
        prepared = await self.documents.prepare(docs, empty_as_text=empty_as_text)
        start = now_ns()
        outcomes = await self._encode(prepared)
        span = (start, now_ns())
        failures = []
        writer = EmbeddingWriter()
        for index, (doc, outcome) in enumerate(zip(docs, outcomes, strict=True)):
            if isinstance(outcome, ClipServeError):
                failures.append((doc_label(doc, index), outcome))
            else:
                writer.write(outcome, doc.embedding)
        if options.drop_image_content:  # a text document has no image content to drop
            for doc, ready in zip(docs, prepared, strict=True):
                if type(ready) is not str:
                    drop_image_content(doc)
        return failures, span

    async def _rank(
        self, queries: Sequence[DocumentProto], options: RequestOptions
    ) -> tuple[list[Failure], tuple[int, int]]:
        flat = [doc for query in queries for doc in (query, *query.matches)]
        prepared = await self.documents.prepare(flat, empty_as_text=False)
        start = now_ns()
        outcomes = await self._encode(prepared)
        span = (start, now_ns())
        failures: list[Failure] = []
        position = 0
        for index, query in enumerate(queries):
            own, matched = (
                outcomes[position],
                outcomes[position + 1 : position + 1 + len(query.matches)],
            )
            position += 1 + len(query.matches)
            error = own if isinstance(own, ClipServeError) else _first_match_error(query, matched)
            if error is not None:
                failures.append((doc_label(query, index), error))
            else:
                write_ndarray(own.astype(np.float32, copy=False), query.embedding)
                _sort_matches(query, own, matched)
            for match in query.matches:
                match.ClearField("embedding")
                if options.drop_image_content:
                    drop_image_content(match)
            if options.drop_image_content:
                drop_image_content(query)
        return failures, span

    async def _encode(self, prepared: list[Prepared]) -> list[Outcome]:
        """One engine call for every item (a ``str`` is a text); errors already known pass
        through in place."""
        if all(type(p) is str for p in prepared):  # texts only: no item object per text
            texts: list[str] = prepared  # type: ignore[assignment]
            return await self.engine.encode_texts(texts) if texts else []
        items = [
            TextItem(p) if type(p) is str else p
            for p in prepared
            if not isinstance(p, ClipServeError)
        ]
        results = iter(await self.engine.encode(items) if items else [])  # type: ignore[arg-type]
        return [p if isinstance(p, ClipServeError) else next(results) for p in prepared]


def count_documents(request: DataRequestProto) -> int:
    """The documents a request asks to embed (rank matches count)."""
    return _count_docs(request.data.docs.docs, endpoint_of(request))


def _count_docs(docs: Sequence[DocumentProto], endpoint: str) -> int:
    if endpoint == "/rank":
        return sum(1 + len(doc.matches) for doc in docs)
    return len(docs)


def _first_match_error(query: DocumentProto, outcomes: list[Outcome]) -> ClipServeError | None:
    for index, (match, outcome) in enumerate(zip(query.matches, outcomes, strict=True)):
        if isinstance(outcome, ClipServeError):
            return type(outcome)(f"match {doc_label(match, index)}: {reason(outcome)}")
    return None


def _sort_matches(query: DocumentProto, embedding: np.ndarray, matched: list[Outcome]) -> None:
    if not matched:
        return
    result = ranking.rank(embedding, np.stack(matched))  # type: ignore[arg-type]
    ordered = []
    for index in result.order:
        match = DocumentProto()
        match.CopyFrom(query.matches[index])
        match.scores["clip_score"].value = float(result.clip_scores[index])
        match.scores["clip_score"].op_name = "softmax"
        match.scores["clip_score"].ref_id = query.id
        match.scores["clip_score_cosine"].value = float(result.cosines[index])
        match.scores["clip_score_cosine"].op_name = "cosine"
        match.scores["clip_score_cosine"].ref_id = query.id
        ordered.append(match)
    del query.matches[:]
    query.matches.extend(ordered)
