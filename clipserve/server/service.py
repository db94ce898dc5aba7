"""The protocol-agnostic core of the server: one ``DataRequestProto`` in, one reply out.

Front-ends (gRPC, HTTP, WebSocket) only decode, hand the request to the ``Dispatcher``
(which calls :meth:`EmbeddingService.handle` and counts it), and encode. The OpenAI route
uses the same service through its small public surface (``encode_texts``,
``encode_images``, ``check_model_name``, ``resolve_uri``, ``embedding_sizes``). Policies
decided here:

- Endpoints: ``/encode`` (also ``/encode/<model>``), ``/`` (encode; at the default ``@r``
  an empty document is embedded as the empty string, which is what ``profile()`` sends)
  and ``/rank``. Anything
  else, and ``data.docs_bytes`` (pickle; never unpickled), refuse the whole request.
- Parameters (``parameters.py``): ``drop_image_content``, ``model_name`` and
  ``access_paths`` (``traversal_paths``): which documents of the tree to embed, ``@r`` by
  default; the others come back untouched, and so does the tree's shape.
- Documents are answered in place and every id is echoed; duplicate ids are allowed.
- A document that cannot be encoded fails alone: the reply carries status ERROR naming
  each failing id and reason, and every good document still carries its embedding
  (reading documents, URIs and size checks: ``documents.py``).
- The reply is built in the request message itself (no copy of image bytes): callers
  must not reuse the request after ``handle``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from clipserve.engine import CachedEngine, Engine, ImageItem, Outcome, TextItem
from clipserve.errors import ClipServeError, InvalidInputError
from clipserve.models.cpu import cpu_report
from clipserve.models.scoring import ScoreRule
from clipserve.server import rank as ranking
from clipserve.server.documents import (
    DocumentReader,
    Failure,
    Prepared,
    check_document_count,
    describe_failures,
    doc_label,
    drop_image_content,
    reason,
    select_documents,
)
from clipserve.server.limits import Limits
from clipserve.server.parameters import RequestOptions, read_options
from clipserve.server.uri_policy import UriPolicy
from clipserve.wire import DataRequestProto, DocumentProto
from clipserve.wire.access_paths import Selection
from clipserve.wire.messages import ENDPOINTS, add_route, endpoint_of, now_ns, set_error
from clipserve.wire.ndarray import EmbeddingWriter, write_ndarray


class Answer(NamedTuple):
    """A reply and how many of its documents were answered, and how many of those failed."""

    reply: DataRequestProto
    documents: int
    failed: int


class EmbeddingService:
    """Validates requests, encodes their documents through the engine, fills the reply."""

    def __init__(
        self,
        engine: Engine | CachedEngine,
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
            "family": model.family,
            "languages": model.languages,
            "clip_score": model.score_rule.describe(),
            "max_batch_size": self.engine.max_batch_size,
            "max_docs_per_request": self.limits.max_docs_per_request,
            "exact_preprocess": model.exact_preprocess,
            "cache": self.engine.cache_info(),
            "cpu": cpu_report(),  # features, and which precisions are fast/slow/refused here
        }

    # ---- the public surface other front-ends build on -------------------------------

    def embedding_sizes(self) -> tuple[int, ...]:
        """The sizes an embedding may be asked for: the model's ``dim``, then the shorter
        ones it was trained to be truncated to (``matryoshka_dims``), if any."""
        model = self.engine.model
        return (model.dim, *sorted(set(model.matryoshka_dims) - {model.dim}, reverse=True))

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
        options = read_options(request, endpoint)
        self.check_model_name(options.model_name)
        suffix = request.header.exec_endpoint.strip("/").split("/", 1)
        if len(suffix) == 2:
            self.check_model_name(suffix[1])
        limit = self.limits.max_docs_per_request
        if endpoint == "/rank":
            total = sum(1 + len(doc.matches) for doc in docs)
            check_document_count(total, limit)
            failures, span = await self._rank(docs, options)
        else:
            selection = select_documents(docs, options.access_paths, limit)
            total = len(selection.docs)
            # profile() sends Document(text='') to "/": embedded as the empty string there
            empty_as_text = endpoint == "/" and options.access_paths.is_all_roots
            failures, span = await self._encode_docs(selection, options, empty_as_text)
        reply = request
        del reply.routes[:]
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
        return request.data.docs.docs

    async def _encode_docs(
        self, selection: Selection, options: RequestOptions, empty_as_text: bool
    ) -> tuple[list[Failure], tuple[int, int]]:
        docs = selection.docs
        prepared = await self.documents.prepare(docs, empty_as_text=empty_as_text)
        start = now_ns()
        outcomes = await self._encode(prepared)
        span = (start, now_ns())
        failures = []
        writer = EmbeddingWriter()
        for index, (doc, outcome) in enumerate(zip(docs, outcomes, strict=True)):
            if isinstance(outcome, ClipServeError):
                failures.append((doc_label(doc, selection.where(index)), outcome))
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
                failures.append((doc_label(query, f"#{index}"), error))
            else:
                write_ndarray(own.astype(np.float32, copy=False), query.embedding)
                _sort_matches(query, own, matched, self.engine.model.score_rule)
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
    """Every document the request holds, nested chunks and matches included: an upper bound
    of what it can ask to embed (what a tenant's document rate counts)."""
    stack = list(request.data.docs.docs)
    count = 0
    while stack:
        doc = stack.pop()
        count += 1
        stack.extend(doc.chunks)
        stack.extend(doc.matches)
    return count


def _first_match_error(query: DocumentProto, outcomes: list[Outcome]) -> ClipServeError | None:
    for index, (match, outcome) in enumerate(zip(query.matches, outcomes, strict=True)):
        if isinstance(outcome, ClipServeError):
            label = doc_label(match, f"#{index}")
            return type(outcome)(f"match {label}: {reason(outcome)}")
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
