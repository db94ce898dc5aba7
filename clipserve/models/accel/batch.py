"""One batch of prepared images -> the normalised pixel batch on the device.

``DeviceImages`` is what a model family hands its image path to on an accelerator: it
prepares each image (``prepare``, in the engine's preparing threads), collates a batch
(``collate``) and turns it into the normalised batch on the device (calling it). A prepared
image is either uint8 [H, W, 3] already at the model's input size (decoded, resized and
cropped on the host) or an ``EncodedJpeg`` for the device to decode. The host
ones travel together through pinned memory; the JPEGs are decoded in batches, oriented,
resized and cropped per image on the device; then one normalisation runs over the batch.
A JPEG the device cannot decode is prepared on the host instead (``fallback``); one that
cannot be decoded at all is reported in ``failures`` (its row stays black), so it alone fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from clipserve.errors import ClipServeError, InvalidInputError
from clipserve.models.accel.jpeg import Decoder, EncodedJpeg, JpegRoute, decode_each, route_for
from clipserve.models.accel.layout import Normalizer, Plan
from clipserve.models.accel.pixels import apply_plan, normalize, orient, stage
from clipserve.models.base import ImageSource
from clipserve.models.devices import DeviceOptions
from clipserve.models.images import probe_image

#: decoded pixels one decode call may hold on the device (a 12 MP photo is 36 MB of RGB)
DECODE_PIXEL_BUDGET = 256_000_000
#: a prepared image: host pixels at the input size, or a JPEG left for the device
Prepared = np.ndarray | EncodedJpeg


@dataclass
class DeviceBatch:
    """The normalised float32 batch [N, 3, H, W] on the device (None when every image
    failed), and the failed rows."""

    pixels: torch.Tensor | None
    failures: dict[int, ClipServeError] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceImages:
    """Prepares images and builds ``DeviceBatch``es for one model on one device."""

    device: torch.device
    normalizer: Normalizer
    #: (height, width) of a decoded image -> how it becomes the input size
    plan_for: Callable[[int, int], Plan]
    #: (image, exact) -> uint8 [H, W, 3] at the input size, decoded on the host (raises
    #: ``InvalidInputError`` for images nobody can decode)
    host_pixels: Callable[[ImageSource, bool], np.ndarray]
    #: the pixel limit of a decoded image (checked from the header for device decodes)
    max_pixels: int
    route: JpegRoute = JpegRoute(False)
    decoder: Decoder | None = None

    @classmethod
    def build(
        cls,
        device: torch.device,
        options: DeviceOptions,
        *,
        normalizer: Normalizer,
        plan_for: Callable[[int, int], Plan],
        host_pixels: Callable[[ImageSource, bool], np.ndarray],
        max_pixels: int,
    ) -> DeviceImages:
        """With the JPEG route and decoder ``options.gpu_decode`` gives on ``device``."""
        route, decoder = route_for(options, device)
        return cls(device, normalizer, plan_for, host_pixels, max_pixels, route, decoder)

    def prepare(self, source: ImageSource, *, exact: bool = False) -> Prepared:
        """A JPEG the route takes stays encoded (its header read and checked here); any
        other image is decoded, resized and cropped on the host, to uint8."""
        if self.route.enabled and isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            header = probe_image(data, max_pixels=self.max_pixels)
            if self.route.takes(header):
                return EncodedJpeg(data, header)
        return self.host_pixels(source, exact)

    @staticmethod
    def collate(prepared: list[Prepared]) -> np.ndarray | list[Prepared]:
        """Host pixels stack into one uint8 array (one pinned copy); a batch holding
        encoded JPEGs stays a list."""
        if all(isinstance(item, np.ndarray) for item in prepared):
            return np.stack(prepared)  # type: ignore[arg-type]
        return prepared

    def __call__(self, items: Sequence[Prepared] | np.ndarray) -> DeviceBatch:
        if isinstance(items, np.ndarray):  # an already stacked host batch
            return DeviceBatch(self._normalise(stage(items, self.device)))
        host = [index for index, item in enumerate(items) if isinstance(item, np.ndarray)]
        if len(host) == len(items):
            return DeviceBatch(self._normalise(stage(list(items), self.device)))
        failures: dict[int, ClipServeError] = {}
        images: dict[int, torch.Tensor] = {}
        on_host = set(host)
        jpegs = [(index, item) for index, item in enumerate(items) if index not in on_host]
        for chunk in _chunks(jpegs):
            decoded = self._decode([jpeg for _, jpeg in chunk])
            for (index, jpeg), result in zip(chunk, decoded, strict=True):
                if isinstance(result, torch.Tensor):
                    images[index] = self._fit(orient(result, jpeg.header.orientation))
                else:
                    self._on_host(index, jpeg, images, failures)
        shape = self._input_shape(items, host, images)
        if shape is None:
            return DeviceBatch(None, failures)
        batch = torch.zeros((len(items), *shape), dtype=torch.uint8, device=self.device)
        if host:
            staged = stage([items[index] for index in host], self.device).permute(0, 3, 1, 2)
            batch.index_copy_(0, torch.tensor(host, device=self.device), staged)
        for index, image in images.items():
            batch[index] = image
        return DeviceBatch(normalize(self.normalizer, batch, channel_dim=1), failures)

    def _normalise(self, staged: torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> float32 [N, 3, H, W], normalised."""
        return normalize(self.normalizer, staged.permute(0, 3, 1, 2), channel_dim=1)

    def _decode(self, jpegs: list[EncodedJpeg]) -> list[torch.Tensor | Exception]:
        if self.decoder is None:
            return [RuntimeError("no device decoder") for _ in jpegs]
        return decode_each(self.decoder, jpegs)

    def _fit(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[1:]
        return apply_plan(image, self.plan_for(int(height), int(width)))

    def _on_host(
        self,
        index: int,
        jpeg: EncodedJpeg,
        images: dict[int, torch.Tensor],
        failures: dict[int, ClipServeError],
    ) -> None:
        try:
            pixels = self.host_pixels(jpeg.data, False)
        except ClipServeError as exc:
            failures[index] = exc
            return
        except Exception as exc:  # an unexpected decoder error: this image fails alone
            failures[index] = InvalidInputError(f"image could not be read: {exc}")
            return
        images[index] = torch.from_numpy(pixels).permute(2, 0, 1).to(self.device)

    @staticmethod
    def _input_shape(
        items: Sequence[Prepared], host: list[int], images: dict[int, torch.Tensor]
    ) -> tuple[int, ...] | None:
        if host:
            height, width, channels = items[host[0]].shape  # type: ignore[union-attr]
            return (channels, height, width)
        if images:
            return tuple(next(iter(images.values())).shape)
        return None


def _chunks(jpegs: list[tuple[int, EncodedJpeg]]) -> list[list[tuple[int, EncodedJpeg]]]:
    """Split so that one decode call holds at most ``DECODE_PIXEL_BUDGET`` pixels."""
    chunks: list[list[tuple[int, EncodedJpeg]]] = []
    current: list[tuple[int, EncodedJpeg]] = []
    pixels = 0
    for pair in jpegs:
        if current and pixels + pair[1].pixels > DECODE_PIXEL_BUDGET:
            chunks.append(current)
            current, pixels = [], 0
        current.append(pair)
        pixels += pair[1].pixels
    if current:
        chunks.append(current)
    return chunks
