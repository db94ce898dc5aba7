"""gRPC: one bidirectional stream ``/jina.JinaRPC/Call`` per job (grpc.aio)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import grpc
from grpc import aio

from clipserve.client.errors_map import from_grpc
from clipserve.client.transports import Transport, TransportOptions
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
]


class GrpcTransport(Transport):
    def __init__(self, options: TransportOptions) -> None:
        super().__init__(options)
        self._channel: aio.Channel | None = None
        metadata = [("__prefetch__", str(options.prefetch))]
        if options.token:
            metadata.append(("authorization", options.token))
        self._metadata = tuple(metadata)

    async def _open(self) -> aio.Channel:
        if self._channel is None:
            self._channel = await self._new_channel()
        try:
            await asyncio.wait_for(self._channel.channel_ready(), self.options.connect_timeout)
        except (asyncio.TimeoutError, aio.AioRpcError) as exc:
            await self._drop_channel()
            raise ServerUnavailableError(
                f"cannot reach gRPC server {self.options.address.url} "
                f"within {self.options.connect_timeout:g}s"
            ) from exc
        return self._channel

    async def _new_channel(self) -> aio.Channel:
        address = self.options.address
        target = address.netloc
        if not address.tls:
            return aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        options = list(_CHANNEL_OPTIONS)
        verify = self.options.verify
        if verify is False:  # trust whatever certificate the server shows (testing only)
            pem = await asyncio.to_thread(
                _server_certificate,
                address.host,
                address.port,
                self.options.connect_timeout,
                address.url,
            )
            credentials = grpc.ssl_channel_credentials(root_certificates=pem.encode())
            options.append(("grpc.ssl_target_name_override", address.host))
        elif isinstance(verify, str):
            with open(verify, "rb") as handle:
                credentials = grpc.ssl_channel_credentials(root_certificates=handle.read())
        else:
            credentials = grpc.ssl_channel_credentials()
        return aio.secure_channel(target, credentials, options=options)

    async def _drop_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close(grace=None)

    async def stream(
        self, requests: AsyncIterator[DataRequestProto]
    ) -> AsyncIterator[DataRequestProto]:
        channel = await self._open()
        call_method = channel.stream_stream(
            GRPC_METHOD,
            request_serializer=DataRequestProto.SerializeToString,
            response_deserializer=DataRequestProto.FromString,
        )
        call = call_method(requests, metadata=self._metadata)
        try:
            async for reply in call:
                yield reply
        except aio.AioRpcError as exc:
            error = from_grpc(exc.code().name, exc.details() or "", self.options.address.url)
            if isinstance(error, ServerUnavailableError):
                await self._drop_channel()  # reconnect from scratch next time
            raise error from exc
        finally:
            if not call.done():
                call.cancel()

    async def aclose(self) -> None:
        await self._drop_channel()


def _server_certificate(host: str, port: int, timeout: float, url: str) -> str:
    try:
        return ssl.get_server_certificate((host, port), timeout=timeout)
    except OSError as exc:
        raise ServerUnavailableError(f"cannot reach gRPC server {url}: {exc}") from exc
