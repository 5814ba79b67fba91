"""The exceptions gptkit raises for user errors. Each message says what was wrong and how to fix it."""

from __future__ import annotations


class GptkitError(Exception):
    """Base class of every error gptkit raises on purpose."""


class ConfigError(GptkitError, ValueError):
    """A model or run configuration is invalid (bad field, unknown preset, inconsistent values)."""


class TokenizerError(GptkitError, ValueError):
    """A tokenizer could not be built, loaded, or applied to the given text."""


class SpecialTokenError(TokenizerError):
    """Text contains a special-token string that the caller did not allow."""


class CheckpointError(GptkitError):
    """A checkpoint is missing, malformed, or does not match the model it is loaded into."""


class ModelNotFoundError(CheckpointError, FileNotFoundError):
    """A model name or path resolves to nothing (unknown name, missing directory, offline hub)."""


class ContextLengthError(GptkitError, ValueError):
    """A sequence is longer than the model's context window."""


class TokenIdError(GptkitError, ValueError, IndexError):
    """A token id is outside the model's vocabulary: it has no embedding row (an IndexError, as torch's is)."""


class DataError(GptkitError, ValueError):
    """A training corpus or data directory is unusable (missing file, bad row, damaged meta.json)."""
