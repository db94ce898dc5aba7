"""What a reply says failed: clipserve's failure description (``"2 of 8 documents failed:
'a': reason; 'b': reason"``) read back into {document id: reason}, and whether an ERROR
reply refuses a whole request."""

from __future__ import annotations

import re
from typing import Protocol

from clipserve.wire.clipserve_wire_pb2 import DataRequestProto, StatusProto


class Sent(Protocol):
    """What a request carried (``core.Batch``): its input ids and, for an access-path
    request, the ids of the nested Documents it carried."""

    ids: list[str]
    nested_ids: frozenset[str]


_FAILED_DOC = re.compile(r"'((?:[^'\\]|\\.)*)': (.*?)(?=; '|; \.\.\. and \d+ more$|$)")


def parse_failure_description(description: str) -> dict[str, str]:
    """clipserve's ``"2 of 8 documents failed: 'a': reason; 'b': reason"`` -> {id: reason}."""
    head, sep, listed = description.partition(" failed: ")
    if not sep or " of " not in head:
        return {}
    return {m.group(1): m.group(2) for m in _FAILED_DOC.finditer(listed)}


def is_request_level(reply: DataRequestProto) -> bool:
    """An ERROR reply that refuses the whole request (not per-document failures)."""
    status = reply.header.status
    if status.code != StatusProto.ERROR:
        return False
    has_results = any(d.HasField("embedding") for d in reply.data.docs.docs)
    return not has_results and not parse_failure_description(status.description)


def reply_failures(reply: DataRequestProto, batch: Sent) -> dict[str, str]:
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


def selected_failures(reply: DataRequestProto, batch: Sent) -> dict[str, str]:
    """The failures of an access-path request: the documents, input or nested, the server
    names; when it names none of them, every input Document of the batch, with its words."""
    status = reply.header.status
    if status.code != StatusProto.ERROR:
        return {}
    known = set(batch.ids) | batch.nested_ids
    listed = parse_failure_description(status.description).items()
    failures = {doc_id: why for doc_id, why in listed if doc_id in known}
    if not failures:
        reason = status.description or status.exception.name or "server error"
        failures = dict.fromkeys(batch.ids, reason)
    return failures
