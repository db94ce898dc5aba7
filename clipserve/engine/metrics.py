"""Prometheus metrics for the engine and the front-ends.

All metrics live on one ``CollectorRegistry`` (``REGISTRY``) that the HTTP ``/metrics``
endpoint renders with :func:`render`. Tests that need isolated numbers build their own
``Metrics(CollectorRegistry())`` and pass it to ``Engine(..., metrics=...)``.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """Every clipserve metric, registered on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # engine
        self.batch_size = Histogram(
            "clipserve_batch_size",
            "Items per forward batch.",
            ["modality"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "clipserve_queue_depth",
            "Items waiting in the engine queue, not yet in a batch.",
            ["modality"],
            registry=registry,
        )
        self.queue_waiting = Gauge(
            "clipserve_queue_waiting",
            "Items of calls waiting for room in a full engine queue (back-pressure).",
            ["modality"],
            registry=registry,
        )
        self.items = Counter(
            "clipserve_items",
            "Items the engine finished, by outcome (ok, invalid, model_error, cancelled, "
            "expired, unhealthy, stopped).",
            ["modality", "outcome"],
            registry=registry,
        )
        self.dropped = Counter(
            "clipserve_dropped_items",
            "Items dropped before any forward pass because their caller could no longer use "
            "the answer, by reason (deadline, cancelled: the caller left, unhealthy).",
            ["modality", "reason"],
            registry=registry,
        )
        self.decoding_pixels = Gauge(
            "clipserve_decoding_pixels",
            "Decoded image pixels held by preprocessing threads now (bounded by "
            "--max-decoding-megapixels).",
            registry=registry,
        )
        self.healthy = Gauge(
            "clipserve_engine_healthy",
            "1 while the engine is healthy; 0 while a forward pass is stuck or an inference "
            "thread is dead.",
            registry=registry,
        )
        self.forward_latency = Histogram(
            "clipserve_forward_seconds",
            "Time of one forward pass (one batch) on an inference thread.",
            ["modality"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.prepare_cpu = Counter(
            "clipserve_prepare_cpu_seconds",
            "CPU time the preprocessing threads spent decoding images / tokenising texts.",
            ["modality"],
            registry=registry,
        )
        # embedding cache (engine.cached)
        self.cache_hits = Counter(
            "clipserve_cache_hits",
            "Inputs answered from the embedding cache, by tier (memory, disk).",
            ["modality", "tier"],
            registry=registry,
        )
        self.cache_misses = Counter(
            "clipserve_cache_misses",
            "Inputs the embedding cache did not hold, sent to the model.",
            ["modality"],
            registry=registry,
        )
        self.cache_coalesced = Counter(
            "clipserve_cache_coalesced",
            "Inputs that waited for an identical input already being computed.",
            ["modality"],
            registry=registry,
        )
        self.cache_evictions = Counter(
            "clipserve_cache_evictions",
            "Entries dropped from the in-memory cache to stay within its size.",
            registry=registry,
        )
        self.cache_bytes = Gauge(
            "clipserve_cache_bytes",
            "Bytes held by the in-memory embedding cache (values, keys, per-entry overhead).",
            registry=registry,
        )
        self.cache_entries = Gauge(
            "clipserve_cache_entries",
            "Entries in the in-memory embedding cache.",
            registry=registry,
        )
        # front-ends
        self.requests = Counter(
            "clipserve_requests",
            "Requests answered, by protocol, endpoint and status.",
            ["protocol", "endpoint", "status"],
            registry=registry,
        )
        self.documents = Counter(
            "clipserve_documents",
            "Documents answered, by protocol, endpoint and status.",
            ["protocol", "endpoint", "status"],
            registry=registry,
        )
        self.tenant_requests = Counter(
            "clipserve_tenant_requests",
            "Requests by tenant (the name from the tokens file, never the token) and status.",
            ["tenant", "status"],
            registry=registry,
        )
        self.tenant_documents = Counter(
            "clipserve_tenant_documents",
            "Documents answered by tenant.",
            ["tenant"],
            registry=registry,
        )
        self.request_latency = Histogram(
            "clipserve_request_seconds",
            "Time from a request's arrival to its reply.",
            ["protocol", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)


#: the process-wide registry and metrics the server exposes on /metrics
REGISTRY = CollectorRegistry()
METRICS = Metrics(REGISTRY)
CONTENT_TYPE = CONTENT_TYPE_LATEST

BATCH_SIZE = METRICS.batch_size
QUEUE_DEPTH = METRICS.queue_depth
ITEMS = METRICS.items
FORWARD_LATENCY = METRICS.forward_latency
REQUESTS = METRICS.requests
DOCUMENTS = METRICS.documents
REQUEST_LATENCY = METRICS.request_latency


def render() -> bytes:
    """The text the HTTP ``/metrics`` endpoint returns (content type ``CONTENT_TYPE``)."""
    return METRICS.render()
