"""CLIP input preparation without torch: image preprocessing and tokenising.

Images follow the CLIP reference pipeline (what ``CLIPImageProcessor`` does): bicubic resize
of the shorter side to ``image_size``, centre crop, RGB, scale to [0, 1], normalise with the
CLIP mean/std. Everything is plain Pillow + numpy on top of ``decode_image`` and keeps no
mutable state, so one preprocessor serves many worker threads. By default a big photo is
decoded straight to a shorter side of at least twice ``resize_to`` first (see
``models.images``); ``exact=True`` decodes every image at full size, as the reference does.

Texts go through the model's own fast tokenizer (``tokenizers``), truncated to the context
length (77) like CLIP, and padded per batch to the longest member. Padding is exact for
CLIP: the text tower is causal and pools at the end token, so positions after it never
influence the result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from clipserve.models.base import ImageSource
from clipserve.models.images import DEFAULT_MAX_PIXELS, decode_image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CONTEXT_LENGTH = 77
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"


@dataclass(frozen=True)
class ImagePreprocessor:
    """Decode + CLIP-preprocess one image into float32 [3, crop, crop]."""

    resize_to: int = 224  # the shorter side after resizing
    crop_size: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    max_pixels: int = DEFAULT_MAX_PIXELS

    @classmethod
    def from_directory(cls, path: str | Path, **overrides: object) -> ImagePreprocessor:
        """Read an HF ``preprocessor_config.json``; CLIP defaults where it is silent."""
        config_path = Path(path) / "preprocessor_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        size = config.get("size", 224)
        resize_to = (
            size.get("shortest_edge", size.get("height", 224)) if isinstance(size, dict) else size
        )
        crop = config.get("crop_size", resize_to)
        crop_size = crop.get("height", resize_to) if isinstance(crop, dict) else crop
        fields: dict[str, object] = {
            "resize_to": int(resize_to),
            "crop_size": int(crop_size),
            "mean": tuple(config.get("image_mean", CLIP_MEAN)),
            "std": tuple(config.get("image_std", CLIP_STD)),
        }
        fields.update(overrides)
        return cls(**fields)  # type: ignore[arg-type]

    def to_config(self) -> dict[str, object]:
        """The ``preprocessor_config.json`` describing this pipeline."""
        return {
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": True,
            "size": {"shortest_edge": self.resize_to},
            "resample": int(Image.Resampling.BICUBIC),
            "do_center_crop": True,
            "crop_size": {"height": self.crop_size, "width": self.crop_size},
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            "do_convert_rgb": True,
        }

    def __call__(self, source: ImageSource, *, exact: bool = False) -> np.ndarray:
        """``exact``: decode at full size like the reference (slower on big photos). Either
        way, a photo whose shorter side is under 4x ``resize_to`` is decoded at full size,
        so its result is the reference's."""
        min_side = None if exact else 2 * self.resize_to
        return self.preprocess(decode_image(source, max_pixels=self.max_pixels, min_side=min_side))

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """The reference: resize the shorter side (bicubic), centre-crop, normalise."""
        image = image.resize(self._resized_size(image), resample=Image.Resampling.BICUBIC)
        image = self._centre_crop(image)
        pixels = np.asarray(image, dtype=np.float32) * np.float32(1 / 255)
        pixels = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))

    def _resized_size(self, image: Image.Image) -> tuple[int, int]:
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.resize_to, int(self.resize_to * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)

    def _centre_crop(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        crop = self.crop_size
        if width < crop or height < crop:  # pad with black, centred, like the reference
            canvas = Image.new("RGB", (max(width, crop), max(height, crop)))
            canvas.paste(image, ((canvas.width - width) // 2, (canvas.height - height) // 2))
            image, width, height = canvas, canvas.width, canvas.height
        top, left = (height - crop) // 2, (width - crop) // 2
        return image.crop((left, top, left + crop, top + crop))


@dataclass(frozen=True)
class TokenBatch:
    """Token ids and attention mask, int64 [N, L], L = the longest member (<= 77)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class ClipTokenizer:
    """A CLIP fast tokenizer that truncates to the context and pads per batch.

    The underlying ``tokenizers.Tokenizer`` is configured once here and never mutated
    afterwards, so concurrent ``__call__`` from several threads is safe.
    """

    def __init__(self, backend: object, pad_id: int, context_length: int = CONTEXT_LENGTH) -> None:
        from tokenizers import Tokenizer

        if not isinstance(backend, Tokenizer):
            raise TypeError(f"expected a tokenizers.Tokenizer, got {type(backend).__name__}")
        self._tokenizer = backend
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=context_length)
        self.pad_id = pad_id
        self.context_length = context_length

    @classmethod
    def from_directory(
        cls, path: str | Path, context_length: int = CONTEXT_LENGTH
    ) -> ClipTokenizer:
        from transformers import AutoTokenizer

        hf_tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        return cls.from_hf(hf_tokenizer, context_length)

    @classmethod
    def from_hf(cls, hf_tokenizer: object, context_length: int = CONTEXT_LENGTH) -> ClipTokenizer:
        """Wrap a transformers fast tokenizer (its backend is copied, not shared)."""
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())  # type: ignore[attr-defined]
        pad_id = hf_tokenizer.pad_token_id  # type: ignore[attr-defined]
        if pad_id is None:
            pad_id = hf_tokenizer.eos_token_id  # type: ignore[attr-defined]
        return cls(backend, int(pad_id), context_length)

    def __call__(self, texts: Sequence[str], pad_to: int | None = None) -> TokenBatch:
        """Tokenise; pad to the longest member, or to ``pad_to`` (e.g. 77) if given."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        encodings = self._tokenizer.encode_batch([str(text) for text in texts])
        width = max((len(encoding.ids) for encoding in encodings), default=0)
        width = max(width, pad_to or 0)
        input_ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            input_ids[row, : len(encoding.ids)] = encoding.ids
            attention_mask[row, : len(encoding.ids)] = 1
        return TokenBatch(input_ids, attention_mask)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def byte_level_clip_tokenizer(merges: Sequence[tuple[str, str]] = ()) -> object:
    """A CLIP-format tokenizer that needs no download: the 512 byte symbols of CLIP's BPE
    (each byte, alone and word-final) plus the given merges and the two special tokens.

    Laid out like CLIP's own vocabulary, so ids stay below 49408. Without merges it spells
    every word letter by letter; used for ``ARCH::random`` models and in tests.
    """
    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [symbol + "</w>" for symbol in symbols]
    tokens += ["".join(pair) for pair in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    return CLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=CONTEXT_LENGTH)
