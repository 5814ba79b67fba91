"""Generation: SamplingParams and the logit processors, decoding over the KV cache, stream/generate,
beam search, scoring, conversations with a chat template, and text embeddings.

May import `gptkit.models`, `gptkit.text` and the ground floor, nothing higher.
"""
