"""The client's decisions, free of network I/O: checking input, cutting it into batches,
building requests, and putting replies back together in input order.

Input is either an iterable of ``str`` (auto-detected, see ``detect.py``; the result is an
``ndarray [N, D]``) or an iterable of docarray ``Document`` (the result is a
``DocumentArray`` of the same Documents with ``.embedding`` set, or with ``.matches``
re-ranked for ``/rank``); docarray is optional and never imported here (``docs.py``).
Each batch becomes one ``DataRequestProto``; replies may come back in any order and are
matched to their batch by ``request_id`` and to their input by document id.
"""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from clipserve.client import docs as docconv
from clipserve.client.failures import reply_failures, selected_failures
from clipserve.client.inputs import PendingFetch, describe, fill_from_document, fill_from_string
from clipserve.errors import InvalidInputError
from clipserve.wire.clipserve_wire_pb2 import DataRequestProto, DocumentProto
from clipserve.wire.ndarray import read_ndarray

InputKind = Literal["strings", "documents"]
DEFAULT_PARAMETERS: dict[str, Any] = {"drop_image_content": True}


@dataclass
class Job:
    """One call of encode/rank/profile: what to send and how."""

    endpoint: str
    parameters: dict[str, Any]
    batch_size: int
    items: Iterator[Any]
    kind: InputKind | None  # None until the first item is seen (empty input)
    total: int | None  # len(content) when known
    collect: bool = True  # False when callbacks consume the replies
    #: the access path sent when it may select other than every input Document (the server
    #: parses it; the client only decides which nested Documents to send)
    selector: str | None = None
    request_prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


@dataclass
class Batch:
    index: int
    request: DataRequestProto
    originals: list[Any]  # the input strings / Documents, in order
    ids: list[str]
    pending: list[PendingFetch]

    nested_ids: frozenset[str] = frozenset()  # ids of the chunks/matches sent

    @property
    def request_id(self) -> str:
        return self.request.header.request_id


def endpoint_for(name: str, parameters: Mapping[str, Any] | None) -> str:
    """``/encode`` -> ``/encode/<model_name>`` when ``parameters['model_name']`` is given."""
    model = (parameters or {}).get("model_name")
    return f"{name}/{model}" if model and name != "/" else name


def merged_parameters(
    parameters: Mapping[str, Any] | None, access_paths: str | None = None
) -> dict[str, Any]:
    """The defaults, then ``parameters``, then the ``access_paths`` keyword (which must
    agree with ``parameters['access_paths']``/``['traversal_paths']`` when those are set)."""
    if parameters is not None and not isinstance(parameters, Mapping):
        raise TypeError(f"parameters must be a dict, got {type(parameters).__name__}")
    merged = {**DEFAULT_PARAMETERS, **(parameters or {})}
    if access_paths is not None:
        if not isinstance(access_paths, str):
            raise TypeError(f"access_paths must be a str, got {type(access_paths).__name__}")
        for key in ("access_paths", "traversal_paths"):
            if key in merged and merged[key] != access_paths:
                raise ValueError(
                    f"access_paths={access_paths!r} and parameters[{key!r}]={merged[key]!r} "
                    "disagree; give one"
                )
        merged["access_paths"] = access_paths
    return merged


def selector_of(parameters: Mapping[str, Any]) -> str | None:
    """The access path a job sends, or None when it selects the input Documents themselves
    (none given, or ``@r``)."""
    value = parameters.get("access_paths", parameters.get("traversal_paths"))
    if value is None or (isinstance(value, str) and "".join(value.split()).lstrip("@") == "r"):
        return None
    return str(value)


def nested_fields(endpoint: str, selector: str | None) -> tuple[str, ...]:
    """Which nested Documents a request carries: matches for rank; the chunks and matches
    an access path names (sent at every depth; the server picks what it selects)."""
    if endpoint.startswith("/rank"):
        return ("matches",)
    if selector is None:
        return ()
    return tuple(name for name in ("chunks", "matches") if name[0] in selector)


def check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def item_kind(item: Any, position: int) -> InputKind:
    if isinstance(item, str):
        return "strings"
    if docconv.is_document(item):
        return "documents"
    raise TypeError(
        f"input #{position} is {type(item).__name__}; encode() takes an iterable of str "
        f"or of docarray Document{docconv.input_hint(item)}"
    )


def validate_document(doc: Any, position: int) -> None:
    """Cheap, I/O-free check that a Document has something to encode."""
    if not (doc.text or doc.uri or doc.blob or doc.tensor is not None):
        raise InvalidInputError(
            f"input #{position} ({describe(doc)}) has nothing to encode: "
            "set .text, .uri, .blob or .tensor"
        )


def plan_job(
    content: Any,
    endpoint: str,
    parameters: Any,
    batch_size: Any,
    collect: bool,
    access_paths: str | None = None,
) -> Job:
    """Validate ``content`` before anything is sent. Sized inputs (list, tuple,
    DocumentArray) are checked item by item; iterators are checked as they are consumed.
    With an access path, an input Document may hold nothing itself (its chunks may)."""
    merged = merged_parameters(parameters, access_paths)
    selector = selector_of(merged)
    if (
        content is None
        or isinstance(content, (str, bytes, bytearray))
        or docconv.is_document(content)
    ):
        raise TypeError(
            f"content must be an iterable of str or Document, not a single "
            f"{type(content).__name__}; wrap it in a list: encode([x])"
        )
    if not isinstance(content, Iterable):
        raise TypeError(f"content must be an iterable of str or Document, got {content!r}")
    kind: InputKind | None = "documents" if docconv.is_document_array(content) else None
    total = None
    if hasattr(content, "__len__") and hasattr(content, "__getitem__"):
        total = len(content)
        for position, item in enumerate(content):
            this = item_kind(item, position)
            kind = kind or this
            if this != kind:
                raise TypeError(f"input #{position} mixes {this} with {kind}: use one kind")
            if this == "documents" and selector is None:
                validate_document(item, position)
        items: Iterator[Any] = iter(content)
    else:
        items = iter(content)
        try:  # peek at the first item to know the result type
            first = next(items)
        except StopIteration:
            first = None
        else:
            kind = item_kind(first, 0)
            items = itertools.chain([first], items)
    if kind == "strings" and selector is not None:
        raise ValueError(
            f"access_paths={selector!r} selects chunks or matches of Documents; strings "
            "have none (they are embedded themselves): send Documents"
        )
    return Job(
        endpoint=endpoint,
        parameters=merged,
        batch_size=check_batch_size(batch_size),
        items=items,
        kind=kind,
        total=total,
        collect=collect,
        selector=selector,
    )


def next_batch(job: Job, index: int, start: int) -> Batch | None:
    """Take the next ``batch_size`` items and build their request (reads local files)."""
    originals = list(itertools.islice(job.items, job.batch_size))
    if not originals:
        return None
    request = DataRequestProto()
    request.header.request_id = f"{job.request_prefix}-{index}"
    request.header.exec_endpoint = job.endpoint
    request.parameters.update(job.parameters)
    docs = request.data.docs.docs
    pending: list[PendingFetch] = []
    ids = []
    nested = nested_fields(job.endpoint, job.selector)
    for offset, item in enumerate(originals):
        position = start + offset
        this = item_kind(item, position)
        if this != job.kind:
            raise TypeError(f"input #{position} mixes {this} with {job.kind}: use one kind")
        doc = docs.add()
        if this == "strings":
            doc.id = str(position)
            fill_from_string(item, doc, pending)
        elif job.selector is None:
            validate_document(item, position)
            fill_from_document(item, doc, pending, nested=nested)
        else:
            fill_from_document(item, doc, pending, nested=nested, require_content=False)
        ids.append(doc.id)
    nested_ids = frozenset(_nested_ids(docs)) if job.selector else frozenset()
    return Batch(index, request, originals, ids, pending, nested_ids)


def set_request_timeout(request: DataRequestProto, seconds: float | None) -> None:
    """Tell the server the request's deadline: ``header.timeout``, in milliseconds from its
    arrival (jina's field); the server drops the request once it has passed."""
    if seconds is not None:
        request.header.timeout = min(math.ceil(seconds * 1000), 2**32 - 1)


def _nested_ids(docs: Iterable[DocumentProto]) -> Iterator[str]:
    for doc in docs:
        for children in (doc.chunks, doc.matches):
            yield from (child.id for child in children)
            yield from _nested_ids(children)


class Results:
    """Puts replies back in input order: rows of an array for strings, the input Documents
    (embedding set, matches re-ranked) for Documents."""

    def __init__(
        self, kind: InputKind | None, endpoint: str, collect: bool, selector: str | None = None
    ) -> None:
        self.kind = kind
        self.selector = selector
        self.rank = endpoint.startswith("/rank")
        self.collect = collect
        self._parts: dict[int, Any] = {}
        self.dim: int | None = None
        self.failures: dict[str, str] = {}
        self.succeeded = 0

    def accept(self, batch: Batch, reply: DataRequestProto) -> dict[str, str]:
        """Record one reply; returns this batch's failures (id -> reason)."""
        if self.selector is not None:
            return self._accept_selected(batch, reply)
        failures = reply_failures(reply, batch)
        if not failures and self.kind == "strings" and not self.rank:
            block = contiguous_embeddings(reply, batch.ids)
            if block is not None:  # the common case, without a per-document loop
                self.succeeded += len(batch.ids)
                if self.collect:
                    self.dim = self.dim or block.shape[1]
                    self._parts[batch.index] = block
                return failures
        slots: dict[str, list[int]] = {}
        for position, doc_id in enumerate(batch.ids):
            slots.setdefault(doc_id, []).append(position)
        rows: list[np.ndarray | None] = [None] * len(batch.ids)
        for doc in reply.data.docs.docs:
            positions = slots.get(doc.id)
            if not positions:
                continue  # an id we did not send: ignore rather than misplace
            position = positions.pop(0)
            if self.kind == "documents":
                self._fill_document(batch.originals[position], doc)
            if doc.HasField("embedding") and doc.id not in failures:
                rows[position] = read_ndarray(doc.embedding, "embedding")
        if not self.rank:
            for position, doc_id in enumerate(batch.ids):
                if rows[position] is None and doc_id not in failures:
                    failures[doc_id] = "server returned no embedding"
        self.failures.update(failures)
        self.succeeded += len(batch.ids) - len(failures)
        if self.collect:
            self._store(batch, rows)
        return failures

    def _accept_selected(self, batch: Batch, reply: DataRequestProto) -> dict[str, str]:
        """A reply to an access-path request: each embedding goes to the caller's Document
        at the same place in the tree; ``succeeded`` counts the embeddings received."""
        failures = selected_failures(reply, batch)
        slots: dict[str, list[int]] = {}
        for position, doc_id in enumerate(batch.ids):
            slots.setdefault(doc_id, []).append(position)
        for doc in reply.data.docs.docs:
            positions = slots.get(doc.id)
            if positions:
                original = batch.originals[positions.pop(0)]
                self.succeeded += docconv.copy_embeddings(original, doc)
        self.failures.update(failures)
        if self.collect:
            self._parts[batch.index] = batch.originals
        return failures

    def _store(self, batch: Batch, rows: list[np.ndarray | None]) -> None:
        if self.kind == "documents":
            self._parts[batch.index] = batch.originals
            return
        if self.dim is None:
            self.dim = next((r.shape[-1] for r in rows if r is not None), None)
        if self.dim is None:
            self._parts[batch.index] = rows  # resolved in finish() once dim is known
            return
        self._parts[batch.index] = stack_rows(rows, self.dim)

    def _fill_document(self, original: Any, reply_doc: DocumentProto) -> None:
        if reply_doc.HasField("embedding"):
            original.embedding = read_ndarray(reply_doc.embedding, "embedding")
        if reply_doc.matches:
            original.matches = docconv.merge_matches(original.matches, reply_doc.matches)

    def finish(self) -> Any:
        if not self.collect:
            return None
        ordered = [self._parts[i] for i in sorted(self._parts)]
        if self.kind == "documents":
            documents = itertools.chain.from_iterable(ordered)
            return docconv.document_array(documents, "Document results")
        dim = self.dim or 0
        arrays = [p if isinstance(p, np.ndarray) else stack_rows(p, dim) for p in ordered]
        if not arrays:
            return np.empty((0, dim), dtype=np.float32)
        return np.concatenate(arrays, axis=0)


def contiguous_embeddings(reply: DataRequestProto, ids: list[str]) -> np.ndarray | None:
    """All embeddings of a reply as one ``[n, D]`` array when the reply answers exactly
    ``ids`` in order with same-shaped dense float arrays; None otherwise (slow path)."""
    docs = reply.data.docs.docs
    if len(docs) != len(ids) or not ids:
        return None
    first = docs[0].embedding.dense
    dtype, shape = first.dtype, list(first.shape)
    if len(shape) != 1 or not dtype or np.dtype(dtype).kind != "f":
        return None
    row_bytes = shape[0] * np.dtype(dtype).itemsize
    buffers = []
    for doc, doc_id in zip(docs, ids, strict=True):
        dense = doc.embedding.dense
        buffer = dense.buffer
        if (
            len(buffer) != row_bytes
            or doc.id != doc_id
            or dense.dtype != dtype
            or len(dense.shape) != 1
            or dense.shape[0] != shape[0]
        ):
            return None
        buffers.append(buffer)
    data = b"".join(buffers)
    return np.frombuffer(data, dtype=dtype).reshape(len(ids), shape[0]).astype(np.float32)


def stack_rows(rows: list[np.ndarray | None], dim: int) -> np.ndarray:
    """Rows -> float32 [n, dim]; a failed document's row is NaN."""
    out = np.full((len(rows), dim), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        if row is not None:
            out[i] = row.reshape(-1)[:dim]
    return out
