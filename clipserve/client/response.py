"""What ``on_done`` / ``on_error`` / ``on_always`` callbacks receive: one reply."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from clipserve.client.core import Batch, stack_rows
from clipserve.client.docs import document_array, to_document
from clipserve.wire.clipserve_wire_pb2 import DataRequestProto
from clipserve.wire.ndarray import read_ndarray


class Response:
    """One reply: ``.docs`` (DocumentArray, like jina's ``Response.docs``), ``.embeddings``
    (``[n, D]`` in the batch's input order, NaN rows for failed documents), ``.inputs`` (the
    batch's strings / Documents), ``.failures`` (id -> reason) and the raw ``.proto``."""

    def __init__(self, proto: DataRequestProto, batch: Batch, failures: dict[str, str]) -> None:
        self.proto = proto
        self.inputs: list[Any] = batch.originals
        self.ids: list[str] = batch.ids
        self.failures = failures
        self.request_id = proto.header.request_id

    @cached_property
    def docs(self) -> Any:
        """The reply's documents as a ``DocumentArray`` (needs ``clipserve[docarray]``)."""
        return document_array(map(to_document, self.proto.data.docs.docs), "Response.docs")

    @cached_property
    def embeddings(self) -> np.ndarray:
        by_id: dict[str, list[np.ndarray]] = {}
        for doc in self.proto.data.docs.docs:
            if doc.HasField("embedding") and doc.id not in self.failures:
                by_id.setdefault(doc.id, []).append(read_ndarray(doc.embedding, "embedding"))
        rows = [by_id[i].pop(0) if by_id.get(i) else None for i in self.ids]
        dim = next((r.shape[-1] for r in rows if r is not None), 0)
        return stack_rows(rows, dim)
