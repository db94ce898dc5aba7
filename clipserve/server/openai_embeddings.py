"""OpenAI-compatible ``POST /v1/embeddings`` on top of :class:`EmbeddingService`'s public
surface (the ``Dispatcher`` runs and counts it like every other request).

Body: ``{"input": str | list[str], "model": str, "encoding_format": "float" | "base64",
"dimensions": int, "modality": "text" | "image"}`` (``modality`` as infinity has it;
images are data URIs or URLs, and URLs go through the server's URI policy). Other keys
(``user``...) are ignored. There are no partial results here: one bad input fails the
request, naming its index. ``dimensions`` is honoured only for sizes the model was trained
to be truncated to (``EmbeddingService.embedding_sizes``); any other size is refused rather
than silently ignored. ``usage`` counts whitespace-separated words of text inputs (the
service does not expose tokenizer counts). A float embedding is a float32 ``ndarray`` in
the returned dict (the HTTP route writes it as a JSON array); base64 is little-endian
float32, as OpenAI's.
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
        raise InvalidInputError(f"'model' must be a string, got {model!r}", param="model")
    try:
        service.check_model_name(model)
    except InvalidInputError as exc:
        raise InvalidInputError(exc.reason, param="model") from None
    encoding = body.get("encoding_format") or "float"
    if encoding not in ENCODING_FORMATS:
        raise InvalidInputError(
            f"'encoding_format' must be 'float' or 'base64', got {encoding!r}",
            param="encoding_format",
        )
    modality = body.get("modality") or "text"
    if modality not in MODALITIES:
        raise InvalidInputError(
            f"'modality' must be 'text' or 'image', got {modality!r}", param="modality"
        )
    size = _dimensions(service, body.get("dimensions"))
    limit = service.limits.max_docs_per_request
    if len(inputs) > limit:
        raise InvalidInputError(
            f"'input' has {len(inputs)} items, above the limit of {limit}", param="input"
        )

    if modality == "text":
        outcomes = await service.encode_texts(inputs)
    else:
        images = await asyncio.gather(*(_image(service, value) for value in inputs))
        outcomes = await service.encode_images(images)
    data = []
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, InvalidInputError):
            raise type(outcome)(f"input[{index}]: {outcome.reason}", param="input")
        if isinstance(outcome, ClipServeError):
            raise outcome
        vector = _truncated(np.asarray(outcome, dtype="<f4"), size)
        embedding: Any = (
            base64.b64encode(vector.tobytes()).decode("ascii") if encoding == "base64" else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(len(text.split()) for text in inputs) if modality == "text" else 0
    return {
        "object": "list",
        "data": data,
        "model": service.model_name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _dimensions(service: EmbeddingService, value: Any) -> int | None:
    """The size asked for: None for the model's own, else one it was trained to keep."""
    if value is None:
        return None
    sizes = service.embedding_sizes()
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(
            f"'dimensions' must be a positive integer, got {value!r}", param="dimensions"
        )
    if value == sizes[0]:
        return None
    if value not in sizes:
        if len(sizes) == 1:
            why = f"it was not trained for shorter embeddings (Matryoshka); it gives {sizes[0]}"
        else:
            why = f"it was trained for {', '.join(map(str, sizes))}"
        raise InvalidInputError(
            f"'dimensions': {value} is not available from model {service.model_name!r}: "
            f"{why}. Leave 'dimensions' out for the full embedding",
            param="dimensions",
        )
    return value


def _truncated(vector: np.ndarray, size: int | None) -> np.ndarray:
    """The first ``size`` components, renormalised to unit length (Matryoshka use)."""
    if size is None:
        return vector
    head = vector[:size]
    norm = float(np.linalg.norm(head))
    return (head / norm).astype("<f4") if norm > 0 else head


def _inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise InvalidInputError(
            "'input' must be a string or a non-empty list of strings", param="input"
        )
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidInputError(
                f"'input[{index}]' must be a string (token arrays are not supported), "
                f"got {type(item).__name__}",
                param="input",
            )
    return value


async def _image(service: EmbeddingService, value: str) -> ImageItem | ClipServeError:
    if is_data_uri(value) or value.partition("://")[0].lower() in ("http", "https"):
        return await service.resolve_uri(value)
    return InvalidInputError("image inputs must be data URIs (data:image/...;base64,...) or URLs")
