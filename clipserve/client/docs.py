"""docarray, the optional half of the client (``pip install 'clipserve[docarray]'``).

A ``Document`` can only exist once its caller has imported docarray, so whether an input
is one is decided from ``sys.modules`` without importing docarray ourselves: a client fed
strings never pays for it. docarray is imported (or its absence reported, naming the
extra) only where Documents are produced: results of Document input and ``Response.docs``.

``DocumentProto`` -> ``Document`` is copied field by field (docarray 0.21's own
dict/JSON/pydantic paths break under pydantic 2, so they are not used)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any

from clipserve.errors import MissingDependencyError
from clipserve.extras import require
from clipserve.wire.clipserve_wire_pb2 import DocumentProto
from clipserve.wire.ndarray import read_ndarray

EXTRA = "docarray"
#: the docarray releases with the ``Document``/``DocumentArray`` API of the spec
REQUIREMENT = "docarray<0.30"


def _loaded_class(name: str) -> type | None:
    module = sys.modules.get("docarray")
    found = getattr(module, name, None) if module is not None else None
    return found if isinstance(found, type) else None


def is_document(item: Any) -> bool:
    cls = _loaded_class("Document")
    return cls is not None and isinstance(item, cls)


def is_document_array(content: Any) -> bool:
    cls = _loaded_class("DocumentArray")
    return cls is not None and isinstance(content, cls)


def docarray(needed_for: str) -> ModuleType:
    """The docarray module, or a ``MissingDependencyError`` naming the extra."""
    module = require(
        "docarray", needed_for=needed_for, package=REQUIREMENT, extra=EXTRA,
        error=MissingDependencyError,
    )  # fmt: skip
    if not hasattr(module, "DocumentArray"):  # docarray >= 0.30 has another API
        version = getattr(module, "__version__", "?")
        raise MissingDependencyError(
            f"{needed_for} needs {REQUIREMENT!r}, found docarray {version} "
            f"(pip install 'clipserve[{EXTRA}]')"
        )
    return module


def input_hint(item: Any) -> str:
    """What to say about an input that is neither a string nor a Document we know."""
    if type(item).__module__.split(".")[0] == "docarray":
        return f"; Documents must come from {REQUIREMENT!r} (pip install 'clipserve[{EXTRA}]')"
    if "docarray" not in sys.modules and importlib.util.find_spec("docarray") is None:
        return f" (Documents need pip install 'clipserve[{EXTRA}]')"
    return ""


def to_document(proto: DocumentProto) -> Any:
    """A reply document as a new ``Document`` (content, uri, embedding, scores, matches)."""
    document_class = docarray("Documents in replies").Document
    doc = document_class(id=proto.id) if proto.id else document_class()
    content = proto.WhichOneof("content")
    if content == "text":
        doc.text = proto.text
    elif content == "blob":
        doc.blob = proto.blob
    elif content == "tensor":
        doc.tensor = read_ndarray(proto.tensor)
    for name in ("uri", "mime_type", "modality", "parent_id"):
        value = getattr(proto, name)
        if value:
            setattr(doc, name, value)
    if proto.HasField("embedding"):
        doc.embedding = read_ndarray(proto.embedding, "embedding")
    if proto.HasField("tags"):
        from google.protobuf import json_format

        doc.tags.update(json_format.MessageToDict(proto.tags))
    copy_scores(proto, doc)
    if proto.matches:
        doc.matches = [to_document(m) for m in proto.matches]
    if proto.chunks:
        doc.chunks = [to_document(c) for c in proto.chunks]
    return doc


def document_array(documents: Iterable[Any], needed_for: str) -> Any:
    return docarray(needed_for).DocumentArray(list(documents))


def copy_scores(proto: DocumentProto, doc: Any) -> None:
    for name, score in proto.scores.items():
        target = doc.scores[name]
        target.value = score.value
        if score.op_name:
            target.op_name = score.op_name
        if score.description:
            target.description = score.description
        if score.ref_id:
            target.ref_id = score.ref_id


def merge_matches(originals: Sequence[Any], replies: Iterable[DocumentProto]) -> list[Any]:
    """The reply's match order, applied to the caller's own match Documents (matched by id,
    scores copied); a reply match with an unknown id becomes a new Document."""
    by_id: dict[str, list[Any]] = {}
    for match in originals or ():
        by_id.setdefault(match.id, []).append(match)
    merged = []
    for proto in replies:
        candidates = by_id.get(proto.id)
        if candidates:
            match = candidates.pop(0)
            copy_scores(proto, match)
            if proto.HasField("embedding"):
                match.embedding = read_ndarray(proto.embedding, "embedding")
        else:
            match = to_document(proto)
        merged.append(match)
    return merged


def copy_embeddings(original: Any, proto: DocumentProto) -> int:
    """The embeddings of a reply document and of its chunks and matches, at every depth,
    onto the caller's Document and its own chunks and matches (same place, same id);
    returns how many were copied."""
    copied = 0
    if proto.HasField("embedding"):
        original.embedding = read_ndarray(proto.embedding, "embedding")
        copied = 1
    for name in ("chunks", "matches"):
        replies = getattr(proto, name)
        if replies:
            # strict=False: a reply holding more or fewer than were sent gets no guesses
            for mine, reply in zip(getattr(original, name), replies, strict=False):
                if mine.id == reply.id:
                    copied += copy_embeddings(mine, reply)
    return copied
