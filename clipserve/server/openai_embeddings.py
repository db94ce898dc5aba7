"""OpenAI-compatible ``POST /v1/embeddings`` on top of :class:`EmbeddingService`'s public
surface (the ``Dispatcher`` runs and counts it like every other request).

Body: ``{"input": str | list[str], "model": str, "encoding_format": "float" | "base64",
"modality": "text" | "image"}`` (``modality`` as infinity has it; images are data URIs or
URLs, and URLs go through the server's URI policy). Other keys (``user``...) are ignored.
There are no partial results here: one bad input fails the request, naming its index.
``usage`` counts whitespace-separated words of text inputs (the service does not expose
tokenizer counts).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np

from clipserve.engine import ImageItem
from clipserve.errors import ClipServeError, InvalidInputError
from clipserve.server.service import EmbeddingService
from clipserve.wire.data_uri import is_data_uri

ENCODING_FORMATS = ("float", "base64")
MODALITIES = ("text", "image")


async def embed(service: EmbeddingService, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInputError(f"the body must be a JSON object, got {type(body).__name__}")
    inputs = _inputs(body.get("input"))
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidInputError(f"'model' must be a string, got {model!r}")
    service.check_model_name(model)
    encoding = body.get("encoding_format") or "float"
    if encoding not in ENCODING_FORMATS:
        raise InvalidInputError(f"'encoding_format' must be 'float' or 'base64', got {encoding!r}")
    modality = body.get("modality") or "text"
    if modality not in MODALITIES:
        raise InvalidInputError(f"'modality' must be 'text' or 'image', got {modality!r}")
    limit = service.limits.max_docs_per_request
    if len(inputs) > limit:
        raise InvalidInputError(f"'input' has {len(inputs)} items, above the limit of {limit}")

    if modality == "text":
        outcomes = await service.encode_texts(inputs)
    else:
        images = await asyncio.gather(*(_image(service, value) for value in inputs))
        outcomes = await service.encode_images(images)
    data = []
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, InvalidInputError):
            raise type(outcome)(f"input[{index}]: {outcome.reason}")
        if isinstance(outcome, ClipServeError):
            raise outcome
        vector = np.asarray(outcome, dtype="<f4")
        embedding: Any = (
            base64.b64encode(vector.tobytes()).decode("ascii")
            if encoding == "base64"
            else vector.astype(float).tolist()
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(len(text.split()) for text in inputs) if modality == "text" else 0
    return {
        "object": "list",
        "data": data,
        "model": service.model_name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise InvalidInputError("'input' must be a string or a non-empty list of strings")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidInputError(
                f"'input[{index}]' must be a string (token arrays are not supported), "
                f"got {type(item).__name__}"
            )
    return value


async def _image(service: EmbeddingService, value: str) -> ImageItem | ClipServeError:
    if is_data_uri(value) or value.partition("://")[0].lower() in ("http", "https"):
        return await service.resolve_uri(value)
    return InvalidInputError("image inputs must be data URIs (data:image/...;base64,...) or URLs")
