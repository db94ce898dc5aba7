"""One inference thread per replica: runs forward passes one at a time, says when one is
running (so a watchdog can tell a stuck pass), and says when the thread has died.

A daemon thread (a stuck pass must not keep the process from exiting); it dies only if
something beyond ``Exception`` escapes the model (``SystemExit`` from a library, an
asynchronous exception). The pass that killed it is answered with ``ModelError`` and
``on_death`` is called on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from clipserve.errors import ModelError

_STOP = object()


def settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """Give ``future`` its result or error, unless it is done already (cancelled)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class InferenceThread:
    def __init__(self, name: str, on_death: Callable[[InferenceThread, BaseException], None]):
        self.name = name
        self._on_death = on_death
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        #: ``time.monotonic()`` when the running pass started; None when idle
        self.busy_since: float | None = None
        #: what killed the thread, once it has died
        self.death: BaseException | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.death is None

    def run(self, function: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """``function(*args)`` on this thread; the future holds its result or error."""
        assert self._loop is not None, "start() the thread first"
        future = self._loop.create_future()
        if not self.alive:
            future.set_exception(ModelError(f"the inference thread {self.name} is dead"))
            return future
        self._jobs.put((future, function, args))
        return future

    def stop(self) -> None:
        """Let the thread end after its current pass (it is never joined)."""
        self._jobs.put(_STOP)

    def _work(self) -> None:
        job: Any = None
        try:
            while (job := self._jobs.get()) is not _STOP:
                future, function, args = job
                self.busy_since = time.monotonic()
                try:
                    result = function(*args)
                except Exception as exc:
                    self._settle(future, None, exc)
                else:
                    self._settle(future, result, None)
                finally:
                    self.busy_since = None
                job = None
        except BaseException as exc:  # the thread dies: report it, then answer the pass
            self.death = exc
            self.busy_since = None
            self._call_soon(self._report_death, None if job is None else job[0], exc)

    def _report_death(self, future: asyncio.Future[Any] | None, exc: BaseException) -> None:
        """On the loop, in one callback: the death first (so the calls waiting, this pass's
        included, fail as unhealthy), then the pass's own future (its calls answered by then).
        """
        self._on_death(self, exc)
        if future is not None:
            error = ModelError(f"the inference thread {self.name} died: {exc!r}")
            settle(future, None, error)

    def _settle(self, future: asyncio.Future[Any], result: Any, error: Exception | None) -> None:
        self._call_soon(settle, future, result, error)

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(callback, *args)
