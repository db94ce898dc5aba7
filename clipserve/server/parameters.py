"""The request parameters the server acts on, read as CLIP-as-service's server read them.

- ``drop_image_content`` (bool): clear ``blob``/``tensor`` of the image documents that
  were embedded (their ``uri`` stays).
- ``model_name`` (str): must name the served model (any case), like ``/encode/<model>``.
- ``access_paths`` (str, DocArray selector, default ``@r``): which documents of each
  request's tree to embed (``clipserve.wire.access_paths``). ``traversal_paths`` is its
  deprecated name; both may be sent only if they agree. ``/rank`` keeps its own traversal
  (the queries and their matches), so there a selector other than ``@r`` is refused.

Like Jina's runtime, a parameter may be aimed at the encoder by its name in the original
flows (``clip_t``, ``clip_o``, ``clip_r``): ``clip_t__access_paths`` or
``{"clip_t": {"access_paths": ...}}`` override the plain key. Other keys, including every
``__...`` key such as profile's ``__results__`` and keys aimed at other executors, are
ignored, as Jina executors ignore parameters they do not read; a known key with the wrong
type is refused. Only the keys read here are converted from protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from clipserve.errors import InvalidInputError
from clipserve.wire import DataRequestProto
from clipserve.wire.access_paths import ROOTS, AccessPaths, parse_access_paths

TYPES: dict[str, type] = {
    "drop_image_content": bool,
    "model_name": str,
    "access_paths": str,
    "traversal_paths": str,
}
#: what CLIP-as-service's flow files named the encoder (torch, onnx, tensorrt)
EXECUTOR_NAMES = ("clip_t", "clip_o", "clip_r")
_PATH_KEYS = ("access_paths", "traversal_paths")


@dataclass(frozen=True)
class RequestOptions:
    drop_image_content: bool = False
    model_name: str | None = None
    access_paths: AccessPaths = ROOTS


DEFAULT_OPTIONS = RequestOptions()


def read_options(request: DataRequestProto, endpoint: str) -> RequestOptions:
    """The options ``request`` asks for at ``endpoint``; ``InvalidInputError`` for a known
    parameter with a wrong type, a malformed selector, or a selector ``endpoint`` refuses."""
    if not request.HasField("parameters"):
        return DEFAULT_OPTIONS
    parameters = _known_parameters(request)
    if not parameters:
        return DEFAULT_OPTIONS
    for key, value in parameters.items():
        expected = TYPES[key]
        if not isinstance(value, expected):
            raise InvalidInputError(
                f"parameter {key!r} must be a {expected.__name__}, got {value!r}"
            )
    return RequestOptions(
        drop_image_content=parameters.get("drop_image_content", False),
        model_name=parameters.get("model_name"),
        access_paths=_access_paths(parameters, endpoint),
    )


def _known_parameters(request: DataRequestProto) -> dict[str, Any]:
    """The keys in ``TYPES``, with Jina's executor-targeted forms applied on top."""
    fields = request.parameters.fields
    plain: dict[str, Any] = {}
    aimed: dict[str, Any] = {}  # executor__key
    grouped: dict[str, Any] = {}  # {executor: {key: value}}
    for key in fields:
        if key in TYPES:
            plain[key] = json_format.MessageToDict(fields[key])
        elif key in EXECUTOR_NAMES:
            nested = json_format.MessageToDict(fields[key])
            if isinstance(nested, dict):
                grouped.update({k: v for k, v in nested.items() if k in TYPES})
        elif "__" in key and not key.startswith("__") and not key.endswith("__"):
            executor, _, name = key.rpartition("__")
            if executor in EXECUTOR_NAMES and name in TYPES:
                aimed[name] = json_format.MessageToDict(fields[key])
    return {**plain, **aimed, **grouped}  # Jina's precedence, weakest first


def _access_paths(parameters: dict[str, Any], endpoint: str) -> AccessPaths:
    given = {key: parameters[key] for key in _PATH_KEYS if key in parameters}
    if not given:
        return ROOTS
    parsed = {key: parse_access_paths(text, key) for key, text in given.items()}
    if len(parsed) == 2 and parsed["access_paths"].paths != parsed["traversal_paths"].paths:
        raise InvalidInputError(
            f"parameters access_paths={given['access_paths']!r} and "
            f"traversal_paths={given['traversal_paths']!r} disagree; traversal_paths is "
            "the deprecated name of access_paths: send one of them"
        )
    key, paths = next(iter(parsed.items()))
    if endpoint == "/rank" and not paths.is_all_roots:
        raise InvalidInputError(
            f"parameter {key}={paths.text!r} does not apply to /rank, which always embeds "
            "the queries and their matches; leave it out"
        )
    return paths
