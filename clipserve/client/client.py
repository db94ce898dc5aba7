"""``Client``: the public face. Every method exists twice, ``encode``/``aencode``,
``rank``/``arank``, ``profile``/``aprofile``: the async one is real asyncio; the sync one
runs it on the client's private background loop (see ``sync.py``). Every request is built
by ``core.next_batch``; encode and rank share one call path (``_call``)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict

from clipserve.client.retry import RetryPolicy
from clipserve.client.shrink import check_max_side
from clipserve.client.sync import LoopThread
from clipserve.client.transports import Transport, TransportOptions, make_transport
from clipserve.client.urls import parse_server
from clipserve.errors import ClientTimeoutError, RemoteError

if TYPE_CHECKING:  # numpy, protobuf and the pipeline load on the first call, not on import
    from typing_extensions import Unpack

    from clipserve.client.core import Job
    from clipserve.client.pipeline import Callback
    from clipserve.wire.clipserve_wire_pb2 import DataRequestProto

#: documents per request; large enough that per-request overhead is not the bottleneck
DEFAULT_BATCH_SIZE = 128
#: requests built-but-unanswered at once (bounds memory: prefetch x batch_size inputs)
DEFAULT_PREFETCH = 8
#: what profile() sends, as clip-client does: parameters that ask for timing results
PROFILE_PARAMETERS = {"__results__": {}}


#: clients not closed yet: closed at interpreter exit, while the background loop's daemon
#: thread still runs (a gRPC channel left to its finalizer after that blocks the exit)
_OPEN_CLIENTS: weakref.WeakSet[Client] = weakref.WeakSet()


@atexit.register
def _close_open_clients() -> None:
    for client in list(_OPEN_CLIENTS):
        with contextlib.suppress(Exception):  # best effort: the process is ending anyway
            client.close()


class CallOptions(TypedDict, total=False):
    """The keyword arguments of ``encode``/``aencode`` and ``rank``/``arank`` (described in
    ``CALL_OPTIONS_DOC``, which their docstrings include)."""

    batch_size: int | None
    show_progress: bool
    parameters: Mapping[str, Any] | None
    on_done: Callback | None
    on_error: Callback | None
    on_always: Callback | None
    prefetch: int | None
    access_paths: str | None


_OPTION_NAMES = frozenset(CallOptions.__annotations__)
CALLBACKS = ("on_done", "on_error", "on_always")
CALL_OPTIONS_DOC = """
        Keyword arguments:
            batch_size: documents per request (default: the client's ``batch_size``).
            show_progress: draw a progress bar while the call runs.
            parameters: sent with every request, e.g. ``{"model_name": "builtin"}`` or
                ``{"drop_image_content": False}`` (default: drop image bytes in replies).
            on_done, on_error, on_always: callbacks, called with each reply as a
                ``Response`` (``.embeddings``, ``.docs``, ``.failures``): on_done for a
                reply without failures, on_error for one with, on_always for both. With
                any of them the call returns None instead of collecting results.
            prefetch: requests in flight at once (default: the client's ``prefetch``).
            access_paths: which Documents of each input's tree to embed (a DocArray
                selector: ``"@c"``, ``"@r,c"``, ``"@c[:2]"``...); default: the input
                Documents themselves.

        Raises ``InvalidInputError`` for input that cannot be sent (naming it),
        ``PartialFailureError`` when some documents failed (``.results`` holds the rest,
        NaN rows for the failed ones; ``.failures`` maps id -> reason) and ``RemoteError``
        when all did (unless ``on_error`` is given); ``ServerUnavailableError``,
        ``AuthenticationError``, ``OverloadedError`` and ``ClientTimeoutError`` for what
        their names say."""


def _with_call_options(method: Any) -> Any:
    method.__doc__ = (method.__doc__ or "").rstrip() + "\n" + CALL_OPTIONS_DOC
    return method


def credential_token(credential: Mapping[str, Any] | str | None) -> str | None:
    """``{'Authorization': token}`` (clip-client's form) or a plain token string."""
    if credential is None:
        return None
    if isinstance(credential, str):
        return credential or None
    if isinstance(credential, Mapping):
        for key, value in credential.items():
            if str(key).lower() == "authorization":
                return str(value) if value else None
        if not credential:
            return None
        raise ValueError("credential must be a token string or {'Authorization': token}")
    raise TypeError(f"credential must be a str or dict, got {type(credential).__name__}")


class Client:
    """A CLIP-as-service client over gRPC, HTTP or WebSocket (and their TLS forms).

    ``Client("grpc://127.0.0.1:51000")``; see the Client section of README.md for every option."""

    def __init__(
        self,
        server: str,
        credential: Mapping[str, Any] | str | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        prefetch: int = DEFAULT_PREFETCH,
        timeout: float | None = 300.0,
        connect_timeout: float = 5.0,
        retries: int = 0,
        retry_backoff: float = 0.5,
        verify: bool | str = True,
        fetch_timeout: float = 30.0,
        http_format: str = "auto",
        image_max_side: int | None = None,
    ) -> None:
        self.address = parse_server(server)
        self.server = server
        if isinstance(verify, str) and not os.path.isfile(verify):
            raise ValueError(f"verify={verify!r}: no such CA certificate file")
        if not isinstance(prefetch, int) or isinstance(prefetch, bool) or prefetch < 1:
            raise ValueError(f"prefetch must be a positive integer, got {prefetch!r}")
        if http_format not in ("auto", "json", "protobuf"):
            raise ValueError(f"http_format must be auto, json or protobuf, not {http_format!r}")
        if timeout is not None and timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeout and connect_timeout must be positive (timeout may be None)")
        #: images whose longer side exceeds this are shrunk before sending (None: never)
        self.image_max_side = check_max_side(image_max_side)
        self.batch_size = batch_size
        self.prefetch = prefetch
        self.timeout = timeout
        self.fetch_timeout = fetch_timeout
        self.retry = RetryPolicy(retries, retry_backoff)
        self._options = TransportOptions(
            address=self.address,
            token=credential_token(credential),
            connect_timeout=connect_timeout,
            verify=verify,
            prefetch=prefetch,
            http_format=http_format,
            request_timeout=timeout,
        )
        self._transports: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Transport] = (
            weakref.WeakKeyDictionary()
        )
        self._loop_thread = LoopThread()
        self._closed = False
        _OPEN_CLIENTS.add(self)

    def __repr__(self) -> str:
        return f"Client({self.server!r})"

    # -- encode -----------------------------------------------------------------------
    @_with_call_options
    def encode(self, content: Iterable[Any], **options: Unpack[CallOptions]) -> Any:
        """Embed ``content``, streaming it to the server in batches; blocks until done.

        ``content`` is an iterable (list, generator...) of either

        - ``str``: each one is a sentence, or an image when it looks like a URI (a local
          path, ``file://``, ``http(s)://`` or ``data:`` URI; see ``classify_string``).
          The result is a float32 ``ndarray [N, D]``, one row per input, in input order.
        - docarray ``Document`` (``pip install 'clipserve[docarray]'``) with ``.text``,
          ``.uri``, ``.blob`` or ``.tensor`` ([H, W, C]) set. The result is a
          ``DocumentArray`` of the same Documents with ``.embedding`` set.

        ``aencode`` is the same call for asyncio code.
        """
        self._check_open()
        return self._loop_thread.run(self.aencode(content, **options))

    @_with_call_options
    async def aencode(self, content: Iterable[Any], **options: Unpack[CallOptions]) -> Any:
        """``encode`` for asyncio: the same input, options and result, awaited on the
        running event loop (each loop gets its own connection). Worth it when other async
        work should overlap the call, e.g. ``await asyncio.gather(client.aencode(a),
        write_to_db())``; from plain scripts and notebooks ``encode`` is simpler.
        """
        return await self._call("/encode", content, options)

    # -- rank -------------------------------------------------------------------------
    @_with_call_options
    def rank(self, docs: Iterable[Any], **options: Unpack[CallOptions]) -> Any:
        """Re-rank each query Document's ``.matches`` by how well they fit the query.

        Each query (a text or an image Document) holds its candidates in ``.matches``
        (texts for an image, images for a text). The result is a ``DocumentArray`` of
        the same queries, each with ``.embedding`` set and its matches sorted best first,
        scored by ``scores['clip_score']`` (softmax over the query's matches) and
        ``scores['clip_score_cosine']``. Needs ``clipserve[docarray]``; ``arank`` is the
        asyncio form.
        """
        self._check_open()
        return self._loop_thread.run(self.arank(docs, **options))

    @_with_call_options
    async def arank(self, docs: Iterable[Any], **options: Unpack[CallOptions]) -> Any:
        """``rank`` for asyncio: the same input, options and result."""
        return await self._call("/rank", docs, options)

    # -- profile ----------------------------------------------------------------------
    def profile(self, content: str = "") -> dict[str, float]:
        """Send one document (``content``: a sentence or an image URI; default: an empty
        text), print where its time went as a tree and return the same figures in ms:
        ``Roundtrip``, ``Client-server network`` (roundtrip minus server), ``Server`` and
        ``CLIP model`` (the engine call, batching included)."""
        self._check_open()
        return self._loop_thread.run(self.aprofile(content))

    async def aprofile(self, content: str = "") -> dict[str, float]:
        """``profile`` for asyncio."""
        self._check_open()
        if not isinstance(content, str):
            raise TypeError(f"profile() takes a string, got {type(content).__name__}")
        from clipserve.client import profile as profiling  # rich, only when asked for
        from clipserve.client.core import next_batch, plan_job
        from clipserve.client.errors_map import from_error_name
        from clipserve.client.fetch import ImageFetcher
        from clipserve.wire.messages import is_error

        job = plan_job([content], "/", PROFILE_PARAMETERS, 1, collect=True)
        batch = await asyncio.to_thread(next_batch, job, 0, 0)
        assert batch is not None, "one input makes one batch"
        fetcher = ImageFetcher(self.fetch_timeout)
        try:
            await fetcher.fill(batch.pending)
        finally:
            await fetcher.aclose()
        started = time.perf_counter()
        try:
            reply = await asyncio.wait_for(self._roundtrip(batch.request), self.timeout)
        except (TimeoutError, asyncio.TimeoutError) as exc:
            raise ClientTimeoutError(
                f"{self.server}: no reply to profile() within {self.timeout:g}s"
            ) from exc
        roundtrip = (time.perf_counter() - started) * 1000.0
        if reply is not None and is_error(reply):
            status = reply.header.status
            kind = from_error_name(status.exception.name) or RemoteError
            raise kind(f"{self.server}: {status.description or 'profile request refused'}")
        if reply is None or not reply.routes:
            raise RemoteError(f"{self.server}: the server sent no timing routes to profile")
        summary = profiling.summarize(reply, roundtrip)
        profiling.render(summary)
        return summary

    # -- lifecycle --------------------------------------------------------------------
    def close(self) -> None:
        """Close connections and stop the background loop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        _OPEN_CLIENTS.discard(self)
        self._loop_thread.close(self._close_loop_transport())

    async def aclose(self) -> None:
        """Close this event loop's connections (and the background loop's)."""
        await self._close_loop_transport()
        self.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- internals --------------------------------------------------------------------
    async def _call(self, name: str, content: Any, options: CallOptions) -> Any:
        """The one call path of encode and rank: check the options, plan the job, stream it."""
        from clipserve.client.core import Results, endpoint_for, plan_job
        from clipserve.client.pipeline import Pipeline

        self._check_open()
        unknown = sorted(set(options) - _OPTION_NAMES)
        if unknown:
            raise TypeError(
                f"{name.strip('/')}() got unexpected keyword argument(s) {', '.join(unknown)}; "
                f"it takes {', '.join(sorted(_OPTION_NAMES))}"
            )
        on_done, on_error, on_always = (options.get(k) for k in CALLBACKS)
        parameters = options.get("parameters")
        batch_size = options.get("batch_size")
        collect = not (on_done or on_error or on_always)
        size = self.batch_size if batch_size is None else batch_size
        endpoint = endpoint_for(name, parameters)
        access_paths = options.get("access_paths")
        job = plan_job(content, endpoint, parameters, size, collect, access_paths)
        if name == "/rank":
            _check_rank_input(job, content)
        if job.kind is None or job.total == 0:  # nothing to send
            return Results(job.kind, job.endpoint, job.collect, job.selector).finish()
        reporter = None
        if options.get("show_progress", False):
            from clipserve.client.progress import ProgressReporter  # rich, only when asked for

            reporter = ProgressReporter(job.endpoint, job.total)
        prefetch = options.get("prefetch")
        pipeline = Pipeline(
            job,
            self._transport(),
            prefetch=self.prefetch if prefetch is None else prefetch,
            timeout=self.timeout,
            retry=self.retry,
            fetch_timeout=self.fetch_timeout,
            image_max_side=self.image_max_side,
            progress=reporter,
            on_done=on_done,
            on_error=on_error,
            on_always=on_always,
        )
        if reporter is not None:
            reporter.start()
        try:
            return await pipeline.run()
        finally:
            if reporter is not None:
                reporter.stop()

    async def _roundtrip(self, request: DataRequestProto) -> DataRequestProto | None:
        """Send one request on its own stream; the first reply, if any."""
        from clipserve.client.core import set_request_timeout

        set_request_timeout(request, self.timeout)
        async with contextlib.aclosing(self._transport().stream(_once(request))) as replies:
            return await anext(replies, None)

    def _transport(self) -> Transport:
        loop = asyncio.get_running_loop()
        transport = self._transports.get(loop)
        if transport is None:
            transport = make_transport(self._options)
            self._transports[loop] = transport
        return transport

    async def _close_loop_transport(self) -> None:
        transport = self._transports.pop(asyncio.get_running_loop(), None)
        if transport is not None:
            await transport.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")


async def _once(request: DataRequestProto) -> Any:
    yield request


def _check_rank_input(job: Job, docs: Any) -> None:
    if job.kind == "strings":
        raise TypeError("rank() takes Documents whose .matches hold the candidates")
    if job.total is not None:
        list(_require_matches(docs))  # sized input: check everything before sending
    job.items = _require_matches(job.items)


def _require_matches(items: Any) -> Any:
    for position, doc in enumerate(items):
        if not doc.matches:
            raise ValueError(f"input #{position} (Document {doc.id!r}) has no .matches to rank")
        yield doc
