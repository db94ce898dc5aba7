"""HTTP: one POST per request, up to ``prefetch`` of them at once over one
``httpx.AsyncClient``. The target path is chosen as clip-client does (after reading
``/openapi.json``: the endpoint itself if listed, else ``/default``, else ``/post``) and the
body is jina's JSON. A clipserve server announces itself (``x-clipserve`` in its OpenAPI
document); then requests and replies travel as protobuf (``application/x-protobuf``).

Each POST carries the client's ``timeout`` as ``X-Request-Timeout`` (the server drops the
request once it has passed). A 429 from a tenant's rate limit refuses one request only: it
becomes that request's ERROR reply (with its retry-after), as on the streaming protocols,
so the pipeline resends it alone instead of abandoning the others."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from clipserve.client.errors_map import from_http
from clipserve.client.jsonreply import reply_from_json, request_to_json_body
from clipserve.client.transports.base import Transport, TransportOptions, os_reason
from clipserve.errors import ClientTimeoutError, RemoteError, ServerUnavailableError
from clipserve.wire.clipserve_wire_pb2 import DataRequestProto
from clipserve.wire.messages import endpoint_of, set_error, set_retry_after

PROTOBUF = "application/x-protobuf"
CLIPSERVE_MARKER = "x-clipserve"
TIMEOUT_HEADER = "X-Request-Timeout"


class _Pool:
    """One ``httpx.AsyncClient`` (a connection pool) and how many streams use it."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.users = 0
        self.retired = False


class HttpTransport(Transport):
    def __init__(self, options: TransportOptions) -> None:
        super().__init__(options)
        self._pool: _Pool | None = None  # the pool new streams use
        self._open_pools: set[_Pool] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._post_paths: set[str] | None = None
        self.protobuf = False  # True once the server is known to be clipserve

    def _new_client(self) -> httpx.AsyncClient:
        options = self.options
        headers = {"Authorization": options.token} if options.token else {}
        if options.request_timeout is not None:
            headers[TIMEOUT_HEADER] = f"{options.request_timeout:g}"
        limit = max(1, options.prefetch)
        return httpx.AsyncClient(
            base_url=options.address.http_base,
            headers=headers,
            timeout=httpx.Timeout(None, connect=options.connect_timeout),
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            verify=options.ssl_context() or True,
            trust_env=False,
        )

    def _acquire(self) -> _Pool:
        if self._pool is None:
            self._pool = _Pool(self._new_client())
            self._open_pools.add(self._pool)
        self._pool.users += 1
        return self._pool

    def _release(self, pool: _Pool, clean: bool) -> None:
        """After a stream: retire its pool unless every request it sent was answered."""
        pool.users -= 1
        if not clean:
            pool.retired = True
            if self._pool is pool:
                self._pool = None
        if pool.retired and pool.users == 0 and pool in self._open_pools:
            self._open_pools.discard(pool)
            closer = asyncio.ensure_future(pool.client.aclose())
            self._closing.add(closer)
            closer.add_done_callback(self._closing.discard)

    async def _discover(self, client: httpx.AsyncClient) -> None:
        """Read ``/openapi.json`` once: which paths accept POST, and is this clipserve?"""
        if self._post_paths is not None:
            return
        try:
            timeout = max(3.0, self.options.connect_timeout)  # then fall back to /post
            response = await client.get("/openapi.json", timeout=timeout)
        except httpx.ReadTimeout:
            self._post_paths = set()  # like clip-client: no OpenAPI document -> POST /post
            return
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from exc
        paths: set[str] = set()
        if response.status_code in (401, 403):
            raise from_http(response.status_code, response.text[:300], self.options.address.url)
        if response.status_code == 200:
            with contextlib.suppress(ValueError, AttributeError):
                document = response.json()
                paths = {
                    path
                    for path, methods in (document.get("paths") or {}).items()
                    if isinstance(methods, dict) and "post" in methods
                }
                info = document.get("info") or {}
                self.protobuf = bool(
                    document.get(CLIPSERVE_MARKER)
                    or info.get(CLIPSERVE_MARKER)
                    or info.get("title") == "clipserve"
                )
        if self.options.http_format != "auto":
            self.protobuf = self.options.http_format == "protobuf"
        self._post_paths = paths

    def _path_for(self, request: DataRequestProto) -> str:
        if self.protobuf:
            return "/post"
        endpoint = request.header.exec_endpoint or "/"
        paths = self._post_paths or set()
        for candidate in (endpoint, endpoint_of(request), "/default"):
            if candidate in paths and candidate != "/":
                return candidate
        return "/post"

    async def post(self, client: httpx.AsyncClient, request: DataRequestProto) -> DataRequestProto:
        path = self._path_for(request)
        if self.protobuf:
            content = request.SerializeToString()
            headers = {"Content-Type": PROTOBUF, "Accept": PROTOBUF}
            kwargs: dict[str, Any] = {"content": content, "headers": headers}
        else:
            kwargs = {"json": request_to_json_body(request)}
        url = self.options.address.url
        try:
            response = await client.post(path, **kwargs)
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise self._unavailable(exc) from exc
            raise ClientTimeoutError(f"{url}: no HTTP reply in time") from exc
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from exc
        reply = self._read_reply(response, request)
        if not reply.header.request_id:  # one reply per POST: it answers this request
            reply.header.request_id = request.header.request_id
        return reply

    def _read_reply(self, response: httpx.Response, request: DataRequestProto) -> DataRequestProto:
        url = self.options.address.url
        status = response.status_code
        is_protobuf = response.headers.get("content-type", "").startswith(PROTOBUF)
        if status >= 300:
            name, retry_after = _error_facts(response)
            error = from_http(status, _detail(response), url, name, retry_after)
            if name == "RateLimitedError":  # refuses this request only: its ERROR reply
                return _refusal(request, error, retry_after)
            raise error
        try:
            if is_protobuf:
                return DataRequestProto.FromString(response.content)
            body = response.json()
        except Exception as exc:  # noqa: BLE001 - not our reply format
            raise RemoteError(f"{url}: unreadable HTTP reply ({exc})") from exc
        if isinstance(body, dict) and isinstance(body.get("header"), dict):
            return reply_from_json(body)  # a reply (possibly with per-document failures)
        raise RemoteError(f"{url}: HTTP reply is not a jina DataRequest: {str(body)[:200]}")

    def _unavailable(self, exc: Exception) -> ServerUnavailableError:
        return ServerUnavailableError(
            f"cannot reach HTTP server {self.options.address.url}: {os_reason(exc)}"
        )

    async def stream(
        self, requests: AsyncIterator[DataRequestProto]
    ) -> AsyncIterator[DataRequestProto]:
        pool = self._acquire()
        replies: asyncio.Queue[Any] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()
        feeder: asyncio.Task[None] | None = None
        outstanding = 0
        fed_all = failed = False

        async def one(request: DataRequestProto) -> None:
            nonlocal outstanding
            try:
                result: Any = await self.post(pool.client, request)
            except Exception as exc:  # noqa: BLE001 - handed to the reader below
                result = exc
            outstanding -= 1
            replies.put_nowait(result)

        async def feed() -> None:
            nonlocal outstanding, fed_all
            try:
                async for request in requests:
                    outstanding += 1
                    task = asyncio.create_task(one(request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            finally:
                fed_all = True
                replies.put_nowait(None)  # wake the reader

        try:
            await self._discover(pool.client)
            feeder = asyncio.create_task(feed())
            while True:
                item = await replies.get()
                if item is None:
                    if feeder.done() and not feeder.cancelled() and feeder.exception():
                        raise feeder.exception()  # type: ignore[misc]
                elif isinstance(item, BaseException):
                    failed = True
                    raise item
                else:
                    yield item
                if fed_all and outstanding == 0 and replies.empty():
                    return
        finally:
            clean = not failed and outstanding == 0
            pending = [task for task in (feeder, *tasks) if task is not None]
            for task in pending:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*pending, return_exceptions=True)
            self._release(pool, clean and feeder is not None)

    async def aclose(self) -> None:
        pools, self._open_pools, self._pool = list(self._open_pools), set(), None
        for pool in pools:
            await pool.client.aclose()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _error_facts(response: httpx.Response) -> tuple[str | None, float | None]:
    """The clipserve error type and the retry-after hint (body, else header) of an error."""
    name = retry_after = None
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        error = response.json().get("error") or {}
        name = str(error.get("type")) if error.get("type") else None
        if error.get("retry_after_s") is not None:
            retry_after = float(error["retry_after_s"])
    if retry_after is None:
        with contextlib.suppress(TypeError, ValueError):
            retry_after = float(response.headers.get("retry-after"))
    return name, retry_after


def _refusal(
    request: DataRequestProto, error: Exception, retry_after: float | None
) -> DataRequestProto:
    reply = DataRequestProto()
    reply.header.request_id = request.header.request_id
    set_error(reply, str(error), "RateLimitedError")
    if retry_after is not None:
        set_retry_after(reply, retry_after)
    return reply


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):  # clipserve's and OpenAI's shape
            return str(error["message"])[:300]
        for key in ("detail", "error", "message", "description"):
            if body.get(key):
                return str(body[key])[:300]
        header = body.get("header")
        if isinstance(header, dict) and isinstance(header.get("status"), dict):
            return str(header["status"].get("description", ""))[:300]
    return str(body)[:300]
