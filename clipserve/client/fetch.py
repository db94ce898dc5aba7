"""Downloading http(s) images on the client, just before their batch is sent."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from clipserve.client.inputs import MAX_IMAGE_BYTES, PendingFetch, sniff_mime
from clipserve.errors import InvalidInputError

if TYPE_CHECKING:  # httpx is imported on the first download, not with the client
    import httpx


class ImageFetcher:
    """One ``httpx.AsyncClient`` (created on first use), at most ``concurrency`` downloads
    at once; every failure is an ``InvalidInputError`` naming the URL."""

    def __init__(self, timeout: float = 30.0, concurrency: int = 16) -> None:
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self._slots = asyncio.Semaphore(concurrency)

    async def fill(self, pending: Sequence[PendingFetch]) -> None:
        await asyncio.gather(*(self._fetch(item) for item in pending))

    async def _fetch(self, item: PendingFetch) -> None:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=True)
        async with self._slots:
            try:
                response = await self._client.get(item.url)
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
                raise InvalidInputError(f"cannot download image {item.url!r}: {reason}") from exc
        if response.status_code != 200:
            raise InvalidInputError(
                f"cannot download image {item.url!r}: HTTP {response.status_code}"
            )
        data = response.content
        if not data:
            raise InvalidInputError(f"cannot download image {item.url!r}: empty response")
        if len(data) > MAX_IMAGE_BYTES:
            raise InvalidInputError(f"image {item.url!r} is {len(data)} bytes, above the limit")
        item.target.blob = data
        content_type = response.headers.get("content-type", "").split(";")[0].strip()
        mime = content_type if content_type.startswith("image/") else sniff_mime(data)
        item.target.mime_type = mime or item.target.mime_type
        item.target.uri = item.url

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
