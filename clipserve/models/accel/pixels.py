"""Pixels on the device: staging uint8 batches, normalising, and orienting, resizing and
cropping images that were decoded there.

A host-prepared image travels as uint8 [H, W, 3] (a quarter of float32's bytes) and is
normalised on the device with the very operations of the host path (``x * (1/255)``, minus
the mean, over the std, in float32), so on one device both paths give the same numbers. An
image decoded on the device (CHW uint8, full size) is resized there with bicubic
antialiasing (torch's take on Pillow's filter), rounded to uint8 like Pillow's output, and
cropped or padded like the host path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from clipserve.models.accel.layout import Normalizer, Plan


def normalize(normalizer: Normalizer, pixels: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """uint8 (or float) tensor -> float32 normalised, channels along ``channel_dim``: the
    operations of ``Normalizer.host``, in the same order, on the tensor's device."""
    shape = [1] * pixels.dim()
    shape[channel_dim] = 3
    mean = torch.tensor(normalizer.mean, dtype=torch.float32, device=pixels.device).view(shape)
    std = torch.tensor(normalizer.std, dtype=torch.float32, device=pixels.device).view(shape)
    values = pixels.to(torch.float32)
    if normalizer.scale != 1.0:
        scale = torch.tensor(normalizer.scale, dtype=torch.float32, device=pixels.device)
        values = values * scale
    return (values - mean) / std


def stage(arrays: Sequence[np.ndarray] | np.ndarray, device: torch.device) -> torch.Tensor:
    """Stack same-shape arrays into one tensor on ``device``. For CUDA the stack is written
    straight into pinned host memory (torch's caching host allocator: no new pinning per
    batch) and copied without blocking the host."""
    first = arrays[0]
    shape = (len(arrays), *first.shape)
    if device.type != "cuda":
        stacked = arrays if isinstance(arrays, np.ndarray) else np.stack(arrays)
        return torch.from_numpy(np.ascontiguousarray(stacked))
    dtype = torch.from_numpy(np.empty(0, dtype=first.dtype)).dtype
    host = torch.empty(shape, dtype=dtype, pin_memory=True)
    if isinstance(arrays, np.ndarray):
        host.numpy()[...] = arrays
    else:
        np.stack(arrays, out=host.numpy())
    return host.to(device, non_blocking=True)


def encoded_tensor(data: bytes) -> torch.Tensor:
    """Encoded file bytes as a 1-D uint8 host tensor (nvJPEG reads its input there)."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def apply_plan(image: torch.Tensor, plan: Plan) -> torch.Tensor:
    """uint8 [3, H, W] -> uint8 [3, h, w] per ``plan``: bicubic with antialiasing, rounded
    and clamped to 0..255 like Pillow's output."""
    if plan.box is not None:
        top, left, height, width = plan.box
        image = image[:, top : top + height, left : left + width]
    if tuple(image.shape[1:]) != tuple(plan.size):
        values = torch.nn.functional.interpolate(
            image.unsqueeze(0).to(torch.float32),
            size=plan.size,
            mode="bicubic",
            antialias=True,
            align_corners=False,
        )
        image = values.squeeze(0).round_().clamp_(0, 255).to(torch.uint8)
    if plan.crop is not None:
        image = centre_crop(image, plan.crop)
    return image


def centre_crop(image: torch.Tensor, crop: tuple[int, int]) -> torch.Tensor:
    """The centre ``crop`` of [C, H, W]; an image smaller than it is first centred on black,
    with the offsets of the host path (``(outer - inner) // 2``)."""
    crop_height, crop_width = crop
    height, width = image.shape[1:]
    if height < crop_height or width < crop_width:
        outer_height, outer_width = max(height, crop_height), max(width, crop_width)
        canvas = image.new_zeros((image.shape[0], outer_height, outer_width))
        top, left = (outer_height - height) // 2, (outer_width - width) // 2
        canvas[:, top : top + height, left : left + width] = image
        image, height, width = canvas, outer_height, outer_width
    top, left = (height - crop_height) // 2, (width - crop_width) // 2
    return image[:, top : top + crop_height, left : left + crop_width]


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation (1..8) to [C, H, W], as ``PIL.ImageOps.exif_transpose``."""
    if orientation == 2:  # mirrored
        return image.flip(2)
    if orientation == 3:  # upside down
        return image.flip(1, 2)
    if orientation == 4:  # mirrored upside down
        return image.flip(1)
    if orientation == 5:  # transposed
        return image.transpose(1, 2)
    if orientation == 6:  # turned: rotate 90 degrees clockwise
        return image.transpose(1, 2).flip(2)
    if orientation == 7:  # transversed
        return image.transpose(1, 2).flip(1, 2)
    if orientation == 8:  # rotate 90 degrees counter-clockwise
        return image.transpose(1, 2).flip(1)
    return image
