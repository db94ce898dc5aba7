"""Retries: a server killed (SIGKILL) mid-stream and restarted on the same ports; with
``retries`` the call completes with every embedding present exactly once, in order."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from clipserve import Client
from clipserve.errors import ServerUnavailableError
from clipserve.models.hashing import HashModel


@pytest.mark.parametrize("scheme", ["grpc", "http", "ws"])
def test_kill_and_restart_mid_stream_loses_and_duplicates_nothing(server_process, scheme) -> None:
    texts = [f"text number {i}" for i in range(2000)]
    # killed at text 700: the batches before it are in flight or answered
    items = server_process.killed_at(texts, 700)
    # timeout=20: a batch lost for any reason is resent after 20 s, not the default 300 s. The one
    # CI hang seen here (HTTP) was a connection pool filled with slots leaked by cancelled requests,
    # reused by every retry; fixed in the HTTP transport, see tests/client/test_http_stalls.py
    client = Client(
        server_process.url(scheme), retries=8, retry_backoff=0.2, connect_timeout=2, timeout=20
    )
    replies: list[list[str]] = []
    out = client.encode(items, batch_size=10, prefetch=8)
    client.close()
    assert server_process.restarted.is_set() and server_process.starts == 2
    np.testing.assert_array_equal(out, HashModel().encode_texts(texts))
    with Client(server_process.url(scheme)) as again:  # and the restarted server answers callbacks
        again.encode(texts[:30], batch_size=10, on_done=lambda r: replies.append(r.ids))
    assert sorted(int(i) for ids in replies for i in ids) == list(range(30))


def test_without_retries_a_killed_server_is_an_error(server_process) -> None:
    def items() -> Iterator[str]:
        for i in range(500):
            if i == 100:
                server_process.kill()
            yield f"t{i}"

    client = Client(server_process.url("grpc"), connect_timeout=1)
    with client, pytest.raises(ServerUnavailableError, match="127.0.0.1"):
        client.encode(items(), batch_size=10)
