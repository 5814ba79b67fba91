"""Models: GPTConfig and presets, the GPT (backbone + LM head) and its KV cache, checkpoint directories,
foreign weight names (transformers, OpenAI's original releases), LoRA, CPU kernels, the NumPy reference.

May import `gptkit.text` and the ground floor (`gptkit.errors`, `gptkit.io`), nothing higher.
"""
