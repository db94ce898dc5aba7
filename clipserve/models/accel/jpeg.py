"""JPEG decoding on the GPU: which JPEGs go there, and the nvJPEG decoder.

The host reads each file's header (``models.images.probe_image``: the size limit, the format,
the colour mode, the EXIF orientation) in the preparing threads; a JPEG the route takes is
handed on still encoded (``EncodedJpeg``) and the whole batch's JPEGs are decoded in one
call of torchvision's ``decode_jpeg(..., device="cuda")`` (nvJPEG: the hardware decoder of
A100/H100-class GPUs for baseline JPEGs, its CUDA decoder for others). torchvision is
imported only here, only for a CUDA model that asks for it, since no torchvision release
imports beside every torch build.

If a batch fails, each of its JPEGs is tried alone, and one that still fails is decoded on
the CPU; only a JPEG that the CPU cannot decode either fails, and alone.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from clipserve.errors import ModelUnavailableError
from clipserve.models.accel.pixels import encoded_tensor
from clipserve.models.devices import DeviceOptions
from clipserve.models.images import ImageHeader

logger = logging.getLogger(__name__)

#: Pillow modes of JPEGs nvJPEG decodes to RGB (YCbCr JPEGs open as "RGB"); CMYK/YCCK ones
#: (Adobe) take the CPU path, which converts them as Pillow does
GPU_MODES = ("RGB", "L")
#: encoded JPEGs -> decoded uint8 [3, H, W] RGB tensors on the device (raises on failure)
Decoder = Callable[[Sequence[bytes]], list[torch.Tensor]]


@dataclass(frozen=True)
class EncodedJpeg:
    """A JPEG that the device decodes: its bytes and its header, read on the host."""

    data: bytes
    header: ImageHeader

    @property
    def pixels(self) -> int:
        return self.header.width * self.header.height


@dataclass(frozen=True)
class JpegRoute:
    """Which JPEGs the device decodes: all (``on``), or those of at least ``min_pixels``
    (``auto``); none when there is no decoder."""

    enabled: bool
    min_pixels: int = 0

    def takes(self, header: ImageHeader) -> bool:
        return (
            self.enabled
            and header.format == "JPEG"
            and header.mode in GPU_MODES
            and header.width * header.height >= self.min_pixels
        )

    def describe(self) -> str:
        """For the model's identity (cache keys): which images took the GPU decode."""
        return f"nvjpeg>={self.min_pixels}px" if self.enabled else ""


def route_for(options: DeviceOptions, device: torch.device) -> tuple[JpegRoute, Decoder | None]:
    """The route and decoder ``options`` ask for on ``device``. Where nvJPEG cannot run (no
    CUDA device, no torchvision built for this torch) JPEGs decode on the CPU, with a log
    line saying why: a warning for ``on``, an info line for ``auto`` on a GPU."""
    if options.gpu_decode == "off":
        return JpegRoute(False), None
    if device.type != "cuda":
        if options.gpu_decode == "on":
            logger.warning(
                "clipserve: --gpu-decode on, but the model runs on %s, not a CUDA device: "
                "JPEGs decode on the CPU",
                device,
            )
        return JpegRoute(False), None
    try:
        decoder = nvjpeg_decoder(device)
    except ModelUnavailableError as exc:
        level = logging.WARNING if options.gpu_decode == "on" else logging.INFO
        logger.log(level, "clipserve: JPEGs decode on the CPU: %s", exc)
        return JpegRoute(False), None
    minimum = 0 if options.gpu_decode == "on" else int(options.gpu_decode_min_pixels)
    logger.info("clipserve: JPEGs of %d pixels and up decode on %s (nvJPEG)", minimum, device)
    return JpegRoute(True, minimum), decoder


def nvjpeg_decoder(device: torch.device) -> Decoder:
    """torchvision's nvJPEG decode on ``device``, checked on a small JPEG; raises
    ``ModelUnavailableError`` naming what to install when it cannot run."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except Exception as exc:  # ImportError, or a torchvision built for another torch
        raise ModelUnavailableError(
            f"GPU JPEG decoding needs torchvision built for this torch ({torch.__version__}): "
            f"pip install 'torchvision=={matching_torchvision()}.*' from the index your torch "
            f"came from, or run with --gpu-decode off ({type(exc).__name__}: {exc})"
        ) from exc

    def decode(files: Sequence[bytes]) -> list[torch.Tensor]:
        encoded = [encoded_tensor(data) for data in files]
        return list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device))

    try:
        (probe,) = decode([_probe_jpeg()])
        if tuple(probe.shape) != (3, 8, 16):
            raise RuntimeError(f"decoded a 16x8 JPEG to shape {list(probe.shape)}")
    except Exception as exc:
        raise ModelUnavailableError(
            f"torchvision's nvJPEG decode does not run on {device}: {exc}; run with "
            "--gpu-decode off"
        ) from exc
    return decode


def decode_each(decoder: Decoder, jpegs: Sequence[EncodedJpeg]) -> list[torch.Tensor | Exception]:
    """Decode the batch in one call; if that fails, each JPEG alone (its error in its place)."""
    if not jpegs:
        return []
    try:
        return list(decoder([jpeg.data for jpeg in jpegs]))
    except Exception as batch_error:
        logger.debug("clipserve: batched JPEG decode failed (%s); decoding one by one", batch_error)
    results: list[torch.Tensor | Exception] = []
    for jpeg in jpegs:
        try:
            results.append(decoder([jpeg.data])[0])
        except Exception as exc:
            results.append(exc)
    return results


def matching_torchvision() -> str:
    """The torchvision minor release built for this torch (torch 2.N pairs with 0.(N+15))."""
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    return f"0.{minor + 15}" if major == 2 else "<the release for your torch>"


def _probe_jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 8), (200, 30, 60)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()
