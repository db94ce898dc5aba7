"""WebSocket front-end at ``/`` (subprotocol ``bytes``), on the HTTP port.

Each binary frame is one serialized ``DataRequestProto``; each reply is one binary frame
(any order, matched by ``header.request_id``). The single-byte frame ``b"\\x00"`` ends the
input: the server sends the remaining replies, then closes with 1000.

Authentication (when a token is configured): the ``Authorization`` header on the upgrade
request, or else a first *text* frame ``{"authorization": "<token>"}`` (browsers cannot
set headers). A wrong or missing credential closes with 1008 before anything is read.
Without a configured token, such a first frame is ignored (a client cannot tell in advance).
Request-level errors, overload included, are ERROR replies (``errors_map``). When a reload
removes the connection's token, it reads no more, sends the replies in flight, and closes
with 1008.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref

from starlette.websockets import WebSocket, WebSocketDisconnect

from clipserve.errors import AuthenticationError, ClipServeError
from clipserve.server.auth import ANONYMOUS, TokenAuth
from clipserve.server.dispatch import Caller, Dispatcher
from clipserve.server.errors_map import (
    WS_NORMAL,
    WS_UNSUPPORTED_DATA,
    public_message,
    ws_close_code,
)
from clipserve.server.logs import peer_address
from clipserve.wire import WS_END_OF_INPUT, WS_SUBPROTOCOL
from clipserve.wire.clipserve_wire_pb2 import DataRequestProto

log = logging.getLogger("clipserve.server")
AUTH_FRAME_TIMEOUT_S = 30.0
_MAX_REASON = 120  # close reasons must fit in 123 bytes


class WebSocketSessions:
    """Serves connections and remembers the open ones so shutdown can drain them."""

    def __init__(self, dispatcher: Dispatcher, auth: TokenAuth, max_inflight: int) -> None:
        self.dispatcher = dispatcher
        self.auth = auth
        self.max_inflight = max_inflight
        self._open: weakref.WeakSet[_Session] = weakref.WeakSet()

    async def serve(self, websocket: WebSocket) -> None:
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol=WS_SUBPROTOCOL if WS_SUBPROTOCOL in offered else None)
        session = _Session(websocket, self)
        self._open.add(session)
        try:
            await session.run()
        finally:
            self._open.discard(session)

    async def drain(self, timeout: float) -> None:
        """Let every connection finish its in-flight requests, then close it with 1001."""
        sessions = list(self._open)
        if sessions:
            await asyncio.gather(*(s.drain(timeout) for s in sessions), return_exceptions=True)


class _Session:
    def __init__(self, websocket: WebSocket, owner: WebSocketSessions) -> None:
        self.ws = websocket
        self.owner = owner
        self.slots = asyncio.Semaphore(owner.max_inflight)
        self.tasks: set[asyncio.Task[None]] = set()
        self.send_lock = asyncio.Lock()
        self.closed = False
        self.tenant = ANONYMOUS
        self.revoked = asyncio.Event()
        self.peer = peer_address(websocket.client)

    async def run(self) -> None:
        forget = None
        try:
            if not await self._authenticate():
                return
            forget = self.tenant.on_revoke(self.revoked.set)
            first = not self.owner.auth.enabled
            while not self.closed:
                message = await self._receive_unless_revoked()
                if message is None:  # the token was removed: answer what is in flight, close
                    await self._finish_in_flight()
                    reason = f"the token of tenant {self.tenant.name!r} was revoked"
                    await self.close(1008, reason)
                    break
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("bytes")
                if data is None and first and _is_auth_frame(message.get("text")):
                    first = False  # a token this server does not need: harmless
                    continue
                first = False
                if data is None:
                    await self.close(WS_UNSUPPORTED_DATA, "text frames are not requests")
                    break
                if data == WS_END_OF_INPUT:
                    await self._finish_in_flight()
                    await self.close(WS_NORMAL, "end of input")
                    break
                await self.slots.acquire()
                task = asyncio.create_task(self._answer(data))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        except WebSocketDisconnect:
            pass
        finally:
            if forget is not None:
                forget()
            for task in list(self.tasks):  # the client left: stop its work
                task.cancel()

    async def _receive_unless_revoked(self) -> dict | None:
        """The next ASGI message, or None once the connection's token is revoked."""
        if self.tenant is ANONYMOUS:  # no token, nothing to revoke
            return await self.ws.receive()
        receive = asyncio.ensure_future(self.ws.receive())
        revoked = asyncio.ensure_future(self.revoked.wait())
        try:
            await asyncio.wait({receive, revoked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            revoked.cancel()
        if receive.done():
            return receive.result()
        receive.cancel()
        return None

    async def _authenticate(self) -> bool:
        auth = self.owner.auth
        if not auth.enabled:
            return True
        header = self.ws.headers.get("authorization")
        try:
            if header is not None:
                self.tenant = auth.check(header)
                return True
            async with asyncio.timeout(AUTH_FRAME_TIMEOUT_S):
                message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return False
            self.tenant = auth.check(_token_from_frame(message.get("text")))
            return True
        except (AuthenticationError, TimeoutError) as exc:
            reason = str(exc) if isinstance(exc, AuthenticationError) else "no credential sent"
            self.owner.dispatcher.rejected(
                "websocket", AuthenticationError(reason), caller=Caller(client=self.peer)
            )
            await self.close(1008, reason)
            return False

    async def _answer(self, data: bytes) -> None:
        try:
            caller = Caller(tenant=self.tenant, client=self.peer)
            await self.send(await self.owner.dispatcher.reply_for(data, "websocket", caller))
        except Exception as exc:  # not answered in band: the connection ends (errors_map)
            if not isinstance(exc, ClipServeError):
                log.exception("WebSocket request failed")
            await self.close(ws_close_code(exc), public_message(exc))
        finally:
            self.slots.release()

    async def send(self, reply: DataRequestProto) -> None:
        payload = reply.SerializeToString()
        async with self.send_lock:
            if self.closed:
                return
            try:
                await self.ws.send_bytes(payload)
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.closed = True

    async def close(self, code: int, reason: str) -> None:
        async with self.send_lock:
            if self.closed:
                return
            self.closed = True
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await self.ws.close(code, reason[:_MAX_REASON])

    async def _finish_in_flight(self) -> None:
        for _ in range(self.owner.max_inflight):
            await self.slots.acquire()
        for _ in range(self.owner.max_inflight):
            self.slots.release()

    async def drain(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._finish_in_flight()
        except TimeoutError:
            pass
        await self.close(1001, "server shutting down")


def _is_auth_frame(text: str | None) -> bool:
    try:
        value = json.loads(text or "")
    except json.JSONDecodeError:
        return False
    return isinstance(value, dict) and {key.lower() for key in value} == {"authorization"}


def _token_from_frame(text: str | None) -> str | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(value, dict):
        token = value.get("authorization") or value.get("Authorization")
        return token if isinstance(token, str) else None
    return None
