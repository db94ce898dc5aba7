"""The interface every transport implements, and the options they share."""

from __future__ import annotations

import abc
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clipserve.client.urls import ServerAddress

if TYPE_CHECKING:
    from clipserve.wire.clipserve_wire_pb2 import DataRequestProto


@dataclass(frozen=True)
class TransportOptions:
    address: ServerAddress
    token: str | None = None
    connect_timeout: float = 5.0
    verify: bool | str = True  # False: do not verify TLS; str: CA bundle file
    prefetch: int = 16
    http_format: str = "auto"  # "auto" (protobuf with clipserve, else JSON), "json", "protobuf"
    #: the client's ``timeout``: each request's deadline, told to the server (None: none)
    request_timeout: float | None = None

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.address.tls:
            return None
        if self.verify is False:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        if isinstance(self.verify, str):
            return ssl.create_default_context(cafile=self.verify)
        return ssl.create_default_context()


class Transport(abc.ABC):
    """Bound to the event loop it was created in."""

    def __init__(self, options: TransportOptions) -> None:
        self.options = options

    @abc.abstractmethod
    def stream(self, requests: AsyncIterator[DataRequestProto]) -> AsyncIterator[DataRequestProto]:
        """Send every request of ``requests`` (then end the input side) while yielding the
        replies. Raises ``ServerUnavailableError`` etc.; ends when the server ends."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        pass


def os_reason(exc: BaseException) -> str:
    """The operating system's reason at the bottom of a library's exception chain
    ("Connection refused", "Name or service not known"), else the exception's own text."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and (seen.errno or seen.strerror):
            if isinstance(seen.errno, int) and seen.errno > 0:
                return os.strerror(seen.errno)
            return str(seen.strerror)
        seen = seen.__cause__ or seen.__context__
    return f"{type(exc).__name__}: {exc}".rstrip(": ")
