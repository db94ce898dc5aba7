"""The wire format shared by server and client: the CLIP-as-service protobuf schema,
its JSON form, and helpers for documents, arrays, errors and routes."""

from clipserve.wire.clipserve_wire_pb2 import (
    DataRequestProto,
    DocumentArrayProto,
    DocumentProto,
    NamedScoreProto,
    NdArrayProto,
    RouteProto,
    StatusProto,
)

#: the one gRPC method clip-client calls (bidirectional stream of DataRequestProto)
GRPC_METHOD = "/jina.JinaRPC/Call"
GRPC_SERVICE = "jina.JinaRPC"
#: end-of-input marker on the WebSocket protocol
WS_END_OF_INPUT = b"\x00"
WS_SUBPROTOCOL = "bytes"

__all__ = [
    "GRPC_METHOD",
    "GRPC_SERVICE",
    "WS_END_OF_INPUT",
    "WS_SUBPROTOCOL",
    "DataRequestProto",
    "DocumentArrayProto",
    "DocumentProto",
    "NamedScoreProto",
    "NdArrayProto",
    "RouteProto",
    "StatusProto",
]
