"""clipserve's client: ``Client("grpc://host:port").encode([...])``.

Layout (httpx-style): ``core``/``detect``/``inputs``/``retry``/``errors_map``/``profile``
decide things without network I/O; ``pipeline`` streams a job over one of the
``transports`` (grpc, http, websocket); ``client`` is the sync + async face."""

from typing import Any

from clipserve.client.client import DEFAULT_BATCH_SIZE, DEFAULT_PREFETCH, Client
from clipserve.client.detect import classify_string

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_PREFETCH", "Client", "Response", "classify_string"]


def __getattr__(name: str) -> Any:  # numpy and protobuf load with the first call, not here
    if name == "Response":
        from clipserve.client.response import Response

        globals()["Response"] = Response  # a plain attribute from now on
        return Response
    raise AttributeError(f"module 'clipserve.client' has no attribute {name!r}")
