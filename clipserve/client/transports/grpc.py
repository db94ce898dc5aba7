"""gRPC: one bidirectional stream ``/jina.JinaRPC/Call`` per job.

It drives grpcio's threaded (sync) API from asyncio rather than ``grpc.aio``: with
``grpc.aio``, a write racing a server that ends the call (RESOURCE_EXHAUSTED when its queue
is full, UNAUTHENTICATED) replaces the server's status with a local "INTERNAL: Internal error
from Core", losing the reason. grpcio consumes the request iterator on its own thread
(serializing there) and a reader thread hands each reply to the event loop.
"""

from __future__ import annotations

import asyncio
import queue
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

from clipserve.client.errors_map import from_grpc
from clipserve.client.transports.base import Transport, TransportOptions, os_reason
from clipserve.client.urls import ServerAddress
from clipserve.errors import ServerUnavailableError
from clipserve.wire import GRPC_METHOD
from clipserve.wire.clipserve_wire_pb2 import DataRequestProto

_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.enable_retries", 0),
    # a new channel connects afresh instead of inheriting another channel's backoff
    ("grpc.use_local_subchannel_pool", 1),
]
_END = object()
_POLLER_GRACE_S = 0.5


class GrpcTransport(Transport):
    def __init__(self, options: TransportOptions) -> None:
        super().__init__(options)
        self._channel: grpc.Channel | None = None
        metadata = [("__prefetch__", str(options.prefetch))]
        if options.token:
            metadata.append(("authorization", options.token))
        self._metadata = tuple(metadata)

    async def _open(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = await asyncio.to_thread(self._new_channel)
        channel = self._channel
        failure = await asyncio.to_thread(
            _connect, channel, self.options.address, self.options.connect_timeout
        )
        if failure is not None:
            self._drop_channel()
            raise failure
        return channel

    def _new_channel(self) -> grpc.Channel:
        address = self.options.address
        target = address.netloc
        if not address.tls:
            return grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        options = list(_CHANNEL_OPTIONS)
        verify = self.options.verify
        if verify is False:  # trust whatever certificate the server shows (testing only)
            pem = _server_certificate(address.host, address.port, self.options.connect_timeout,
                                      address.url)  # fmt: skip
            credentials = grpc.ssl_channel_credentials(root_certificates=pem.encode())
            options.append(("grpc.ssl_target_name_override", address.host))
        elif isinstance(verify, str):
            with open(verify, "rb") as handle:
                credentials = grpc.ssl_channel_credentials(root_certificates=handle.read())
        else:
            credentials = grpc.ssl_channel_credentials()
        return grpc.secure_channel(target, credentials, options=options)

    def _drop_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            # grpcio's connectivity poller (behind channel_ready_future) may still run for
            # up to 0.2 s and fails noisily on a closed channel: close a little later
            closer = threading.Timer(_POLLER_GRACE_S, channel.close)
            closer.daemon = True
            closer.start()

    async def stream(
        self, requests: AsyncIterator[DataRequestProto]
    ) -> AsyncIterator[DataRequestProto]:
        channel = await self._open()
        method = channel.stream_stream(
            GRPC_METHOD,
            request_serializer=DataRequestProto.SerializeToString,
            response_deserializer=DataRequestProto.FromString,
        )
        loop = asyncio.get_running_loop()
        outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        call = method(_drain(outbox), metadata=self._metadata)
        reader = threading.Thread(
            target=_read_all, args=(call, loop, inbox), name="clipserve-grpc-reader", daemon=True
        )
        reader.start()
        feeder = asyncio.create_task(_feed(requests, outbox))
        try:
            while True:
                item = await inbox.get()
                if item is _END:
                    break
                if isinstance(item, grpc.RpcError):
                    raise self._translate(item) from item
                yield item
        finally:
            feeder.cancel()
            outbox.put(_END)  # unblock grpc's request thread
            call.cancel()

    def _translate(self, error: grpc.RpcError) -> Exception:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        translated = from_grpc(code.name, details or "", self.options.address.url)
        if isinstance(translated, ServerUnavailableError):
            self._drop_channel()  # reconnect from scratch next time
        return translated

    async def aclose(self) -> None:
        self._drop_channel()


async def _feed(requests: AsyncIterator[DataRequestProto], outbox: queue.SimpleQueue) -> None:
    try:
        async for request in requests:
            outbox.put(request)
    finally:
        outbox.put(_END)


def _drain(outbox: queue.SimpleQueue) -> Iterator[DataRequestProto]:
    """The request iterator grpcio consumes on its own thread."""
    while (item := outbox.get()) is not _END:
        yield item


def _read_all(call: Any, loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue) -> None:
    def hand(item: Any) -> bool:
        try:
            loop.call_soon_threadsafe(inbox.put_nowait, item)
            return True
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return False

    try:
        for reply in call:
            if not hand(reply):
                return
    except grpc.RpcError as error:
        hand(error)
        return
    hand(_END)


def _connect(
    channel: grpc.Channel, address: ServerAddress, timeout: float
) -> ServerUnavailableError | None:
    """Wait until ``channel`` is READY (None) or it cannot be: a connection attempt that
    fails on a port where nothing listens (or a host that does not resolve) fails at once,
    as HTTP and WebSocket do, rather than after ``timeout``."""
    states: queue.SimpleQueue[grpc.ChannelConnectivity] = queue.SimpleQueue()
    channel.subscribe(states.put, try_to_connect=True)
    deadline = time.monotonic() + timeout
    port_open = False
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                state = states.get(timeout=remaining)
            except queue.Empty:
                break
            if state is grpc.ChannelConnectivity.READY:
                return None
            if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE and not port_open:
                reason = _refused(address, remaining)
                if reason:
                    return ServerUnavailableError(
                        f"cannot reach gRPC server {address.url}: {reason}"
                    )
                port_open = True  # something listens: let grpcio retry until the deadline
    finally:
        channel.unsubscribe(states.put)
    why = "the port is open but no gRPC server answered" if port_open else "no connection"
    hint = " (TLS or protocol mismatch?)" if port_open else ""
    return ServerUnavailableError(
        f"cannot reach gRPC server {address.url}: {why} within {timeout:g}s{hint}"
    )


def _refused(address: ServerAddress, timeout: float) -> str | None:
    """Why a plain TCP connection fails (grpcio does not say), or None if it opens."""
    try:
        with socket.create_connection((address.host, address.port), timeout=min(timeout, 2.0)):
            return None
    except OSError as exc:
        return os_reason(exc)


def _server_certificate(host: str, port: int, timeout: float, url: str) -> str:
    try:
        return ssl.get_server_certificate((host, port), timeout=timeout)
    except OSError as exc:
        raise ServerUnavailableError(f"cannot reach gRPC server {url}: {exc}") from exc
