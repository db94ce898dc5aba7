"""numpy arrays <-> ``NdArrayProto`` (dense, ``cls_name="numpy"`` as clip-client expects)."""

from __future__ import annotations

import math
import re

import numpy as np

from clipserve.errors import InvalidInputError
from clipserve.wire.clipserve_wire_pb2 import NdArrayProto

# Only plain numeric dtypes travel; object/void/string dtypes are refused before parsing.
_ALLOWED_KINDS = frozenset("biuf")
MAX_TENSOR_BYTES = 256 * 1024 * 1024
MAX_EMPTY_SPREAD = 65536  # a zero-sized array may not have more "rows" than this
# "<f4", "|u1", "float32", "uint8", ...: what numpy's dtype.str and dtype names look like
_DTYPE_TEXT = re.compile(r"[<>|=]?[biuf]\d{1,2}|bool|(u?int|float)\d{1,3}")


def write_ndarray(array: np.ndarray, out: NdArrayProto) -> None:
    """Fill ``out`` with ``array`` as a dense numpy NdArray."""
    array = np.ascontiguousarray(array)
    out.dense.buffer = array.tobytes()
    del out.dense.shape[:]
    out.dense.shape.extend(array.shape)
    out.dense.dtype = array.dtype.str
    out.cls_name = "numpy"


class EmbeddingWriter:
    """``write_ndarray`` for many float32 vectors: the fields every vector of one shape
    shares are built once and copied, so each write only sets the buffer."""

    def __init__(self) -> None:
        self._templates: dict[tuple[int, ...], NdArrayProto] = {}

    def write(self, array: np.ndarray, out: NdArrayProto) -> None:
        """Fill ``out`` with ``array`` as float32, exactly as ``write_ndarray`` would."""
        if array.dtype != np.float32:
            array = array.astype(np.float32)
        if out.ByteSize():  # something is already there (kept by write_ndarray): rare
            write_ndarray(array, out)
            return
        template = self._templates.get(array.shape)
        if template is None:
            template = NdArrayProto()
            write_ndarray(np.empty(array.shape, np.float32), template)
            template.dense.buffer = b""
            self._templates[array.shape] = template
        out.CopyFrom(template)
        out.dense.buffer = array.tobytes()


def read_ndarray(proto: NdArrayProto, what: str = "tensor") -> np.ndarray | None:
    """A dense NdArrayProto -> array (None when unset). Raises ``InvalidInputError``."""
    kind = proto.WhichOneof("content")
    if kind is None:
        return None
    if kind == "sparse":
        raise InvalidInputError(f"sparse {what} is not supported; send a dense array")
    dense = proto.dense
    if not _DTYPE_TEXT.fullmatch(dense.dtype or "<f4"):  # np.dtype() parses far more
        raise InvalidInputError(
            f"{what} dtype {dense.dtype[:40]!r} is not numeric (expected e.g. '<f4', '|u1')"
        )
    try:
        dtype = np.dtype(dense.dtype or "<f4")
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} has an unknown dtype {dense.dtype!r}") from exc
    if dtype.kind not in _ALLOWED_KINDS:
        raise InvalidInputError(f"{what} dtype {dense.dtype!r} is not numeric")
    shape = tuple(int(s) for s in dense.shape)
    count = math.prod(shape)  # Python ints: a huge shape must not wrap around
    # zero-sized but absurd shapes ([2**28, 0]) cost nothing here but explode in tolist()
    spread = math.prod(max(size, 1) for size in shape)
    if count * dtype.itemsize > MAX_TENSOR_BYTES or (count == 0 and spread > MAX_EMPTY_SPREAD):
        raise InvalidInputError(f"{what} of shape {list(shape)} is too large")
    if count * dtype.itemsize != len(dense.buffer):
        raise InvalidInputError(
            f"{what} buffer holds {len(dense.buffer)} bytes, but shape {list(shape)} "
            f"of {dtype.str} needs {count * dtype.itemsize}"
        )
    try:  # e.g. a zero-sized shape with an absurd dimension: numpy refuses to make it
        return np.frombuffer(dense.buffer, dtype=dtype).reshape(shape)
    except ValueError as exc:
        raise InvalidInputError(f"{what} of shape {list(shape)} cannot be built ({exc})") from exc
