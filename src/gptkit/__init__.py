"""gptkit: GPT-1 and GPT-2 models, OpenAI's tokenizers, checkpoints, generation and training.

`import gptkit` is cheap: torch and the tokenizer backend are imported on first use of a name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gptkit.errors import (
    CheckpointError,
    ConfigError,
    ContextLengthError,
    DataError,
    GptkitError,
    ModelNotFoundError,
    SpecialTokenError,
    TokenIdError,
    TokenizerError,
)

__version__ = "0.1.0"

# public name -> module that defines it; resolved lazily by __getattr__ below
_LAZY = {
    "GPTConfig": "gptkit.models.config",
    "GPT": "gptkit.models.gpt",
    "ModelOutput": "gptkit.models.gpt",
    "KVCache": "gptkit.models.gpt",
    "Tokenizer": "gptkit.text.tokenizer",
    "load_model": "gptkit.models.gpt",
    "load": "gptkit.tasks.bundle",
    "ModelBundle": "gptkit.tasks.bundle",
    "save_model": "gptkit.models.gpt",
}

__all__ = [
    "CheckpointError",
    "ConfigError",
    "ContextLengthError",
    "DataError",
    "GptkitError",
    "ModelNotFoundError",
    "SpecialTokenError",
    "TokenIdError",
    "TokenizerError",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gptkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from gptkit.models.config import GPTConfig  # noqa: F401
    from gptkit.models.gpt import GPT, KVCache, ModelOutput, load_model, save_model  # noqa: F401  # noqa: F401
    from gptkit.tasks.bundle import ModelBundle, load  # noqa: F401
    from gptkit.text.tokenizer import Tokenizer  # noqa: F401
