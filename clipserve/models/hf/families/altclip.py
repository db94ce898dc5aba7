"""AltCLIP (transformers' ``AltCLIPModel``): CLIP ViT-L/14's vision tower with an
XLM-RoBERTa-large text tower distilled from CLIP's, bilingual (en, zh) or multilingual
(m9: 9 languages, m18: 18).

Text: XLM-R's SentencePiece unigram, 77 tokens; a bidirectional tower that gets the
attention mask and pools the first token, so per-batch padding is exact. Images and
scoring as CLIP: shorter side + centre crop, CLIP mean/std; softmax over the candidates of
``exp(logit_scale) * cosine``.
"""

from __future__ import annotations

from typing import Any

from clipserve.models.hf.core.spec import Family, ImageRule, TextRule, tower
from clipserve.models.hf.core.stand_in import xlm_r_tokenizer
from clipserve.models.scoring import SOFTMAX

CONTEXT_LENGTH = 77
XLM_R_VOCAB = 250002

ARCH = {
    "projection_dim": 768,
    "vision_config": tower(1024, 24, 16, 4096, patch_size=14, image_size=224),
    "text_config": tower(
        1024, 24, 16, 4096, vocab_size=XLM_R_VOCAB, max_position_embeddings=514,
        type_vocab_size=1, project_dim=768, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    ),
}  # fmt: skip
PRETRAINED = {
    "AltCLIP/ViT-L-14": "BAAI/AltCLIP",
    "AltCLIP-m9/ViT-L-14": "BAAI/AltCLIP-m9",
    "AltCLIP-m18/ViT-L-14": "BAAI/AltCLIP-m18",
}
#: the three releases share one architecture
ARCHITECTURES = dict.fromkeys(PRETRAINED, ARCH)


def stand_in() -> Any:
    return xlm_r_tokenizer(CONTEXT_LENGTH)


FAMILY = Family(
    key="altclip",
    label="AltCLIP",
    model_type="altclip",
    model_class="AltCLIPModel",
    text=TextRule(context_length=CONTEXT_LENGTH, feed_mask=True),
    image=ImageRule(),
    scoring=SOFTMAX,
    languages="en, zh",
    architectures=ARCHITECTURES,
    pretrained=PRETRAINED,
    stand_in_tokenizer=stand_in,
    arch_languages={
        "AltCLIP-m9/ViT-L-14": "9 languages",
        "AltCLIP-m18/ViT-L-14": "18 languages",
    },
)
