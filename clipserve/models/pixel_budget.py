"""A budget of decoded pixels held at once, across the threads that decode images.

A 12 MP photo is a few MB as a JPEG and 36 MB once decoded to RGB; what a server holds
while decoding is counted in pixels actually decoded (after any reduced-scale JPEG decode),
not in images. The engine opens a ``PixelBudget.held()`` scope around each image's
preprocessing on its worker thread; ``decode_image`` calls ``charge_decoded_pixels`` just
before it decodes, which waits until the pixels fit. Everything charged in a scope is given
back when it ends (the decoded image is gone by then: preprocessing returns the small model
input). An image larger than the whole budget decodes alone. Outside a scope (tests,
``encode_images`` in-process) decoding is not limited.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

_local = threading.local()


class PixelBudget:
    def __init__(self, limit: int, on_change: Callable[[int], None] | None = None) -> None:
        if limit < 1:
            raise ValueError("the pixel budget must be >= 1")
        self.limit = limit
        self.held_pixels = 0
        #: the most pixels held at once so far (for tests and benchmarks)
        self.peak = 0
        #: threads waiting for room now
        self.waiting = 0
        self._on_change = on_change
        self._condition = threading.Condition()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Decoding on this thread inside the block charges this budget."""
        previous = getattr(_local, "scope", None)
        scope = _Scope(self)
        _local.scope = scope
        try:
            yield
        finally:
            _local.scope = previous
            if scope.pixels:
                self._change(-scope.pixels)

    def _acquire(self, pixels: int, holding: bool) -> None:
        with self._condition:
            # a scope that already holds pixels is not made to wait for more (it could
            # wait for itself); one larger than the budget goes when nothing else is held
            while not holding and self.held_pixels and self.held_pixels + pixels > self.limit:
                self.waiting += 1
                try:
                    self._condition.wait()
                finally:
                    self.waiting -= 1
            self.held_pixels += pixels
            self.peak = max(self.peak, self.held_pixels)
            held = self.held_pixels
        if self._on_change is not None:
            self._on_change(held)

    def _change(self, pixels: int) -> None:
        with self._condition:
            self.held_pixels += pixels
            held = self.held_pixels
            self._condition.notify_all()
        if self._on_change is not None:
            self._on_change(held)


class _Scope:
    def __init__(self, budget: PixelBudget) -> None:
        self.budget = budget
        self.pixels = 0

    def charge(self, pixels: int) -> None:
        self.budget._acquire(pixels, holding=self.pixels > 0)
        self.pixels += pixels


def charge_decoded_pixels(pixels: int) -> None:
    """About to decode ``pixels``: wait for room in this thread's budget, if it has one."""
    scope = getattr(_local, "scope", None)
    if scope is not None and pixels > 0:
        scope.charge(pixels)
