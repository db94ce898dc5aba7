"""Dual-encoder families on transformers (CLIP, SigLIP, SigLIP 2, MetaCLIP 2, Chinese-CLIP,
AltCLIP), on torch and onnxruntime.

``core/`` is one generic implementation parametrised by a small per-family ``Family`` spec
(model class, tokenizer and text rule, image preprocessing, scoring rule); ``families/``
holds one spec per family with its names and architectures; ``catalog`` ties names and
local directories to them. Families never import each other, and the core imports no
family (import-linter contracts).
"""
