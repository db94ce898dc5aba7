"""Tiny random checkpoints of every dual-encoder family, in HF format, built offline.

Each is the family's real transformers model class, tokenizer class and (PIL) image
processor class, with a few layers and small widths, saved with ``save_pretrained``. The
tokenizers are built here from vocabularies written or trained in the test (SentencePiece
for SigLIP, a BPE for SigLIP 2's Gemma tokenizer, unigram vocabularies for XLM-R/XLM-V,
WordPiece for BERT), since no vocabulary file may be downloaded.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tests.models.clip_testkit import IMAGE_SIZE, VISION, save_tiny_clip

TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
}
PROJECTION = 24
#: whole-word pieces of the unigram and WordPiece vocabularies
WORDS = " ".join([
    "a photo of the cat dog sitting on mat red car river two dogs playing in snow",
    "quick brown fox jumps over lazy hello world this is un chat une",
    "猫 狗 照片 一只 在 河边 的 红色 汽车",
]).split()  # fmt: skip
CORPUS = [
    "a photo of a cat", "two dogs playing in the snow", "the quick brown fox jumps over the dog",
    "a red car parked by the river", "hello world this is a photo", "un chat une photo",
    "一只猫的照片", "河边的红色汽车", "a cat sitting on the mat",
]  # fmt: skip


def _seeded(seed: int, build: Callable[[], Any]) -> Any:
    torch.manual_seed(seed)
    return build().eval()


def _siglip_sentencepiece(directory: Path) -> Any:
    import sentencepiece
    from transformers import SiglipTokenizer

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 5), model_writer=model, vocab_size=80,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        character_coverage=1.0, hard_vocab_limit=False, minloglevel=2,
    )  # fmt: skip
    path = directory / "spiece.model"
    path.write_bytes(model.getvalue())
    return SiglipTokenizer(str(path))


def _gemma_bpe() -> Any:
    """A Gemma-format BPE (SigLIP 2's tokenizer class) with Gemma's special ids."""
    from tokenizers import Tokenizer, models, normalizers, trainers
    from transformers import GemmaTokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.normalizer = normalizers.Replace(" ", "▁")
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=specials, show_progress=False)
    bpe.train_from_iterator([text.lower() for text in CORPUS] * 5, trainer)
    state = bpe.model.__getstate__()
    import json

    model = json.loads(state if isinstance(state, str) else state.decode())
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return GemmaTokenizer(vocab=model["vocab"], merges=merges)


def _xlmr_unigram() -> Any:
    """An XLM-R-format unigram tokenizer (XLM-R's and XLM-V's special ids)."""
    from transformers import XLMRobertaTokenizer

    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("▁" + word, -2.0 - 0.01 * index) for index, word in enumerate(WORDS)]
    letters = sorted({char for text in CORPUS for char in text.replace(" ", "")})
    pieces += [(char, -6.0) for char in letters] + [("▁", -4.0)]
    return XLMRobertaTokenizer(vocab=pieces)


def _bert_wordpiece(directory: Path) -> Any:
    from transformers import BertTokenizer

    letters = sorted({char for text in CORPUS for char in text.replace(" ", "")})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *letters]
    vocab += [f"##{char}" for char in letters if char.isascii()]
    path = directory / "vocab.txt"
    path.write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    return BertTokenizer(str(path))


def save_siglip(directory: Path, *, seed: int = 7, gemma: bool = False) -> Path:
    from transformers import SiglipConfig, SiglipModel
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _gemma_bpe() if gemma else _siglip_sentencepiece(directory)
    text = {**TEXT, "vocab_size": len(tokenizer), "max_position_embeddings": 64}
    text.update(projection_size=VISION["hidden_size"], pad_token_id=tokenizer.pad_token_id)
    text.update(eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    config = SiglipConfig(text_config=text, vision_config=dict(VISION))
    model = _seeded(seed, lambda: SiglipModel(config))
    with torch.no_grad():  # a bias and scale unlike the initial ones, so scoring is tested
        model.logit_scale.fill_(2.3)
        model.logit_bias.fill_(-1.7)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(
        directory
    )
    return directory


def save_siglip2_naflex(directory: Path, *, seed: int = 9) -> Path:
    """SigLIP 2 NaFlex: 8-pixel patches, a budget of 16 (a 4x4 position grid)."""
    from transformers import Siglip2Config, Siglip2Model
    from transformers.models.siglip2.image_processing_pil_siglip2 import (
        Siglip2ImageProcessorPil,
    )

    tokenizer = _gemma_bpe()
    text = {**TEXT, "vocab_size": len(tokenizer), "max_position_embeddings": 64}
    text.update(projection_size=VISION["hidden_size"], pad_token_id=tokenizer.pad_token_id)
    text.update(eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    vision = {key: value for key, value in VISION.items() if key != "image_size"}
    vision["num_patches"] = 16
    config = Siglip2Config(text_config=text, vision_config=vision)
    model = _seeded(seed, lambda: Siglip2Model(config))
    with torch.no_grad():
        model.logit_scale.fill_(2.1)
        model.logit_bias.fill_(-0.9)
    images = Siglip2ImageProcessorPil(patch_size=8, max_num_patches=16)
    return _save(directory, model, tokenizer, images)


def save_metaclip2(directory: Path, *, seed: int = 11) -> Path:
    from transformers import MetaClip2Config, MetaClip2Model

    tokenizer = _xlmr_unigram()
    text = {**TEXT, "vocab_size": len(tokenizer), "max_position_embeddings": 77}
    text.update(bos_token_id=0, pad_token_id=1, eos_token_id=2)
    config = MetaClip2Config(
        text_config=text, vision_config=dict(VISION), projection_dim=PROJECTION
    )
    model = _seeded(seed, lambda: MetaClip2Model(config))
    return _save(directory, model, tokenizer, _clip_images())


def save_chinese_clip(directory: Path, *, seed: int = 13) -> Path:
    from transformers import ChineseCLIPConfig, ChineseCLIPModel
    from transformers.models.chinese_clip.image_processing_pil_chinese_clip import (
        ChineseCLIPImageProcessorPil,
    )

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _bert_wordpiece(directory)
    text = {**TEXT, "vocab_size": len(tokenizer), "max_position_embeddings": 64}
    text.update(type_vocab_size=2, pad_token_id=0)
    config = ChineseCLIPConfig(
        text_config=text, vision_config=dict(VISION), projection_dim=PROJECTION
    )
    # as the published Chinese-CLIP processor configs: a square resize, no crop
    images = ChineseCLIPImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_center_crop=False
    )
    return _save(directory, _seeded(seed, lambda: ChineseCLIPModel(config)), tokenizer, images)


def save_altclip(directory: Path, *, seed: int = 17) -> Path:
    from transformers import AltCLIPConfig, AltCLIPModel

    tokenizer = _xlmr_unigram()
    text = {**TEXT, "vocab_size": len(tokenizer), "max_position_embeddings": 80}
    text.update(type_vocab_size=1, project_dim=PROJECTION, pad_token_id=1, bos_token_id=0)
    text.update(eos_token_id=2)
    config = AltCLIPConfig(
        text_config=text, vision_config=dict(VISION), projection_dim=PROJECTION
    )
    model = _seeded(seed, lambda: AltCLIPModel(config))
    return _save(directory, model, tokenizer, _clip_images())


def _clip_images() -> Any:
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )


def _save(directory: Path, model: Any, tokenizer: Any, images: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    images.save_pretrained(directory)
    return directory


#: family key -> a function writing its tiny checkpoint into a directory
SAVERS: dict[str, Callable[[Path], Path]] = {
    "clip": save_tiny_clip,
    "siglip": save_siglip,
    "siglip2": lambda directory: save_siglip(directory, gemma=True),
    "siglip2_naflex": save_siglip2_naflex,
    "metaclip2": save_metaclip2,
    "chinese_clip": save_chinese_clip,
    "altclip": save_altclip,
}
FAMILY_KEYS = list(SAVERS)
