"""A tiny random CLIP checkpoint in HF format, built offline for the CLIP tests.

No CLIP BPE vocabulary ships with any installed package and there is no network, so the
tokenizer is CLIP's byte-level BPE layout (512 byte symbols, specials last) plus a few
merges written here; everything else is a real ``CLIPModel`` / ``CLIPImageProcessorPil``
saved with ``save_pretrained``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from clipserve.models.hf.families.clip import byte_level_clip_tokenizer

MERGES = [("t", "h"), ("th", "e</w>"), ("c", "a"), ("ca", "t</w>"), ("o", "f</w>")]
IMAGE_SIZE = 32
#: the tiny vision tower of every family's test checkpoint
VISION = {
    "hidden_size": 48,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": IMAGE_SIZE,
    "patch_size": 8,
}


def save_tiny_clip(directory: Path, *, seed: int = 1234, legacy_eos: bool = False) -> Path:
    """Write config, safetensors weights, tokenizer and preprocessor config to ``directory``.

    ``legacy_eos`` sets ``eos_token_id = 2`` as in pre-2023 OpenAI configs, which makes
    transformers pool at the largest token id instead of the first end token.
    """
    tokenizer = byte_level_clip_tokenizer(MERGES)
    eos = 2 if legacy_eos else tokenizer.eos_token_id
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": eos,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config=dict(VISION),
        projection_dim=24,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor.save_pretrained(directory)
    return directory
