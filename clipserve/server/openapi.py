"""The OpenAPI document served at ``/openapi.json``: clip-client reads it to pick the path
it posts to (``/encode`` if listed), and clipserve's client finds ``x-clipserve`` in it
(protobuf bodies work here)."""

from __future__ import annotations

from typing import Any

PROTOBUF = "application/x-protobuf"


def _post(summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"content": {"application/json": {}, PROTOBUF: {}}},
            "responses": {"200": {"description": "the request with embeddings filled in"}},
        }
    }


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.2",
    "info": {"title": "clipserve", "version": "1"},
    # tells clipserve's own client that protobuf bodies (application/x-protobuf) work here
    "x-clipserve": {"protobuf": True},
    "paths": {
        "/post": _post("Any endpoint, named by execEndpoint in the body (default /)"),
        "/encode": _post("Embed texts and images"),
        "/rank": _post("Rank each document's matches by CLIP score"),
        "/v1/embeddings": _post("OpenAI-compatible embeddings"),
        "/health": {"get": {"summary": "Health and model info: 503 while the model is stuck"}},
        "/readyz": {"get": {"summary": "Readiness: 503 while stuck, starting or draining"}},
        "/metrics": {"get": {"summary": "Prometheus metrics"}},
    },
}
