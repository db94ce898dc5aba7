"""OpenAI CLIP (transformers' ``CLIPModel``) on torch and onnxruntime, with its tokenizer
and image preprocessing."""
