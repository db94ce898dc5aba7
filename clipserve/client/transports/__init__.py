"""One small interface per protocol: open a stream, send requests as they come, yield
replies as they arrive (in any order). Transports translate their library's errors into
``clipserve.errors`` (original kept as ``__cause__``); all decisions live elsewhere."""

from __future__ import annotations

from clipserve.client.transports.base import Transport, TransportOptions

__all__ = ["Transport", "TransportOptions", "make_transport"]


def make_transport(options: TransportOptions) -> Transport:
    protocol = options.address.protocol
    if protocol == "grpc":
        from clipserve.client.transports.grpc import GrpcTransport

        return GrpcTransport(options)
    if protocol == "http":
        from clipserve.client.transports.http import HttpTransport

        return HttpTransport(options)
    from clipserve.client.transports.websocket import WebSocketTransport

    return WebSocketTransport(options)
