"""What sets one dual-encoder family apart, as a small spec the shared core reads.

Every family here is a transformers model with ``get_text_features`` and
``get_image_features`` whose ``pooler_output`` is the embedding; the families differ in
their tokenizer and text length, how padding may be applied, image preprocessing and how
a pair is scored. Pooling is the model's own (end token, first token or attention head).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

#: CLIP's normalisation (OpenAI's dataset statistics)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: SigLIP's: pixels scaled to [-1, 1]
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class TextRule:
    """How texts become token ids for one family.

    Padding is exact (the embedding does not depend on how much padding follows) when the
    tower never looks at padded positions: a causal tower pooled at the end token (CLIP,
    MetaCLIP 2), or a bidirectional tower that gets the attention mask (Chinese-CLIP,
    AltCLIP). SigLIP's tower attends to every position and pools the last one, so its
    texts are always padded to the length it was trained with (``fixed_length``).
    """

    #: tokens kept, special tokens included; longer texts are truncated
    context_length: int
    #: pad every text to ``context_length`` (the tower reads the padding)
    fixed_length: bool = False
    #: the text tower gets ``attention_mask`` (padding masked out)
    feed_mask: bool = False
    #: lowercase texts before tokenising (SigLIP 2 was trained on lowercased text)
    lowercase: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> TextRule:
        return cls(**{key: value[key] for key in cls.__dataclass_fields__ if key in value})


@dataclass(frozen=True)
class ImageRule:
    """Image preprocessing defaults, where a checkpoint's preprocessor config is silent."""

    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    #: resize straight to the square (SigLIP, Chinese-CLIP); else shorter side + centre crop
    squash: bool = False
    #: NaFlex: a variable grid of patches at the image's own aspect ratio (SigLIP 2 NaFlex)
    patches: bool = False


@dataclass(frozen=True)
class Family:
    """One model family: its transformers class, input rules, scoring and names."""

    #: short key ("siglip2"), stored in ONNX exports
    key: str
    #: shown to users ("SigLIP 2")
    label: str
    #: ``model_type`` in the checkpoints' config.json
    model_type: str
    #: the transformers class holding both towers
    model_class: str
    text: TextRule
    image: ImageRule
    #: ``models.scoring`` rule: softmax or sigmoid
    scoring: str
    #: the languages the text tower was trained on, in words
    languages: str
    #: ARCH -> transformers config kwargs of the published architecture (``ARCH::random``)
    architectures: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: published name -> Hugging Face repo; a name's architecture is the part before ``::``
    pretrained: Mapping[str, str] = field(default_factory=dict)
    #: an HF tokenizer for ``ARCH::random`` models, built without any file or download
    stand_in_tokenizer: Callable[[], Any] | None = None
    #: tokenizer classes (tokenizer_config.json) that tell this family from another one
    #: with the same ``model_type``; empty: any
    tokenizer_classes: tuple[str, ...] = ()
    #: ARCH -> its languages, where they differ from the family's
    arch_languages: Mapping[str, str] = field(default_factory=dict)

    def arch_of(self, name: str) -> str:
        return name.partition("::")[0]

    def languages_of(self, arch: str) -> str:
        return self.arch_languages.get(arch, self.languages)

    def dim_of(self, arch: str) -> int:
        return config_dim(self.architectures[arch])

    def config(self, kwargs: Mapping[str, Any]) -> Any:
        """The transformers config of an architecture."""
        from transformers import AutoConfig

        return AutoConfig.for_model(self.model_type, **_plain(kwargs))

    def model_type_class(self) -> Any:
        import transformers

        return getattr(transformers, self.model_class)


def scaling_config(mean: Any, std: Any) -> dict[str, Any]:
    """The rescale-and-normalise part of an HF image processor config."""
    return {
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(mean),
        "image_std": list(std),
        "do_convert_rgb": True,
    }


def tower(
    width: int, layers: int, heads: int, mlp: int, **extra: Any
) -> dict[str, Any]:
    """Config kwargs of one transformer tower: width, depth, heads, MLP width, and extras."""
    return {
        "hidden_size": width,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": mlp,
        **extra,
    }


def config_dim(config: Any) -> int:
    """The embedding size of a config (object or kwargs): the projection size, or for
    towers without a projection (SigLIP) the vision width its pooling head keeps."""
    get = config.get if isinstance(config, Mapping) else lambda key: getattr(config, key, None)
    projection = get("projection_dim")
    if projection:
        return int(projection)
    vision = get("vision_config")
    width = vision["hidden_size"] if isinstance(vision, Mapping) else vision.hidden_size
    return int(width)


def _plain(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) if isinstance(v, Mapping) else v for k, v in kwargs.items()}
