"""What crosses the deployment handle between a front-end and a replica.

A call carries one chunk of a request's inputs, in order: a ``str`` is a sentence, ``bytes``
(an encoded image file) or a uint8 ``ndarray`` is an image. Images travel encoded and are
decoded on the replica, next to the model: a JPEG is ~10x smaller than its pixels.

The reply packs the outcomes: one float32 matrix of the embeddings that succeeded, and
``(index, error class name, reason)`` for the inputs that failed. Errors cross as names and
text, not pickled exceptions, and are rebuilt into the same ``clipserve.errors`` classes.

At start the front-end asks one replica what it serves (``model_info``) and reads it back
into a ``RemoteModel``: name, dimension, family, score rule and the rest the service shows
and ranks with.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipserve import errors
from clipserve.engine.items import ImageItem, Item, TextItem
from clipserve.errors import ClipServeError, InvalidInputError, ModelError
from clipserve.models.base import EmbeddingModel
from clipserve.models.scoring import ScoreRule

Value = str | bytes | np.ndarray
#: (embeddings of the inputs that succeeded, [(index, error class name, reason), ...])
Packed = tuple[np.ndarray | None, list[tuple[int, str, str]]]
_REBUILT = (
    errors.InputRefusedError,
    errors.InvalidInputError,
    errors.ModelUnavailableError,
    errors.ModelError,
    errors.OverloadedError,
    errors.ServerUnavailableError,
)
_ERROR_CLASSES: dict[str, type[ClipServeError]] = {cls.__name__: cls for cls in _REBUILT}


@dataclass(frozen=True)
class RemoteModel:
    """The served model as a replica describes it (``EncodingEngine.model``)."""

    name: str
    dim: int
    backend: str
    precision: str
    exact_preprocess: bool
    model_identity: str
    family: str
    languages: str
    score_rule: ScoreRule
    matryoshka_dims: tuple[int, ...]

    def identity(self) -> str:
        return self.model_identity

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> RemoteModel:
        return cls(
            info["name"], int(info["dim"]), info["backend"], info["precision"],
            bool(info["exact_preprocess"]), info["identity"], info["family"],
            info["languages"], ScoreRule.from_dict(info["score_rule"]),
            tuple(info["matryoshka_dims"]),
        )  # fmt: skip


def model_info(model: EmbeddingModel) -> dict[str, Any]:
    """The replica's side: what ``RemoteModel.from_info`` reads (plain values only)."""
    return {
        "name": model.name,
        "dim": model.dim,
        "backend": model.backend,
        "precision": model.precision,
        "exact_preprocess": model.exact_preprocess,
        "identity": model.identity(),
        "family": model.family,
        "languages": model.languages,
        "score_rule": model.score_rule.to_dict(),
        "matryoshka_dims": list(model.matryoshka_dims),
    }


def values_of(items: Iterable[Item]) -> list[Value]:
    """Engine items -> the plain values a call carries."""
    values: list[Value] = []
    for item in items:
        if isinstance(item, TextItem):
            values.append(item.text)
        elif isinstance(item, ImageItem):
            values.append(item.source)
        else:
            raise InvalidInputError(f"cannot encode {type(item).__name__}; use TextItem/ImageItem")
    return values


def items_of(values: Sequence[Value]) -> list[Item]:
    """The replica's side: values -> engine items."""
    return [TextItem(value) if isinstance(value, str) else ImageItem(value) for value in values]


def pack(outcomes: Sequence[Any]) -> Packed:
    rows = [outcome for outcome in outcomes if isinstance(outcome, np.ndarray)]
    failed = [
        (index, type(outcome).__name__, _reason(outcome))
        for index, outcome in enumerate(outcomes)
        if not isinstance(outcome, np.ndarray)
    ]
    return (np.stack(rows).astype(np.float32, copy=False) if rows else None), failed


def unpack(packed: Packed, count: int) -> list[Any]:
    """Packed outcomes -> one outcome per input (rows are views of one matrix)."""
    embeddings, failed = packed
    outcomes: list[Any] = [None] * count
    for index, name, reason in failed:
        outcomes[index] = _ERROR_CLASSES.get(name, ModelError)(reason)
    rows = iter(embeddings if embeddings is not None else ())
    for index, outcome in enumerate(outcomes):
        if outcome is None:
            outcomes[index] = row = next(rows, None)
            if row is None:
                break
    if next(rows, None) is not None or any(o is None for o in outcomes):
        raise ModelError(f"a replica answered {count} inputs with mismatched outcomes")
    return outcomes


def _reason(error: Any) -> str:
    if isinstance(error, InvalidInputError):
        return error.reason
    return str(error) or type(error).__name__
