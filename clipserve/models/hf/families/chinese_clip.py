"""Chinese-CLIP (transformers' ``ChineseCLIPModel``): a CLIP vision tower with a Chinese
RoBERTa-wwm text tower.

Text: BERT WordPiece (Chinese characters one by one), 52 tokens as Chinese-CLIP was trained
with; a bidirectional tower that gets the attention mask and pools the ``[CLS]`` token, so
per-batch padding is exact. Images: resized straight to the square input size with CLIP's
mean/std, as Chinese-CLIP's processor config says. Scoring: softmax over the candidates of
``exp(logit_scale) * cosine``.
"""

from __future__ import annotations

from typing import Any

from clipserve.models.hf.core.spec import Family, ImageRule, TextRule, tower
from clipserve.models.hf.core.stand_in import byte_tokenizer
from clipserve.models.scoring import SOFTMAX

CONTEXT_LENGTH = 52
BERT_CHINESE_VOCAB = 21128
#: bert-base-chinese's special ids
SPECIALS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}


def cn_clip_arch(
    vision: tuple[int, int, int, int],
    text: tuple[int, int, int, int],
    patch: int,
    image_size: int,
    projection_dim: int,
) -> dict[str, Any]:
    """ChineseCLIPConfig kwargs: each tower as (width, layers, heads, mlp)."""
    return {
        "projection_dim": projection_dim,
        "vision_config": tower(*vision, patch_size=patch, image_size=image_size),
        "text_config": tower(
            *text, vocab_size=BERT_CHINESE_VOCAB, max_position_embeddings=512,
            type_vocab_size=2, pad_token_id=0, bos_token_id=101, eos_token_id=102,
        ),
    }  # fmt: skip


BASE_TEXT = (768, 12, 12, 3072)
ARCHITECTURES = {
    "CN-CLIP/ViT-B-16": cn_clip_arch((768, 12, 12, 3072), BASE_TEXT, 16, 224, 512),
    "CN-CLIP/ViT-L-14": cn_clip_arch((1024, 24, 16, 4096), BASE_TEXT, 14, 224, 768),
    "CN-CLIP/ViT-L-14-336": cn_clip_arch((1024, 24, 16, 4096), BASE_TEXT, 14, 336, 768),
    "CN-CLIP/ViT-H-14": cn_clip_arch(
        (1280, 32, 16, 5120), (1024, 24, 16, 4096), 14, 224, 1024
    ),
}
#: CLIP-as-service's names for Chinese-CLIP (no ``::PRETRAINED`` part)
PRETRAINED = {
    "CN-CLIP/ViT-B-16": "OFA-Sys/chinese-clip-vit-base-patch16",
    "CN-CLIP/ViT-L-14": "OFA-Sys/chinese-clip-vit-large-patch14",
    "CN-CLIP/ViT-L-14-336": "OFA-Sys/chinese-clip-vit-large-patch14-336px",
    "CN-CLIP/ViT-H-14": "OFA-Sys/chinese-clip-vit-huge-patch14",
}


def stand_in() -> Any:
    """BERT's layout: ``[CLS] text [SEP]``, padded with ``[PAD]``."""
    return byte_tokenizer(
        SPECIALS, prefix=["[CLS]"], suffix=["[SEP]"], pad="[PAD]", unk="[UNK]",
        model_max_length=CONTEXT_LENGTH,
    )  # fmt: skip


FAMILY = Family(
    key="chinese_clip",
    label="Chinese-CLIP",
    model_type="chinese_clip",
    model_class="ChineseCLIPModel",
    text=TextRule(context_length=CONTEXT_LENGTH, feed_mask=True),
    image=ImageRule(squash=True),
    scoring=SOFTMAX,
    languages="zh",
    architectures=ARCHITECTURES,
    pretrained=PRETRAINED,
    stand_in_tokenizer=stand_in,
)
