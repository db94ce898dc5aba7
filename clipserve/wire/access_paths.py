"""Access paths: which documents of a request's tree to embed (DocArray 0.21's grammar).

A selector such as ``@c``, ``@r,c`` or ``@cm[:2]`` is one or more comma-separated paths.
A path is a run of steps, each a letter with an optional window:

- ``r`` the documents at hand (at the start: the request's documents), ``c`` the chunks of
  each, ``m`` the matches of each;
- a window, ``[2]``, ``[1:3]``, ``[::2]``, ``[-1]`` (the brackets may be left out:
  ``@r1``, ``@c:2``), picks among one parent's documents, as Python slices do. A lone
  index ``i`` means ``[i:i+1]``: an index past the end selects nothing.

Whitespace is ignored, the leading ``@`` is optional. Facts taken from DocArray 0.21 (its
``traverse`` and ``DocumentArray['@...']``), with one deliberate difference: DocArray turns
``[-1]`` into ``[-1:0]``, which selects nothing; here it is the last document. DocArray's
multi-modal attribute steps (``.[name]``) are refused: CLIP-as-service documents never
carried that schema.

Selecting is pure: ``select`` walks ``DocumentProto`` trees and returns the documents with
their places (``#0.chunks[1]``) for error messages; a document reached by two paths is
selected once. It refuses (``InputRefusedError``) as soon as too many documents are
selected or looked at, so a huge tree costs no more than the limits allow.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from clipserve.errors import InputRefusedError, InvalidInputError
from clipserve.wire.clipserve_wire_pb2 import DocumentProto

Field = Literal["r", "c", "m"]
#: longest selector accepted (DocArray has no limit; no sensible selector comes close)
MAX_SELECTOR_CHARS = 256
_FIELDS: dict[str, Field] = {"r": "r", "c": "c", "m": "m"}
_NESTED_NAMES = {"c": "chunks", "m": "matches"}
_WINDOW_CHARS = frozenset("-0123456789:")
_INTEGER = re.compile(r"-?[0-9]+")


@dataclass(frozen=True, slots=True)
class Step:
    field: Field
    window: slice | None = None  # None: all of them


@dataclass(frozen=True, slots=True)
class AccessPaths:
    """A parsed selector: ``text`` as sent, ``paths`` its comma-separated paths."""

    text: str
    paths: tuple[tuple[Step, ...], ...]

    @property
    def is_all_roots(self) -> bool:
        """Selects exactly the request's documents, in order (the default ``@r``)."""
        return self is ROOTS or self.paths == ROOTS.paths

    @property
    def reaches_nested(self) -> bool:
        """Some path goes below the request's documents (a ``c`` or ``m`` step)."""
        return any(step.field != "r" for path in self.paths for step in path)


ROOTS = AccessPaths("@r", ((Step("r"),),))


_Fail = Callable[[str], InvalidInputError]  # why -> the error naming parameter and selector


def parse_access_paths(text: str, name: str = "access_paths") -> AccessPaths:
    """``'@r,c[:2]'`` -> ``AccessPaths``; raises ``InvalidInputError`` naming the parameter
    ``name``, the selector and what is wrong with it (a plain one: the error's class name
    travels on the wire, and clients know the tree's names)."""

    def fail(why: str) -> InvalidInputError:
        return InvalidInputError(
            f"parameter {name}={text!r} is not a valid access path: {why}. Use r (the "
            "documents), c (chunks), m (matches), nested ('@cc'), windows ('@c[:2]', "
            "'@r[1]') and commas ('@r,c')"
        )

    if len(text) > MAX_SELECTOR_CHARS:
        raise InvalidInputError(
            f"parameter {name} is {len(text)} characters long, above {MAX_SELECTOR_CHARS}"
        )
    compact = "".join(text.split())
    if compact.startswith("@"):
        compact = compact[1:]
    if not compact:
        raise fail("it is empty")
    paths = []
    for number, part in enumerate(compact.split(","), start=1):
        if not part:
            raise fail(f"path {number} is empty")
        paths.append(_parse_path(part, fail))
    return AccessPaths(text, tuple(paths))


def _parse_path(part: str, fail: _Fail) -> tuple[Step, ...]:
    steps: list[Step] = []
    position = 0
    while position < len(part):
        letter = part[position]
        if letter == ".":
            raise fail("attribute steps ('.[name]') are not supported")
        if letter not in _FIELDS:
            raise fail(f"{letter!r} is not a step")
        position += 1
        end = position
        if end < len(part) and part[end] == "[":
            close = part.find("]", end)
            if close < 0:
                raise fail(f"'[' after {letter!r} is never closed")
            window_text, position = part[end + 1 : close], close + 1
            if not window_text:
                raise fail(f"empty window '[]' after {letter!r}")
        else:
            while end < len(part) and part[end] in _WINDOW_CHARS:
                end += 1
            window_text, position = part[position:end], end
        window = _parse_window(window_text, letter, fail) if window_text else None
        steps.append(Step(_FIELDS[letter], window))
    return tuple(steps)


def _parse_window(text: str, letter: str, fail: _Fail) -> slice:
    parts = text.split(":")
    if len(parts) > 3:
        raise fail(f"window {text!r} after {letter!r} has more than three parts")
    numbers: list[int | None] = []
    for piece in parts:
        if piece and not _INTEGER.fullmatch(piece):
            raise fail(f"window {text!r} after {letter!r} is not integers separated by ':'")
        numbers.append(int(piece) if piece else None)
    if len(numbers) == 1:
        index = numbers[0]
        assert index is not None  # a lone empty part was refused as an empty window
        return slice(index, index + 1 if index != -1 else None)
    if len(numbers) == 3 and numbers[2] == 0:
        raise fail(f"window {text!r} after {letter!r} has a step of 0")
    return slice(*numbers)


@dataclass(frozen=True, slots=True)
class Selection:
    """The selected documents and where each sits (``#2``, ``#0.chunks[1].matches[0]``);
    ``places`` is None when the documents are the request's own, in order."""

    docs: Sequence[DocumentProto]
    places: Sequence[str] | None = None

    def where(self, index: int) -> str:
        return self.places[index] if self.places is not None else f"#{index}"


def select(
    roots: Sequence[DocumentProto],
    paths: AccessPaths,
    *,
    keep: Callable[[DocumentProto], bool] | None = None,
    max_selected: int | None = None,
    max_visits: int | None = None,
) -> Selection:
    """The documents ``paths`` reaches from ``roots``, path by path, each parent's
    documents in order, those ``keep`` refuses left out. ``@r`` without ``keep`` is
    ``roots`` itself. Raises ``InputRefusedError`` as soon as more than ``max_selected``
    documents are selected, or more than ``max_visits`` looked at (on the way down, every
    path counted: a huge tree is refused before it is walked many times over)."""
    if paths.is_all_roots and keep is None:
        if max_selected is not None and len(roots) > max_selected:
            raise _too_many(paths, max_selected)
        return Selection(roots)
    docs: list[DocumentProto] = []
    places: list[str] = []
    seen: set[str] | None = set() if len(paths.paths) > 1 else None
    budget = _Budget(paths, max_visits)
    for path in paths.paths:
        for place, doc in _walk(None, "", roots, range(len(roots)), path, budget):
            if keep is not None and not keep(doc):
                continue
            if seen is not None:
                if place in seen:
                    continue
                seen.add(place)
            docs.append(doc)
            places.append(place)
            if max_selected is not None and len(docs) > max_selected:
                raise _too_many(paths, max_selected)
    return Selection(docs, places)


def _too_many(paths: AccessPaths, limit: int) -> InputRefusedError:
    return InputRefusedError(
        f"access_paths {paths.text!r} selects more than {limit} documents, above the "
        f"limit of {limit} per request; send smaller batches"
    )


class _Budget:
    """How many more documents a walk may look at."""

    def __init__(self, paths: AccessPaths, limit: int | None) -> None:
        self.paths, self.limit, self.left = paths, limit, limit

    def spend(self, count: int) -> None:
        if self.left is None:
            return
        self.left -= count
        if self.left < 0:
            raise InputRefusedError(
                f"access_paths {self.paths.text!r} walks more than {self.limit} documents "
                "of this request's tree; send smaller requests or a narrower selector"
            )


def _walk(
    parent: str | None,
    name: str,
    docs: Sequence[DocumentProto],
    indices: range,
    steps: tuple[Step, ...],
    budget: _Budget,
) -> Iterator[tuple[str, DocumentProto]]:
    """(place, document) for every document ``steps`` reaches from ``docs[i] for i in
    indices`` (siblings under ``parent``). A window picks among one parent's documents, as
    in DocArray; nothing is listed before it is needed, so ``select`` can stop early."""
    if not steps:
        for i in indices:  # one by one: the caller may stop at its limit first
            budget.spend(1)
            yield _place(parent, name, i), docs[i]
        return
    step, rest = steps[0], steps[1:]
    if step.field == "r":
        window = indices if step.window is None else indices[step.window]
        yield from _walk(parent, name, docs, window, rest, budget)
        return
    nested = _NESTED_NAMES[step.field]
    budget.spend(len(indices))
    for i in indices:
        children = getattr(docs[i], nested)
        if children:
            window = range(len(children))
            if step.window is not None:
                window = window[step.window]
            yield from _walk(_place(parent, name, i), nested, children, window, rest, budget)


def _place(parent: str | None, name: str, index: int) -> str:
    return f"#{index}" if parent is None else f"{parent}.{name}[{index}]"
