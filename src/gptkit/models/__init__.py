"""Models: GPTConfig and presets, the GPT (backbone + LM head) and its KV cache, checkpoint directories and
the weight files in them (read tensor by tensor into place), foreign weight names (transformers, OpenAI's
original releases), LoRA, CPU kernels, the NumPy reference.

May import `gptkit.text` and the ground floor (`gptkit.errors`, `gptkit.io`), nothing higher.
"""
