"""What each endpoint does between HTTP and an engine: check the request, encode it, submit it, and turn the
engine's TokenEvents into OpenAI's objects. No HTTP here (gptkit.server.app) and no tensors (gptkit.server.served).

Completions and chat are a `Reply`: the request is submitted when the reply is made (so the engine's refusals
become the HTTP status), and its output is a sequence of `Piece`s that `frames()` streams chunk by chunk and
`collect()` folds into the one response.
"""

from __future__ import annotations

import codecs
import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pydantic import BaseModel

from gptkit.generation.decode import TokenEvent
from gptkit.server.engine import Engine, Events
from gptkit.server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    TokenizeRequest,
    about,
    input_list,
    invalid,
)
from gptkit.server.responses import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChunkChoice,
    Completion,
    CompletionChoice,
    CreateEmbeddingResponse,
    Delta,
    EmbeddingUsage,
    FinishReason,
    Folded,
    Piece,
    Token,
    Tokenized,
    TokenizedPiece,
    Usage,
    chat_logprobs,
    completion_logprobs,
    embedding,
    fold,
    new_id,
    now,
    usage,
)
from gptkit.server.served import ServedModel
from gptkit.text.chat_template import render_chat


class Vocabulary:
    """Token ids as the API shows them: text, raw bytes, and character offsets within a choice."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def raw(self, token_id: int) -> bytes:
        return self.tokenizer.decode_bytes([token_id])

    @staticmethod
    def text(raw: bytes) -> str:
        """A token's text; one holding part of a character is written as OpenAI writes it."""
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)

    def token(self, offsets: Offsets, token_id: int, logprob: float, top: dict[int, float] | None) -> Token:
        raw = self.raw(token_id)
        alternatives = None if top is None else tuple((self.text(r := self.raw(i)), r, lp) for i, lp in top.items())
        lp = None if math.isnan(logprob) else logprob
        return Token(self.text(raw), raw, offsets.advance(raw), lp, alternatives)


class Offsets:
    """Where each token of a choice starts, in characters of prompt + completion (whole characters only)."""

    def __init__(self, start: int = 0) -> None:
        self.position = start
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def advance(self, raw: bytes) -> int:
        at = self.position
        self.position += len(self._utf8.decode(raw))
        return at


class Reply(ABC):
    """A request its engine accepted. Subclasses say how pieces become chunks and the response."""

    prefix = ""

    def __init__(
        self, served: ServedModel, name: str, prompts: list[list[int]], events: Events | None, include_usage: bool
    ) -> None:
        self.id, self.created, self.model = new_id(self.prefix), now(), name
        self.vocab = Vocabulary(served.tokenizer)
        self.prompts, self.events, self.include_usage = prompts, events, include_usage
        self.offsets: dict[int, Offsets] = {}

    def cancel(self) -> None:
        if self.events is not None:
            self.events.cancel()

    async def frames(self) -> AsyncIterator[str]:
        """The stream's chunks as JSON; with include_usage each has usage null and a last one has the usage."""
        exclude = None if self.include_usage else {"usage"}
        for opening in self.opening():
            yield opening.model_dump_json(exclude=exclude)
        generated = 0
        async for piece in self.pieces():
            generated += 0 if piece.prompt else len(piece.tokens)
            if (chunk := self.chunk(piece)) is not None:
                yield chunk.model_dump_json(exclude=exclude)
        if self.include_usage:
            yield self.envelope([], self.usage(generated)).model_dump_json()

    async def collect(self) -> BaseModel:
        """The non-streamed response: the same pieces, folded per choice."""
        folded = fold([piece async for piece in self.pieces()])
        return self.response(folded, self.usage(sum(f.generated for f in folded.values())))

    def usage(self, generated: int) -> Usage:
        return usage(sum(len(ids) for ids in self.prompts), generated)

    async def pieces(self) -> AsyncIterator[Piece]:
        async for piece in self.generated():
            yield piece

    async def generated(self) -> AsyncIterator[Piece]:
        if self.events is None:
            return
        async for event in self.events:
            yield self.piece(event)

    def piece(self, event: TokenEvent) -> Piece:
        offsets = self.offsets.setdefault(event.index, Offsets())
        token = self.vocab.token(offsets, event.token_id, event.logprob, event.top_logprobs)
        return Piece(event.index, event.text, [token], event.finish_reason)

    def opening(self) -> list[BaseModel]:
        return []

    @abstractmethod
    def chunk(self, piece: Piece) -> BaseModel | None:
        """One piece as a stream chunk (None: nothing to send for it)."""

    @abstractmethod
    def envelope(self, choices: list[Any], usage: Usage | None = None) -> BaseModel:
        """Choices (and usage) wrapped in this reply's stream chunk object."""

    @abstractmethod
    def response(self, folded: dict[int, Folded], usage: Usage) -> BaseModel:
        """The whole reply as one object, from its folded pieces."""


# -- completions ------------------------------------------------------------------------------------


class CompletionReply(Reply):
    prefix = "cmpl"

    def __init__(self, served: ServedModel, name: str, request: CompletionRequest, prompts: list[list[int]]) -> None:
        self.request, self.n, self.candidates = request, request.choices, request.candidates
        self.echoes: list[list[Token]] = []
        params = request.sampling_params(
            max(request.new_tokens, 1),
            served.vocab_size,
            request.logprobs if self.candidates == self.n else request.logprobs or 0,  # best_of ranks by logprob
        )
        events = served.engine.asubmit(prompts, params, n=self.candidates) if request.new_tokens else None
        super().__init__(served, name, prompts, events, request.include_usage)

    async def score_prompts(self, served: ServedModel) -> None:
        """echo: each prompt's tokens, with their logprobs when asked for (the first token has none)."""
        for ids in self.prompts:
            top_n = self.request.logprobs
            scores = await served.score(ids, top_n) if top_n is not None else [(math.nan, None)] * len(ids)
            offsets = Offsets()
            tokens = [
                self.vocab.token(offsets, t, lp, None if math.isnan(lp) else top)  # the first token has no context
                for t, (lp, top) in zip(ids, scores, strict=True)
            ]
            self.echoes.append(tokens)

    async def pieces(self) -> AsyncIterator[Piece]:
        done: FinishReason | None = "length" if self.events is None else None  # max_tokens 0: the echo is all
        for p, ids in enumerate(self.prompts):
            text = self.vocab.tokenizer.decode(ids)
            for k in range(self.candidates):
                self.offsets[p * self.candidates + k] = Offsets(len(text))
                if self.request.echo:
                    yield Piece(p * self.candidates + k, text, list(self.echoes[p]), done, prompt=True)
        async for piece in self.generated():
            yield piece

    def choice(self, index: int, text: str, tokens: list[Token], finish: FinishReason | None) -> CompletionChoice:
        logprobs = completion_logprobs(tokens) if self.request.logprobs is not None else None
        return CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=finish)

    def chunk(self, piece: Piece) -> BaseModel | None:
        shown = piece.tokens and self.request.logprobs is not None
        if not (piece.text or piece.finish_reason or shown):
            return None
        return self.envelope([self.choice(piece.index, piece.text, piece.tokens, piece.finish_reason)])

    def envelope(self, choices: list[Any], usage: Usage | None = None) -> Completion:
        return Completion(id=self.id, created=self.created, model=self.model, choices=choices, usage=usage)

    def response(self, folded: dict[int, Folded], usage: Usage) -> BaseModel:
        choices = []
        for p in range(len(self.prompts)):
            candidates = [folded[p * self.candidates + k] for k in range(self.candidates)]
            if self.candidates > self.n:  # best_of: the n with the highest total logprob, best first
                candidates = sorted(candidates, key=lambda c: -c.score)[: self.n]
            for j, c in enumerate(candidates):
                choices.append(self.choice(p * self.n + j, c.text, c.tokens, c.finish_reason))
        return self.envelope(choices, usage)


async def completion(served: ServedModel, name: str, request: CompletionRequest) -> CompletionReply:
    request.check()
    engine = served.engine
    check_choices(engine, request.candidates, "best_of" if request.best_of else "n")
    with about("prompt"):
        prompts = [encode(served, p) for p in input_list(request.prompt, "prompt")]
        for ids in prompts:
            engine.check_prompt(ids, request.new_tokens)
    reply = CompletionReply(served, name, request, prompts)
    if request.echo:
        try:
            await reply.score_prompts(served)
        except BaseException:
            reply.cancel()
            raise
    return reply


def check_choices(engine: Engine, count: int, field: str) -> None:
    """An engine decodes a request's choices side by side, so it takes no more than its batch has rows."""
    if count > engine.max_batch_size:
        raise invalid(field, f"{field} ({count}) exceeds this server's --max-batch-size {engine.max_batch_size}")


def encode(served: ServedModel, prompt: str | Sequence[int]) -> list[int]:
    """A prompt's ids; text may hold special tokens such as <|endoftext|>, as OpenAI's completions allow."""
    if isinstance(prompt, str):
        return served.tokenizer.encode(prompt, allowed_special="all")
    if bad := [t for t in prompt if t >= served.vocab_size]:
        raise ValueError(f"token id {bad[0]} is outside the tokenizer's vocabulary [0, {served.vocab_size})")
    return list(prompt)


# -- chat -------------------------------------------------------------------------------------------


class ChatReply(Reply):
    prefix = "chatcmpl"

    def __init__(
        self, served: ServedModel, name: str, request: ChatCompletionRequest, ids: list[int], max_new: int
    ) -> None:
        self.request, self.n = request, request.choices
        params = request.sampling_params(max_new, served.vocab_size, request.logprobs_wanted())
        events = served.engine.asubmit([ids], params, n=self.n)
        super().__init__(served, name, [ids], events, request.include_usage)

    def logprobs(self, tokens: list[Token]) -> Any:
        return chat_logprobs(tokens) if self.request.logprobs else None

    def opening(self) -> list[BaseModel]:
        """The first chunk of each choice carries the role."""
        return [self.envelope([ChunkChoice(index=k, delta=Delta(role="assistant", content=""))]) for k in range(self.n)]

    def chunk(self, piece: Piece) -> BaseModel | None:
        if not (piece.text or piece.finish_reason or self.request.logprobs):
            return None
        delta, logprobs, finish = Delta(content=piece.text), self.logprobs(piece.tokens), piece.finish_reason
        return self.envelope([ChunkChoice(index=piece.index, delta=delta, logprobs=logprobs, finish_reason=finish)])

    def envelope(self, choices: list[Any], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=choices, usage=usage)

    def response(self, folded: dict[int, Folded], usage: Usage) -> BaseModel:
        choices = [
            ChatChoice(
                index=k,
                message=AssistantMessage(content=folded[k].text),
                logprobs=self.logprobs(folded[k].tokens),
                finish_reason=folded[k].finish_reason,
            )
            for k in range(self.n)
        ]
        return ChatCompletion(id=self.id, created=self.created, model=self.model, choices=choices, usage=usage)


async def chat(served: ServedModel, name: str, request: ChatCompletionRequest) -> ChatReply:
    request.check()
    engine = served.engine
    check_choices(engine, request.choices, "n")
    if served.chat_template is None:
        raise invalid(
            "messages",
            f"model {name} has no chat template: use /v1/completions, or start the server with --chat-template FILE",
        )
    eos = served.tokenizer.eos_token or ""
    with about("messages"):
        text = render_chat(request.conversation(), served.chat_template, add_generation_prompt=True, eos_token=eos)
        ids = encode(served, text)
        max_new = request.max_completion_tokens or request.max_tokens or max(engine.n_positions - len(ids), 1)
        engine.check_prompt(ids, max_new)
    return ChatReply(served, name, request, ids, max_new)


# -- embeddings -------------------------------------------------------------------------------------


async def embeddings(served: ServedModel, name: str, request: EmbeddingRequest) -> CreateEmbeddingResponse:
    if request.dimensions is not None and request.dimensions != served.width:
        raise invalid("dimensions", f"dimensions must be this model's width {served.width}, got {request.dimensions}")
    tokenizer = served.tokenizer
    with about("input"):
        inputs = [
            tokenizer.encode(x, disallowed_special=()) if isinstance(x, str) else list(x)
            for x in input_list(request.input, "input")
        ]
        for ids in inputs:
            served.engine.check_prompt(ids, 0)
        vectors = await served.embed(inputs)
    tokens = sum(len(ids) for ids in inputs)
    return CreateEmbeddingResponse(
        data=[embedding(i, v, request.encoding_format or "float") for i, v in enumerate(vectors)],
        model=name,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )


# -- tokenize ---------------------------------------------------------------------------------------


def tokenize(served: ServedModel, name: str, request: TokenizeRequest) -> Tokenized:
    """The prompt's ids as a completions request counts them, each with its bytes and text."""
    vocabulary = Vocabulary(served.tokenizer)
    ids = encode(served, request.prompt)
    pieces = [TokenizedPiece(id=i, text=vocabulary.text(raw := vocabulary.raw(i)), bytes=list(raw)) for i in ids]
    return Tokenized(model=name, count=len(ids), max_model_len=served.engine.n_positions, tokens=pieces)
