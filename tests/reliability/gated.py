"""A model whose forward passes a test can hold at a gate (so it knows where the work is),
slow down, count, or fail on a marker text; and small helpers for the server tests that use
it: requests of numbered texts, metric sums, the engine of a running server."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np

from clipserve.engine import CachedEngine, Engine
from clipserve.server.app import RunningServer
from clipserve.wire import DataRequestProto, DocumentProto
from clipserve.wire.messages import new_request
from tests.engine.helpers import HashTextsModel
from tests.waiting import FAILSAFE_S

FAIL = "<inject model failure>"


class GatedModel(HashTextsModel):
    """The hash model, made slow by ``delay_s`` per forward pass; a forward waits while
    ``gate`` is closed (``entered`` tells that one has started); fails on ``FAIL``."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.forwarded: list[list[str]] = []  # the texts of each forward pass, in order
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def hold(self) -> None:
        """Close the gate: the next forward pass waits (and sets ``entered``)."""
        self.entered.clear()
        self.gate.clear()

    def _pass(self) -> None:
        self.entered.set()
        if not self.gate.wait(FAILSAFE_S):
            raise RuntimeError("the test never opened the gate")
        time.sleep(self.delay_s)  # the model's own (simulated) compute time

    def on_texts(self, texts: list[str]) -> None:
        self.forwarded.append(list(texts))
        self._pass()
        if FAIL in texts:
            raise RuntimeError("injected failure on the marker text")

    def forward_images(self, pixels: np.ndarray) -> np.ndarray:
        self._pass()
        return self.inner.forward_images(pixels)


def sample(metric: Any, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for family in metric.collect():
        for s in family.samples:
            if s.name.endswith(("_created", "_bucket")):
                continue
            if all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def texts_request(request_id: str, count: int, blob_kib: int = 0) -> DataRequestProto:
    docs = [DocumentProto(id=f"{request_id}-{i}", text=f"{request_id} {i}") for i in range(count)]
    if blob_kib:
        docs = [DocumentProto(id=d.id, blob=os.urandom(blob_kib * 1024)) for d in docs]
    return new_request(docs, request_id=request_id)


def engine_of(server: RunningServer) -> Engine:
    """The server's batching engine (behind its embedding cache, if it has one)."""
    engine = server.server.engine
    assert engine is not None
    return engine.engine if isinstance(engine, CachedEngine) else engine
