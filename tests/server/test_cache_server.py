"""The embedding cache as served: on by default, counted on /metrics and in /health, and
off with --cache-mb 0."""

from __future__ import annotations

import httpx
import numpy as np
from prometheus_client import CollectorRegistry

from clipserve import Client
from clipserve.cli import build_parser, config_from_args
from clipserve.engine import Metrics
from clipserve.server.app import loopback_config, running_server


def test_repeated_inputs_are_served_from_the_cache() -> None:
    metrics = Metrics(CollectorRegistry())
    texts = [f"caption {i}" for i in range(20)]
    with running_server(loopback_config(), metrics=metrics) as server:
        with Client(server.urls["grpc"]) as client:
            first = client.encode(texts)
            again = client.encode(texts)
        health = httpx.get(server.urls["http"] + "/health").json()
        exposition = httpx.get(server.urls["http"] + "/metrics").text
    assert first.tobytes() == again.tobytes()
    cache = health["cache"]
    assert cache["enabled"] and (cache["hits"], cache["misses"], cache["entries"]) == (20, 20, 20)
    assert 0 < cache["bytes"] <= cache["max_bytes"] == 128 * 1024 * 1024
    assert 'clipserve_cache_hits_total{modality="text",tier="memory"} 20.0' in exposition
    assert 'clipserve_cache_misses_total{modality="text"} 20.0' in exposition
    assert "clipserve_cache_bytes " in exposition
    assert "clipserve_cache_evictions_total 0.0" in exposition


def test_cache_mb_zero_turns_it_off_and_exact_preprocess_reaches_the_model() -> None:
    args = build_parser().parse_args(["serve", "--cache-mb", "0", "--exact-preprocess"])
    config = config_from_args(args)
    assert (config.cache_mb, config.exact_preprocess) == (0, True)
    assert config_from_args(build_parser().parse_args(["serve"])).cache_mb == 128
    metrics = Metrics(CollectorRegistry())
    config = loopback_config(cache_mb=0, exact_preprocess=True)
    with running_server(config, metrics=metrics) as server:
        assert server.model.exact_preprocess
        with Client(server.urls["grpc"]) as client:
            embeddings = [client.encode(["same"]) for _ in range(2)]
        health = httpx.get(server.urls["http"] + "/health").json()
    assert health["cache"] == {"enabled": False} and health["exact_preprocess"] is True
    np.testing.assert_array_equal(*embeddings)
    items = metrics.registry.get_sample_value(
        "clipserve_items_total", {"modality": "text", "outcome": "ok"}
    )
    assert items == 2  # both computed
