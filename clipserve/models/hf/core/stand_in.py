"""Tokenizers for ``ARCH::random`` models, built in memory: no vocabulary file, no download.

A stand-in keeps the real tokenizer's special tokens at their real ids and wraps texts the
same way (``<s> text </s>``, ``[CLS] text [SEP]``, ``text </s>``), so the model sees the
token layout it was built for; the text itself is spelled byte by byte (256 byte symbols
after the special tokens), about one token per character.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def byte_tokenizer(
    specials: Mapping[str, int],
    *,
    prefix: Sequence[str] = (),
    suffix: Sequence[str] = (),
    pad: str,
    unk: str,
    model_max_length: int,
    padding_side: str = "right",
) -> Any:
    """A transformers fast tokenizer: ``specials`` (token -> id) where the real one has
    them, unused fillers below the highest, then the byte symbols; texts are wrapped in
    ``prefix`` and ``suffix`` tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    by_id = {index: token for token, index in specials.items()}
    top = max(by_id) + 1
    vocab = {by_id.get(index, f"<unused{index}>"): index for index in range(top)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    template = " ".join([*prefix, "$A", *suffix])
    used = [(token, specials[token]) for token in dict.fromkeys([*prefix, *suffix])]
    backend.post_processor = processors.TemplateProcessing(single=template, special_tokens=used)
    backend.add_special_tokens(list(specials))
    named = {"pad_token": pad, "unk_token": unk}
    if prefix:
        named["bos_token"] = prefix[0]
    if suffix:
        named["eos_token"] = suffix[-1]
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=model_max_length,
        padding_side=padding_side,
        **named,
    )


#: XLM-R's (and XLM-V's) special ids
XLM_R_SPECIALS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}


def xlm_r_tokenizer(model_max_length: int) -> Any:
    """XLM-R's layout: ``<s> text </s>``, padded with ``<pad>`` (MetaCLIP 2, AltCLIP)."""
    return byte_tokenizer(
        XLM_R_SPECIALS, prefix=["<s>"], suffix=["</s>"], pad="<pad>", unk="<unk>",
        model_max_length=model_max_length,
    )  # fmt: skip
