"""WebSocket: one connection per job, subprotocol ``bytes``; each request and each reply is
one binary frame holding a serialized ``DataRequestProto``; ``b"\\x00"`` ends the input and
the server closes the socket after its last reply."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from clipserve.client.errors_map import from_http, from_ws_close
from clipserve.client.transports.base import Transport, os_reason
from clipserve.errors import ClipServeError, RemoteError, ServerUnavailableError
from clipserve.wire import WS_END_OF_INPUT, WS_SUBPROTOCOL
from clipserve.wire.clipserve_wire_pb2 import DataRequestProto


class WebSocketTransport(Transport):
    async def _connect(self) -> ClientConnection:
        options = self.options
        headers = {"Authorization": options.token} if options.token else {}
        url = options.address.url
        try:
            return await connect(
                options.address.ws_url,
                subprotocols=[Subprotocol(WS_SUBPROTOCOL)],
                additional_headers=headers,
                ssl=options.ssl_context(),
                open_timeout=options.connect_timeout,
                max_size=None,
                compression=None,
                proxy=None,
                max_queue=max(16, options.prefetch),
            )
        except InvalidStatus as exc:
            response = exc.response
            reason = response.body.decode("utf-8", "replace")[:300] if response.body else ""
            raise from_http(response.status_code, reason, url) from exc
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise ServerUnavailableError(
                f"cannot reach WebSocket server {url}: no connection within "
                f"{options.connect_timeout:g}s"
            ) from exc
        except (OSError, InvalidHandshake) as exc:
            reason = os_reason(exc)
            raise ServerUnavailableError(f"cannot reach WebSocket server {url}: {reason}") from exc

    async def stream(
        self, requests: AsyncIterator[DataRequestProto]
    ) -> AsyncIterator[DataRequestProto]:
        socket = await self._connect()
        sender = asyncio.create_task(self._send_all(socket, requests))
        url = self.options.address.url
        try:
            while True:
                receive = asyncio.ensure_future(socket.recv())
                await asyncio.wait({receive, sender}, return_when=asyncio.FIRST_COMPLETED)
                if sender.done() and sender.exception() is not None:
                    receive.cancel()
                    raise sender.exception()  # type: ignore[misc]
                if not receive.done():
                    await asyncio.wait({receive})
                try:
                    frame = receive.result()
                except ConnectionClosed as exc:
                    if exc.rcvd is not None and exc.rcvd.code == 1000:
                        return  # the server ended the stream cleanly
                    close = exc.rcvd
                    code = close.code if close else None
                    raise from_ws_close(code, close.reason if close else "", url) from exc
                if isinstance(frame, str):
                    frame = frame.encode()
                try:
                    yield DataRequestProto.FromString(frame)
                except ClipServeError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a malformed frame
                    raise RemoteError(f"{url}: unreadable WebSocket reply: {exc}") from exc
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
            with contextlib.suppress(Exception):
                await asyncio.wait_for(socket.close(), 1.0)

    async def _send_all(
        self, socket: ClientConnection, requests: AsyncIterator[DataRequestProto]
    ) -> None:
        try:
            async for request in requests:
                await socket.send(request.SerializeToString())
            await socket.send(WS_END_OF_INPUT)
        except ConnectionClosed:
            pass  # the receiver reports why the socket closed
