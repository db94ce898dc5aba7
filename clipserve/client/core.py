"""The client's decisions, free of network I/O: checking input, cutting it into batches,
building requests, and putting replies back together in input order.

Input is either an iterable of ``str`` (auto-detected, see ``detect.py``; the result is an
``ndarray [N, D]``) or an iterable of docarray ``Document`` (the result is a
``DocumentArray`` of the same Documents with ``.embedding`` set, or with ``.matches``
re-ranked for ``/rank``). Each batch becomes one ``DataRequestProto``; replies may come back
in any order and are matched to their batch by ``request_id`` and to their input by
document id.
"""

from __future__ import annotations

import itertools
import math
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from docarray import Document, DocumentArray

from clipserve.client import docs as docconv
from clipserve.client.inputs import PendingFetch, describe, fill_from_document, fill_from_string
from clipserve.errors import InvalidInputError
from clipserve.wire.clipserve_wire_pb2 import DataRequestProto, DocumentProto, StatusProto
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
    request_prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


@dataclass
class Batch:
    index: int
    request: DataRequestProto
    originals: list[Any]  # the input strings / Documents, in order
    ids: list[str]
    pending: list[PendingFetch]

    @property
    def request_id(self) -> str:
        return self.request.header.request_id


def endpoint_for(name: str, parameters: Mapping[str, Any] | None) -> str:
    """``/encode`` -> ``/encode/<model_name>`` when ``parameters['model_name']`` is given."""
    model = (parameters or {}).get("model_name")
    return f"{name}/{model}" if model and name != "/" else name


def merged_parameters(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    if parameters is not None and not isinstance(parameters, Mapping):
        raise TypeError(f"parameters must be a dict, got {type(parameters).__name__}")
    return {**DEFAULT_PARAMETERS, **(parameters or {})}


def check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def item_kind(item: Any, position: int) -> InputKind:
    if isinstance(item, str):
        return "strings"
    if isinstance(item, Document):
        return "documents"
    raise TypeError(
        f"input #{position} is {type(item).__name__}; encode() takes an iterable of str "
        "or of docarray Document"
    )


def validate_document(doc: Any, position: int) -> None:
    """Cheap, I/O-free check that a Document has something to encode."""
    if not (doc.text or doc.uri or doc.blob or doc.tensor is not None):
        raise InvalidInputError(
            f"input #{position} ({describe(doc)}) has nothing to encode: "
            "set .text, .uri, .blob or .tensor"
        )


def plan_job(content: Any, endpoint: str, parameters: Any, batch_size: Any, collect: bool) -> Job:
    """Validate ``content`` before anything is sent. Sized inputs (list, tuple,
    DocumentArray) are checked item by item; iterators are checked as they are consumed."""
    if content is None or isinstance(content, (str, bytes, bytearray, Document)):
        raise TypeError(
            f"content must be an iterable of str or Document, not a single "
            f"{type(content).__name__}; wrap it in a list: encode([x])"
        )
    if not isinstance(content, Iterable):
        raise TypeError(f"content must be an iterable of str or Document, got {content!r}")
    kind: InputKind | None = "documents" if isinstance(content, DocumentArray) else None
    total = None
    if hasattr(content, "__len__") and hasattr(content, "__getitem__"):
        total = len(content)
        for position, item in enumerate(content):
            this = item_kind(item, position)
            kind = kind or this
            if this != kind:
                raise TypeError(f"input #{position} mixes {this} with {kind}: use one kind")
            if this == "documents":
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
    return Job(
        endpoint=endpoint,
        parameters=merged_parameters(parameters),
        batch_size=check_batch_size(batch_size),
        items=items,
        kind=kind,
        total=total,
        collect=collect,
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
    for offset, item in enumerate(originals):
        position = start + offset
        this = item_kind(item, position)
        if this != job.kind:
            raise TypeError(f"input #{position} mixes {this} with {job.kind}: use one kind")
        doc = docs.add()
        if this == "strings":
            doc.id = str(position)
            fill_from_string(item, doc, pending)
        else:
            validate_document(item, position)
            fill_from_document(item, doc, pending)
        ids.append(doc.id)
    return Batch(index, request, originals, ids, pending)


_FAILED_DOC = re.compile(r"'((?:[^'\\]|\\.)*)': (.*?)(?=; '|; \.\.\. and \d+ more$|$)")


def parse_failure_description(description: str) -> dict[str, str]:
    """clipserve's ``"2 of 8 documents failed: 'a': reason; 'b': reason"`` -> {id: reason}."""
    head, sep, listed = description.partition(" failed: ")
    if not sep or " of " not in head:
        return {}
    return {m.group(1): m.group(2) for m in _FAILED_DOC.finditer(listed)}


def set_request_timeout(request: DataRequestProto, seconds: float | None) -> None:
    """Tell the server the request's deadline: ``header.timeout``, in milliseconds from its
    arrival (jina's field); the server drops the request once it has passed."""
    if seconds is not None:
        request.header.timeout = min(math.ceil(seconds * 1000), 2**32 - 1)


def is_request_level(reply: DataRequestProto) -> bool:
    """An ERROR reply that refuses the whole request (not per-document failures)."""
    status = reply.header.status
    if status.code != StatusProto.ERROR:
        return False
    has_results = any(d.HasField("embedding") for d in reply.data.docs.docs)
    return not has_results and not parse_failure_description(status.description)


def reply_failures(reply: DataRequestProto, batch: Batch) -> dict[str, str]:
    """Which documents of ``batch`` failed, with the server's reason (listed ids get their
    own reason; any other document without an embedding gets the reply's description)."""
    failures: dict[str, str] = {}
    status = reply.header.status
    if status.code != StatusProto.ERROR:
        return failures
    reason = status.description or status.exception.name or "server error"
    known = set(batch.ids)
    for doc_id, why in parse_failure_description(status.description).items():
        if doc_id in known:
            failures[doc_id] = why
    answered = {d.id for d in reply.data.docs.docs if d.HasField("embedding") or d.matches}
    for doc_id in batch.ids:
        if doc_id not in answered and doc_id not in failures:
            failures[doc_id] = reason
    return failures


class Results:
    """Puts replies back in input order: rows of an array for strings, the input Documents
    (embedding set, matches re-ranked) for Documents."""

    def __init__(self, kind: InputKind | None, endpoint: str, collect: bool) -> None:
        self.kind = kind
        self.rank = endpoint.startswith("/rank")
        self.collect = collect
        self._parts: dict[int, Any] = {}
        self.dim: int | None = None
        self.failures: dict[str, str] = {}
        self.succeeded = 0

    def accept(self, batch: Batch, reply: DataRequestProto) -> dict[str, str]:
        """Record one reply; returns this batch's failures (id -> reason)."""
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
            return DocumentArray(list(itertools.chain.from_iterable(ordered)))
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
