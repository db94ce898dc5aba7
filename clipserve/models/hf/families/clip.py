"""OpenAI CLIP and its open re-trainings (transformers' ``CLIPModel``).

Text: CLIP's byte-level BPE, 77 tokens, a causal tower pooled at the end token, so
per-batch padding is exact. Images: shorter side to the input size, centre crop, CLIP
mean/std. Scoring: softmax over the candidates of ``exp(logit_scale) * cosine`` (100 for
the published checkpoints).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clipserve.models.hf.core.spec import Family, ImageRule, TextRule, tower
from clipserve.models.scoring import SOFTMAX

CONTEXT_LENGTH = 77
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
VOCAB_SIZE = 49408
#: the stand-in's start token follows its 512 byte symbols
STAND_IN_BOS = 512


def clip_arch(
    vision: tuple[int, int, int, int],
    text: tuple[int, int, int],
    patch: int,
    image_size: int,
    projection_dim: int,
    act: str,
) -> dict[str, Any]:
    """CLIPConfig kwargs: vision (width, layers, heads, mlp), text (width, layers, heads)."""
    v_width, v_layers, v_heads, v_mlp = vision
    t_width, t_layers, t_heads = text
    return {
        "projection_dim": projection_dim,
        "vision_config": tower(
            v_width, v_layers, v_heads, v_mlp,
            patch_size=patch, image_size=image_size, hidden_act=act,
        ),
        "text_config": tower(
            t_width, t_layers, t_heads, 4 * t_width,
            max_position_embeddings=CONTEXT_LENGTH, vocab_size=VOCAB_SIZE, hidden_act=act,
            # where the stand-in tokenizer (no merges) has its special tokens
            bos_token_id=STAND_IN_BOS, eos_token_id=STAND_IN_BOS + 1,
            pad_token_id=STAND_IN_BOS + 1,
        ),
    }  # fmt: skip


#: architecture -> CLIPConfig kwargs (sizes as in the published checkpoints' configs)
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "ViT-B-32": clip_arch((768, 12, 12, 3072), (512, 12, 8), 32, 224, 512, "quick_gelu"),
    "ViT-B-16": clip_arch((768, 12, 12, 3072), (512, 12, 8), 16, 224, 512, "quick_gelu"),
    "ViT-L-14": clip_arch((1024, 24, 16, 4096), (768, 12, 12), 14, 224, 768, "quick_gelu"),
    "ViT-L-14-336": clip_arch((1024, 24, 16, 4096), (768, 12, 12), 14, 336, 768, "quick_gelu"),
    "ViT-H-14": clip_arch((1280, 32, 16, 5120), (1024, 24, 16), 14, 224, 1024, "gelu"),
}

#: CLIP-as-service name -> Hugging Face repo
PRETRAINED: dict[str, str] = {
    "ViT-B-32::openai": "openai/clip-vit-base-patch32",
    "ViT-B-16::openai": "openai/clip-vit-base-patch16",
    "ViT-L-14::openai": "openai/clip-vit-large-patch14",
    "ViT-L-14-336::openai": "openai/clip-vit-large-patch14-336",
    "ViT-B-32::laion2b_s34b_b79k": "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    "ViT-L-14::laion2b_s32b_b82k": "laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
    "ViT-H-14::laion2b_s32b_b79k": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
}


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


def byte_level_clip_tokenizer(merges: Sequence[tuple[str, str]] = ()) -> Any:
    """A CLIP-format tokenizer that needs no download: the 512 byte symbols of CLIP's BPE
    (each byte, alone and word-final) plus the given merges and the two special tokens.

    Laid out like CLIP's own vocabulary (specials last), so ids stay below 49408. Without
    merges it spells every word letter by letter; used for ``ARCH::random`` models and in
    tests.
    """
    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [symbol + "</w>" for symbol in symbols]
    tokens += ["".join(pair) for pair in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    return CLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=CONTEXT_LENGTH)


FAMILY = Family(
    key="clip",
    label="CLIP",
    model_type="clip",
    model_class="CLIPModel",
    text=TextRule(context_length=CONTEXT_LENGTH),
    image=ImageRule(),
    scoring=SOFTMAX,
    languages="en",
    architectures=ARCHITECTURES,
    pretrained=PRETRAINED,
    stand_in_tokenizer=byte_level_clip_tokenizer,
)
