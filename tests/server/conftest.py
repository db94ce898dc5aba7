"""Servers shared by the front-end tests (real sockets on 127.0.0.1, port 0).

- ``hash_server``: every protocol on the ``hash`` model (plumbing; exact expected values).
- ``tight_server``: tiny queue (4 items) whose batches wait ``TIGHT_WAIT_MS`` to fill, 1 MiB
  HTTP bodies and CORS for one origin: a 4-text request holds the queue full for that long,
  so a second request meets 413/429/RESOURCE_EXHAUSTED.
- ``builtin_server``: the real default model, for numbers compared with ``model.encode_*``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from clipserve.models.base import EmbeddingModel
from clipserve.server.app import RunningServer, loopback_config, running_server
from clipserve.wire import WS_SUBPROTOCOL, DataRequestProto, DocumentProto
from clipserve.wire.messages import new_request

CORS_ORIGIN = "https://app.example.com"
TIGHT_QUEUE = 4
TIGHT_WAIT_MS = 1500.0


@pytest.fixture(scope="session")
def hash_server(hash_model: EmbeddingModel) -> Iterator[RunningServer]:
    with running_server(loopback_config(model="hash"), model=hash_model) as server:
        yield server


@pytest.fixture(scope="session")
def tight_server(hash_model: EmbeddingModel) -> Iterator[RunningServer]:
    config = loopback_config(
        model="hash",
        max_queue_items=TIGHT_QUEUE,
        max_queue_wait_s=0.0,  # refuse at once: these tests look at refusals
        cache_mb=0,  # repeated texts must reach the queue, not the embedding cache
        max_batch_size=64,
        max_wait_ms=TIGHT_WAIT_MS,
        http_max_body_mb=1,
        cors=(CORS_ORIGIN,),
    )
    with running_server(config, model=hash_model) as server:
        yield server


@pytest.fixture(scope="session")
def builtin_server(builtin_model: EmbeddingModel) -> Iterator[RunningServer]:
    with running_server(loopback_config(model="builtin"), model=builtin_model) as server:
        yield server


@contextmanager
def stoppable_server(
    model: EmbeddingModel, **changes: object
) -> Iterator[tuple[RunningServer, threading.Thread]]:
    """A server and a thread that stops it (start the thread to begin the shutdown)."""
    context = running_server(loopback_config(**changes), model=model)
    server = context.__enter__()
    stopper = threading.Thread(target=context.__exit__, args=(None, None, None))
    try:
        yield server, stopper
    finally:
        if stopper.ident is None:
            stopper.start()
        stopper.join(timeout=30)


def filling_request(request_id: str) -> DataRequestProto:
    """Texts that fill ``tight_server``'s queue until its batch wait is over."""
    return text_request(request_id, *[f"fill {i}" for i in range(TIGHT_QUEUE)])


def text_request(request_id: str, *texts: str, endpoint: str = "/encode") -> DataRequestProto:
    docs = [DocumentProto(id=f"{request_id}-{i}", text=t) for i, t in enumerate(texts)]
    return new_request(docs, endpoint=endpoint, request_id=request_id)


def image_request(request_id: str, photos: dict[str, bytes]) -> DataRequestProto:
    docs = [
        DocumentProto(id=f"{request_id}-{name}", blob=data, mime_type="image/jpeg")
        for name, data in photos.items()
    ]
    return new_request(docs, request_id=request_id)


async def ws_exchange(url: str, frames: list[bytes | str], **connect) -> tuple[list, int | None]:
    """Send the frames (until the server closes), then read replies until it closes;
    returns (replies, close code)."""
    replies = []
    async with websockets.connect(url, subprotocols=[WS_SUBPROTOCOL], **connect) as ws:
        for frame in frames:
            try:
                await ws.send(frame)
            except ConnectionClosed:
                break
        try:
            async for message in ws:
                replies.append(DataRequestProto.FromString(message))
        except ConnectionClosed:
            pass
        return replies, ws.close_code
