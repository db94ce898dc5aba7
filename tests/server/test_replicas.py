"""``--replicas N``: N real model copies, spread over the listed devices, all serving."""

from __future__ import annotations

import httpx

from clipserve.models.registry import load_model
from clipserve.server.app import loopback_config, running_server
from clipserve.server.config import ServerConfig
from clipserve.server.startup import replica_devices


def test_replica_devices_cycle_over_the_listed_devices():
    assert replica_devices(ServerConfig(device="cpu", replicas=3)) == ["cpu"] * 3
    spread = ServerConfig(device="cuda:0, cuda:1", replicas=3)
    assert replica_devices(spread) == ["cuda:0", "cuda:1", "cuda:0"]


def test_server_loads_one_model_copy_per_replica_and_each_serves():
    config = loopback_config(model="hash::8", replicas=2, protocols=["http"])
    with running_server(config) as server:
        replicas = server.server._replicas
        assert len(replicas) == 2 and replicas[0] is not replicas[1]
        texts = [f"sentence {i}" for i in range(40)]
        body = {"data": [{"id": str(i), "text": t} for i, t in enumerate(texts)]}
        reply = httpx.post(f"{server.urls['http']}/encode", json=body, timeout=30).json()
        got = [d["embedding"] for d in reply["data"]]
        expected = load_model("hash::8").encode_texts(texts).tolist()
        assert got == expected
