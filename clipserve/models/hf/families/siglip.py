"""SigLIP, SigLIP 2 at fixed resolution (transformers' ``SiglipModel``; the SigLIP 2
FixRes checkpoints use the same class) and SigLIP 2 NaFlex (``Siglip2Model``).

Text: 64 tokens, always padded to 64. The tower has no causal mask and no padding mask: it
attends to every position and pools the last one, so the padding is part of the input it
was trained on, and per-batch padding would change the embeddings. SigLIP's own tokenizer
is SentencePiece on canonicalised text (lowercase, punctuation removed); SigLIP 2's is
Gemma's, on lowercased text. Images: resized straight to the square input size, pixels
scaled to [-1, 1] (mean and std 0.5); pooled by an attention head. NaFlex keeps the
image's aspect ratio instead: as many patches as fit in its budget (256 by default), the
position embeddings resized to that grid. Scoring: each pair on its own,
``sigmoid(exp(logit_scale) * cosine + logit_bias)``.
"""

from __future__ import annotations

from typing import Any

from clipserve.models.hf.core.spec import HALF, Family, ImageRule, TextRule, tower
from clipserve.models.hf.core.stand_in import byte_tokenizer
from clipserve.models.scoring import SIGMOID

TEXT_LENGTH = 64
IMAGES = ImageRule(mean=HALF, std=HALF, squash=True)


def siglip_arch(
    widths: tuple[int, int, int, int], patch: int, image_size: int, vocab: int, *, gemma: bool
) -> dict[str, Any]:
    """SiglipConfig kwargs; both towers share (width, layers, heads, mlp) in every release."""
    shape = tower(*widths)
    # special ids where the real tokenizers have them (and the stand-ins below too)
    ids = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2} if gemma else {
        "pad_token_id": 1, "eos_token_id": 1, "bos_token_id": 1
    }  # fmt: skip
    return {
        "text_config": {
            **shape, "vocab_size": vocab, "max_position_embeddings": TEXT_LENGTH, **ids
        },
        "vision_config": {**shape, "patch_size": patch, "image_size": image_size},
    }


BASE = (768, 12, 12, 3072)
LARGE = (1024, 24, 16, 4096)
SO400M = (1152, 27, 16, 4304)
ENGLISH_VOCAB, I18N_VOCAB, GEMMA_VOCAB = 32000, 250000, 256000

SIGLIP_ARCHITECTURES = {
    "ViT-B-16-SigLIP": siglip_arch(BASE, 16, 224, ENGLISH_VOCAB, gemma=False),
    "ViT-B-16-SigLIP-256": siglip_arch(BASE, 16, 256, ENGLISH_VOCAB, gemma=False),
    "ViT-B-16-SigLIP-384": siglip_arch(BASE, 16, 384, ENGLISH_VOCAB, gemma=False),
    "ViT-B-16-SigLIP-512": siglip_arch(BASE, 16, 512, ENGLISH_VOCAB, gemma=False),
    "ViT-B-16-SigLIP-i18n-256": siglip_arch(BASE, 16, 256, I18N_VOCAB, gemma=False),
    "ViT-L-16-SigLIP-256": siglip_arch(LARGE, 16, 256, ENGLISH_VOCAB, gemma=False),
    "ViT-L-16-SigLIP-384": siglip_arch(LARGE, 16, 384, ENGLISH_VOCAB, gemma=False),
    "ViT-SO400M-14-SigLIP": siglip_arch(SO400M, 14, 224, ENGLISH_VOCAB, gemma=False),
    "ViT-SO400M-14-SigLIP-384": siglip_arch(SO400M, 14, 384, ENGLISH_VOCAB, gemma=False),
}
SIGLIP_PRETRAINED = {
    "ViT-B-16-SigLIP::webli": "google/siglip-base-patch16-224",
    "ViT-B-16-SigLIP-256::webli": "google/siglip-base-patch16-256",
    "ViT-B-16-SigLIP-384::webli": "google/siglip-base-patch16-384",
    "ViT-B-16-SigLIP-512::webli": "google/siglip-base-patch16-512",
    "ViT-B-16-SigLIP-i18n-256::webli": "google/siglip-base-patch16-256-multilingual",
    "ViT-L-16-SigLIP-256::webli": "google/siglip-large-patch16-256",
    "ViT-L-16-SigLIP-384::webli": "google/siglip-large-patch16-384",
    "ViT-SO400M-14-SigLIP::webli": "google/siglip-so400m-patch14-224",
    "ViT-SO400M-14-SigLIP-384::webli": "google/siglip-so400m-patch14-384",
}

SIGLIP2_ARCHITECTURES = {
    "ViT-B-16-SigLIP2": siglip_arch(BASE, 16, 224, GEMMA_VOCAB, gemma=True),
    "ViT-B-16-SigLIP2-256": siglip_arch(BASE, 16, 256, GEMMA_VOCAB, gemma=True),
    "ViT-B-16-SigLIP2-384": siglip_arch(BASE, 16, 384, GEMMA_VOCAB, gemma=True),
    "ViT-B-16-SigLIP2-512": siglip_arch(BASE, 16, 512, GEMMA_VOCAB, gemma=True),
    "ViT-B-32-SigLIP2-256": siglip_arch(BASE, 32, 256, GEMMA_VOCAB, gemma=True),
    "ViT-L-16-SigLIP2-256": siglip_arch(LARGE, 16, 256, GEMMA_VOCAB, gemma=True),
    "ViT-L-16-SigLIP2-384": siglip_arch(LARGE, 16, 384, GEMMA_VOCAB, gemma=True),
    "ViT-L-16-SigLIP2-512": siglip_arch(LARGE, 16, 512, GEMMA_VOCAB, gemma=True),
    "ViT-SO400M-14-SigLIP2": siglip_arch(SO400M, 14, 224, GEMMA_VOCAB, gemma=True),
    "ViT-SO400M-14-SigLIP2-378": siglip_arch(SO400M, 14, 384, GEMMA_VOCAB, gemma=True),
    "ViT-SO400M-16-SigLIP2-256": siglip_arch(SO400M, 16, 256, GEMMA_VOCAB, gemma=True),
    "ViT-SO400M-16-SigLIP2-384": siglip_arch(SO400M, 16, 384, GEMMA_VOCAB, gemma=True),
    "ViT-SO400M-16-SigLIP2-512": siglip_arch(SO400M, 16, 512, GEMMA_VOCAB, gemma=True),
}
SIGLIP2_PRETRAINED = {
    "ViT-B-16-SigLIP2::webli": "google/siglip2-base-patch16-224",
    "ViT-B-16-SigLIP2-256::webli": "google/siglip2-base-patch16-256",
    "ViT-B-16-SigLIP2-384::webli": "google/siglip2-base-patch16-384",
    "ViT-B-16-SigLIP2-512::webli": "google/siglip2-base-patch16-512",
    "ViT-B-32-SigLIP2-256::webli": "google/siglip2-base-patch32-256",
    "ViT-L-16-SigLIP2-256::webli": "google/siglip2-large-patch16-256",
    "ViT-L-16-SigLIP2-384::webli": "google/siglip2-large-patch16-384",
    "ViT-L-16-SigLIP2-512::webli": "google/siglip2-large-patch16-512",
    "ViT-SO400M-14-SigLIP2::webli": "google/siglip2-so400m-patch14-224",
    "ViT-SO400M-14-SigLIP2-378::webli": "google/siglip2-so400m-patch14-384",
    "ViT-SO400M-16-SigLIP2-256::webli": "google/siglip2-so400m-patch16-256",
    "ViT-SO400M-16-SigLIP2-384::webli": "google/siglip2-so400m-patch16-384",
    "ViT-SO400M-16-SigLIP2-512::webli": "google/siglip2-so400m-patch16-512",
}


def naflex_arch(widths: tuple[int, int, int, int], patch: int, patches: int) -> dict[str, Any]:
    """Siglip2Config kwargs: the SigLIP 2 text tower, a vision tower on a patch budget."""
    text = siglip_arch(widths, patch, 224, GEMMA_VOCAB, gemma=True)["text_config"]
    return {
        "text_config": text,
        "vision_config": {**tower(*widths), "patch_size": patch, "num_patches": patches},
    }


NAFLEX_ARCHITECTURES = {
    "ViT-B-16-SigLIP2-NaFlex": naflex_arch(BASE, 16, 256),
    "ViT-SO400M-16-SigLIP2-NaFlex": naflex_arch(SO400M, 16, 256),
}
NAFLEX_PRETRAINED = {
    "ViT-B-16-SigLIP2-NaFlex::webli": "google/siglip2-base-patch16-naflex",
    "ViT-SO400M-16-SigLIP2-NaFlex::webli": "google/siglip2-so400m-patch16-naflex",
}


def siglip_stand_in() -> Any:
    """SigLIP's layout: ``text </s>``, padded with ``</s>`` (id 1)."""
    specials = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    return byte_tokenizer(
        specials, suffix=["</s>"], pad="</s>", unk="<unk>", model_max_length=TEXT_LENGTH
    )


def siglip2_stand_in() -> Any:
    """Gemma's special ids (``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2): ``text <eos>``."""
    specials = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    return byte_tokenizer(
        specials, suffix=["<eos>"], pad="<pad>", unk="<unk>", model_max_length=TEXT_LENGTH
    )


SIGLIP = Family(
    key="siglip",
    label="SigLIP",
    model_type="siglip",
    model_class="SiglipModel",
    text=TextRule(context_length=TEXT_LENGTH, fixed_length=True),
    image=IMAGES,
    scoring=SIGMOID,
    languages="en",
    arch_languages={"ViT-B-16-SigLIP-i18n-256": "multilingual"},
    architectures=SIGLIP_ARCHITECTURES,
    pretrained=SIGLIP_PRETRAINED,
    stand_in_tokenizer=siglip_stand_in,
    tokenizer_classes=("SiglipTokenizer",),
)

SIGLIP2 = Family(
    key="siglip2",
    label="SigLIP 2",
    model_type="siglip",
    model_class="SiglipModel",
    text=TextRule(context_length=TEXT_LENGTH, fixed_length=True, lowercase=True),
    image=IMAGES,
    scoring=SIGMOID,
    languages="multilingual",
    architectures=SIGLIP2_ARCHITECTURES,
    pretrained=SIGLIP2_PRETRAINED,
    stand_in_tokenizer=siglip2_stand_in,
    tokenizer_classes=("GemmaTokenizer", "GemmaTokenizerFast", "Siglip2Tokenizer"),
)

SIGLIP2_NAFLEX = Family(
    key="siglip2_naflex",
    label="SigLIP 2 NaFlex",
    model_type="siglip2",
    model_class="Siglip2Model",
    text=SIGLIP2.text,
    image=ImageRule(mean=HALF, std=HALF, patches=True),
    scoring=SIGMOID,
    languages="multilingual",
    architectures=NAFLEX_ARCHITECTURES,
    pretrained=NAFLEX_PRETRAINED,
    stand_in_tokenizer=siglip2_stand_in,
)
