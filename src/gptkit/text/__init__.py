"""Text: OpenAI's tokenizers (GPT-2 byte-level BPE, GPT-1 BPE, char-level), their files, chat templates.

The ground floor above `gptkit.errors` / `gptkit.io`: imports nothing else of gptkit, and not torch.
"""
