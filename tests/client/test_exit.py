"""A script that never closes its Client still exits: the sync client's background loop and
its connections are closed at interpreter exit (a gRPC channel left to its finalizer used to
block the exit for good)."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import sys
from clipserve import Client

client = Client(sys.argv[1])
print(client.encode(["a photo of a cat", "a photo of a dog"]).shape, flush=True)
"""


@pytest.mark.parametrize("protocol", ["grpc", "http", "websocket"])
def test_a_script_that_never_closes_its_client_exits(hash_server, protocol: str) -> None:
    try:  # the timeout is a failsafe: without the fix the process never ends
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, hash_server.urls[protocol]],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the script printed {exc.stdout!r} and then did not exit")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(2, 512)"
