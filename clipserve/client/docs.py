"""``DocumentProto`` -> docarray ``Document``, field by field (docarray 0.21's own
dict/JSON/pydantic paths break under pydantic 2, so they are not used)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from docarray import Document
from google.protobuf import json_format

from clipserve.wire.clipserve_wire_pb2 import DocumentProto
from clipserve.wire.ndarray import read_ndarray


def to_document(proto: DocumentProto) -> Document:
    """A reply document as a new ``Document`` (content, uri, embedding, scores, matches)."""
    doc = Document(id=proto.id) if proto.id else Document()
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
        doc.tags.update(json_format.MessageToDict(proto.tags))
    copy_scores(proto, doc)
    if proto.matches:
        doc.matches = [to_document(m) for m in proto.matches]
    if proto.chunks:
        doc.chunks = [to_document(c) for c in proto.chunks]
    return doc


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
