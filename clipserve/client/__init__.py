"""clipserve's client: ``Client("grpc://host:port").encode([...])``.

Layout (httpx-style): ``core``/``detect``/``inputs``/``retry``/``errors_map``/``profile``
decide things without network I/O; ``pipeline`` streams a job over one of the
``transports`` (grpc, http, websocket); ``client`` is the sync + async face."""

from clipserve.client.client import DEFAULT_BATCH_SIZE, DEFAULT_PREFETCH, Client
from clipserve.client.detect import classify_string
from clipserve.client.response import Response

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_PREFETCH", "Client", "Response", "classify_string"]
