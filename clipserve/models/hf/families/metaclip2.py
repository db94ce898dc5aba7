"""MetaCLIP 2 worldwide (transformers' ``MetaClip2Model``): CLIP's architecture trained on
300+ languages, with the XLM-V vocabulary (901,629 tokens).

Text: 77 tokens, a causal tower pooled at the first end token (``</s>``), so per-batch
padding is exact. Images and scoring as CLIP: shorter side + centre crop, CLIP mean/std;
softmax over the candidates of ``exp(logit_scale) * cosine``.
"""

from __future__ import annotations

from typing import Any

from clipserve.models.hf.core.spec import Family, ImageRule, TextRule, tower
from clipserve.models.hf.core.stand_in import xlm_r_tokenizer
from clipserve.models.scoring import SOFTMAX

CONTEXT_LENGTH = 77
XLM_V_VOCAB = 901629


def metaclip2_arch(
    vision: tuple[int, int, int, int],
    text: tuple[int, int, int, int],
    patch: int,
    image_size: int,
    projection_dim: int,
    act: str = "gelu",
) -> dict[str, Any]:
    """MetaClip2Config kwargs: each tower as (width, layers, heads, mlp)."""
    return {
        "projection_dim": projection_dim,
        "vision_config": tower(*vision, patch_size=patch, image_size=image_size, hidden_act=act),
        "text_config": tower(
            *text, vocab_size=XLM_V_VOCAB, max_position_embeddings=CONTEXT_LENGTH,
            hidden_act=act, bos_token_id=0, pad_token_id=1, eos_token_id=2,
        ),
    }  # fmt: skip


B_TEXT = (512, 12, 8, 2048)
ARCHITECTURES = {
    "ViT-B-32-worldwide": metaclip2_arch((768, 12, 12, 3072), B_TEXT, 32, 224, 512),
    "ViT-B-16-worldwide": metaclip2_arch((768, 12, 12, 3072), B_TEXT, 16, 224, 512),
    "ViT-L-14-worldwide": metaclip2_arch((1024, 24, 16, 4096), (768, 12, 12, 3072), 14, 224, 768),
    "ViT-H-14-quickgelu-worldwide": metaclip2_arch(
        (1280, 32, 16, 5120), (1024, 24, 16, 4096), 14, 224, 1024, act="quick_gelu"
    ),
    "ViT-H-14-worldwide-378": metaclip2_arch(
        (1280, 32, 16, 5120), (1024, 24, 16, 4096), 14, 378, 1024
    ),
    "ViT-bigG-14-worldwide": metaclip2_arch(
        (1664, 48, 16, 8192), (1280, 32, 20, 5120), 14, 224, 1280
    ),
}
PRETRAINED = {
    "ViT-B-32-worldwide::metaclip2_worldwide": "facebook/metaclip-2-worldwide-b32",
    "ViT-B-16-worldwide::metaclip2_worldwide": "facebook/metaclip-2-worldwide-b16",
    "ViT-L-14-worldwide::metaclip2_worldwide": "facebook/metaclip-2-worldwide-l14",
    "ViT-H-14-quickgelu-worldwide::metaclip2_worldwide": (
        "facebook/metaclip-2-worldwide-huge-quickgelu"
    ),
    "ViT-H-14-worldwide-378::metaclip2_worldwide": "facebook/metaclip-2-worldwide-huge-378",
    "ViT-bigG-14-worldwide::metaclip2_worldwide": "facebook/metaclip-2-worldwide-giant",
}


def stand_in() -> Any:
    return xlm_r_tokenizer(CONTEXT_LENGTH)


FAMILY = Family(
    key="metaclip2",
    label="MetaCLIP 2",
    model_type="metaclip_2",
    model_class="MetaClip2Model",
    text=TextRule(context_length=CONTEXT_LENGTH),
    image=ImageRule(),
    scoring=SOFTMAX,
    languages="300+ languages",
    architectures=ARCHITECTURES,
    pretrained=PRETRAINED,
    stand_in_tokenizer=stand_in,
)
