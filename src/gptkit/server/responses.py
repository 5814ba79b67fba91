"""OpenAI's response objects, field for field as the `openai` package types them, and how they are built.

A request's output is a sequence of `Piece`s (what one choice adds: text and the tokens behind it). A stream
sends one chunk per piece; the non-streamed answer is the same pieces folded per choice, so the two always
agree. Token strings, bytes and text offsets are worked out before a piece is made (see gptkit.server.handlers).
"""

from __future__ import annotations

import base64
import struct
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

FinishReason = Literal["stop", "length"]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


# -- models (openai.types ...) -----------------------------------------------------------------------


class Usage(BaseModel):  # CompletionUsage
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):  # completion_choice.Logprobs
    text_offset: list[int]
    token_logprobs: list[float | None]
    tokens: list[str]
    top_logprobs: list[dict[str, float] | None]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | None = None  # None only in a stream's chunks before the choice's last


class Completion(BaseModel):  # also each chunk of a completions stream
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class TopLogprob(BaseModel):  # chat.chat_completion_token_logprob.TopLogprob
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):  # ChatCompletionTokenLogprob
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class AssistantMessage(BaseModel):  # ChatCompletionMessage
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class Delta(BaseModel):  # chat_completion_chunk.ChoiceDelta
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # str: base64 of little-endian float32, as the openai package decodes it


class EmbeddingUsage(BaseModel):  # create_embedding_response.Usage
    prompt_tokens: int
    total_tokens: int


class CreateEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class TokenizedPiece(BaseModel):
    id: int
    text: str  # as logprobs write a token: "bytes:\\xe2\\x80" where it holds part of a character
    bytes: list[int]


class Tokenized(BaseModel):
    """gptkit's /v1/tokenize answer: the ids a completions request with this prompt would count."""

    object: Literal["tokenize"] = "tokenize"
    model: str
    count: int
    max_model_len: int
    tokens: list[TokenizedPiece]


class ErrorObject(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorObject


# -- pieces -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    """One token of a choice as the API shows it."""

    text: str  # the token's text; "bytes:\\xe2\\x80" where it holds part of a character
    raw: bytes
    offset: int  # characters before it in prompt + completion
    logprob: float | None  # None for the first token of an echoed prompt
    top: tuple[tuple[str, bytes, float], ...] | None  # the most likely tokens at its position, best first


@dataclass
class Piece:
    """What choice `index` adds in one chunk."""

    index: int
    text: str
    tokens: list[Token] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    prompt: bool = False  # the echoed prompt, not generated


@dataclass
class Folded:
    """A choice's pieces together: the non-streamed choice."""

    index: int
    text: str = ""
    tokens: list[Token] = field(default_factory=list)
    finish_reason: FinishReason = "length"
    generated: int = 0
    score: float = 0.0  # total logprob of the generated tokens (best_of ranks by it)


def fold(pieces: Iterable[Piece]) -> dict[int, Folded]:
    choices: dict[int, Folded] = {}
    for piece in pieces:
        choice = choices.setdefault(piece.index, Folded(piece.index))
        choice.text += piece.text
        choice.tokens += piece.tokens
        if not piece.prompt:
            choice.generated += len(piece.tokens)
            choice.score += sum(t.logprob or 0.0 for t in piece.tokens)
        if piece.finish_reason is not None:
            choice.finish_reason = piece.finish_reason
    return choices


def completion_logprobs(tokens: Sequence[Token]) -> CompletionLogprobs:
    """The legacy shape; each position's alternatives include the chosen token (up to logprobs + 1, as OpenAI)."""

    def top(token: Token) -> dict[str, float] | None:
        if token.top is None:
            return None
        chosen = {} if token.logprob is None else {token.text: token.logprob}
        return {text: lp for text, _, lp in token.top} | chosen

    return CompletionLogprobs(
        text_offset=[t.offset for t in tokens],
        token_logprobs=[t.logprob for t in tokens],
        tokens=[t.text for t in tokens],
        top_logprobs=[top(t) for t in tokens],
    )


def chat_logprobs(tokens: Sequence[Token]) -> ChoiceLogprobs:
    return ChoiceLogprobs(
        content=[
            TokenLogprob(
                token=t.text,
                logprob=t.logprob if t.logprob is not None else -9999.0,
                bytes=list(t.raw),
                top_logprobs=[TopLogprob(token=s, logprob=lp, bytes=list(b)) for s, b, lp in t.top or ()],
            )
            for t in tokens
        ]
    )


def usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens
    )


def embedding(index: int, vector: list[float], encoding_format: str) -> Embedding:
    if encoding_format == "base64":
        packed = struct.pack(f"<{len(vector)}f", *vector)
        return Embedding(index=index, embedding=base64.b64encode(packed).decode("ascii"))
    return Embedding(index=index, embedding=vector)
