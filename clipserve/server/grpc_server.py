"""gRPC front-end: the bidirectional stream ``/jina.JinaRPC/Call`` that clip-client uses,
plus the standard ``grpc.health.v1.Health`` service.

Per stream, one reader task takes requests off the wire and starts one task per request
(at most ``max_inflight`` at once, lowered by the client's ``__prefetch__`` hint); the
handler itself is the single writer, sending replies as they finish (any order). After
the client half-closes and the last reply is written, the call ends OK. A call's deadline
(``timeout=`` in a gRPC client) is every request's deadline: work still queued when it
passes is dropped before any forward pass. When a reload removes the call's token, the
call stops reading, answers what it has in flight, then ends with UNAUTHENTICATED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from clipserve.errors import AuthenticationError
from clipserve.server.auth import TokenAuth, metadata_credential
from clipserve.server.dispatch import Caller, Dispatcher
from clipserve.server.errors_map import grpc_status, public_message
from clipserve.server.limits import MiB
from clipserve.server.logs import peer_address
from clipserve.server.tls import TlsFiles
from clipserve.wire import GRPC_SERVICE, DataRequestProto

log = logging.getLogger("clipserve.server")
HEALTH_SERVICE = "grpc.health.v1.Health"
_END = object()
_REVOKED = object()
#: our deadline for a call runs this much ahead of grpc's own, so a request still waiting
#: at the deadline is answered (DeadlineExceededError) and counted before grpc cancels it
DEADLINE_LEAD_S = 0.02
#: how long a refused (unauthenticated) stream is read before the call ends
REFUSED_READ_S = 5.0


class GrpcFrontend:
    """Owns the ``grpc.aio`` server: ``bind`` early (port conflicts fail before the model
    loads), ``start`` once the service is ready."""

    def __init__(
        self,
        auth: TokenAuth,
        *,
        max_message_mb: int = 256,
        max_inflight: int = 64,
        tls: TlsFiles | None = None,
        open_health: bool = True,
    ) -> None:
        self.dispatcher: Dispatcher | None = None
        self.auth = auth
        self.started = False
        self.max_inflight = max_inflight
        self.tls = tls
        self.health = health.aio.HealthServicer()
        open_methods = {f"/{HEALTH_SERVICE}/Check", f"/{HEALTH_SERVICE}/Watch"}
        size = max_message_mb * MiB
        self.server = grpc.aio.server(
            interceptors=[_AuthInterceptor(auth, open_methods if open_health else set())],
            options=[
                ("grpc.max_receive_message_length", size),
                ("grpc.max_send_message_length", size),
                ("grpc.so_reuseport", 0),
            ],
        )
        call = grpc.stream_stream_rpc_method_handler(
            self._call,
            request_deserializer=None,  # raw bytes: a malformed message gets a proper answer
            response_serializer=DataRequestProto.SerializeToString,
        )
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(GRPC_SERVICE, {"Call": call}),)
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)

    def bind(self, host: str, port: int) -> int:
        """Reserve the address; returns the port (the chosen one for port 0)."""
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if self.tls is not None:
                return self.server.add_secure_port(address, self.tls.grpc_credentials())
            return self.server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc reports bind failures this way
            raise OSError(f"gRPC could not bind {address} (is the port in use?)") from exc

    async def start(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        await self.server.start()
        self.started = True

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING
        if not serving:
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", GRPC_SERVICE):
            await self.health.set(name, status)

    async def stop(self, grace: float) -> None:
        """Refuse new calls, give running ones ``grace`` seconds, then cancel them."""
        if self.started:
            await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)

    # ---- the stream -------------------------------------------------------------------

    async def _call(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> None:
        metadata = context.invocation_metadata()
        limit = _prefetch_limit(metadata, self.max_inflight)
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining - DEADLINE_LEAD_S
        tenant = self.auth.identify(metadata_credential(metadata))  # checked by the interceptor
        peer = peer_address(context.peer())
        slots = asyncio.Semaphore(limit)
        replies: asyncio.Queue[Any] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()
        forget = tenant.on_revoke(lambda: replies.put_nowait(_REVOKED)) if tenant else None

        async def answer(raw: bytes) -> None:
            # the slot is released once the reply is written, so a client that stops
            # reading also stops the server from taking (and buffering) more requests
            assert self.dispatcher is not None, "start() sets the dispatcher before serving"
            try:
                caller = Caller(tenant=tenant, deadline=deadline, client=peer)
                replies.put_nowait(await self.dispatcher.reply_for(raw, "grpc", caller))
            except Exception as exc:  # errors that end the call (overload, shutdown)
                replies.put_nowait(exc)

        async def read_all() -> None:
            try:
                async for raw in requests:
                    await slots.acquire()
                    task = asyncio.create_task(answer(raw))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                for _ in range(limit):  # every reply written
                    await slots.acquire()
                replies.put_nowait(_END)
            except Exception as exc:
                replies.put_nowait(exc)

        reader = asyncio.create_task(read_all())
        try:
            while (item := await replies.get()) is not _END:
                if item is _REVOKED:  # read no more; answer what is in flight; end the call
                    reader.cancel()
                    await self._write_in_flight(context, replies, tasks, slots)
                    name = tenant.name if tenant else "?"
                    await context.abort(
                        grpc.StatusCode.UNAUTHENTICATED,
                        f"unauthenticated: the token of tenant {name!r} was revoked",
                    )
                if isinstance(item, BaseException):
                    await context.abort(grpc_status(item), public_message(item))
                await context.write(item)
                slots.release()
        finally:
            if forget is not None:
                forget()
            reader.cancel()
            for task in list(tasks):
                task.cancel()

    @staticmethod
    async def _write_in_flight(
        context: grpc.aio.ServicerContext,
        replies: asyncio.Queue[Any],
        tasks: set[asyncio.Task[None]],
        slots: asyncio.Semaphore,
    ) -> None:
        """Write the replies of the requests already being answered."""
        if tasks:
            await asyncio.wait(set(tasks))
        while not replies.empty():
            item = replies.get_nowait()
            if isinstance(item, DataRequestProto):
                await context.write(item)
                slots.release()


def _prefetch_limit(metadata: Any, maximum: int) -> int:
    for key, value in metadata or ():
        if key == "__prefetch__":
            try:
                hint = int(value)
            except (TypeError, ValueError):
                break
            if hint > 0:
                return min(hint, maximum)
    return maximum


class _AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without the right ``authorization`` metadata before any handler runs."""

    def __init__(self, auth: TokenAuth, open_methods: set[str]) -> None:
        self.auth = auth
        self.open_methods = open_methods

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not self.auth.enabled or details.method in self.open_methods:
            return handler
        try:
            self.auth.check_metadata(details.invocation_metadata)
        except AuthenticationError as exc:
            return _refusing(handler, exc)
        return handler


def _refusing(handler: grpc.RpcMethodHandler, exc: AuthenticationError) -> grpc.RpcMethodHandler:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        if handler.request_streaming:
            await _discard_requests(request)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))

    kind = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return kind(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


async def _discard_requests(requests: AsyncIterator[Any]) -> None:
    """Read (never process) what a refused client sends until it half-closes, for a short
    while: ending the call while its writes are in flight makes some clients report their
    own write failure (INTERNAL) instead of our UNAUTHENTICATED."""
    with contextlib.suppress(TimeoutError, grpc.RpcError):
        async with asyncio.timeout(REFUSED_READ_S):
            async for _ in requests:
                pass
