"""The decode state: a batch of rows decoded together over one static KV cache, row by row open to new work.

Each row holds one sequence at its own cache position with its own `SamplingParams` (temperature, top-k/p,
penalties, bias, seed, stop strings and ids, max_new_tokens, logprobs) and its own `TextStream`. `add()`
prefills prompts into free rows; `step()` picks every running row's next token, reports it as a
`TokenEvent` and runs the model one step for the rows still going; a row that finishes is released and
its slots are reused by the next `add()`, without rebuilding anything. `stream()`/`generate()` drive it
over a fixed set of prompts; a continuous-batching server drives it with requests that come and go.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from gptkit.errors import ContextLengthError
from gptkit.generation.decode import (
    FinishReason,
    TextStream,
    TokenEvent,
    decode_step,
    model_device_dtype,
    prefill,
    stop_token_ids,
    top_logprobs,
)
from gptkit.generation.sampling import IDLE, RowParams, SamplingParams, choose, process
from gptkit.models.gpt import GPT, KVCache

SPAN_STEP = 64  # decode steps attend over the cache's first slots in multiples of this


@dataclass(frozen=True)
class Request:
    """One sequence to decode: its prompt, its parameters, and the numbers its `TokenEvent`s carry."""

    prompt_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    index: int = 0
    prompt_index: int = 0
    sample: int = 0


def row_generator(params: SamplingParams, sample: int, device: torch.device) -> torch.Generator | None:
    """A seeded row's own random stream, one per (seed, sample): it draws the same in any batch as alone.
    None for unseeded rows, which draw together from the state's generator."""
    if params.seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(params.seed * 1_000_003 + sample)
    return generator


@dataclass
class _Row:
    request: Request
    tokens: list[int]  # prompt + generated: what the sequence-dependent processors look at
    stream: TextStream
    generator: torch.Generator | None
    stop_ids: frozenset[int]
    generated: int = 0


class DecodeState:
    """`batch_size` rows over one KV cache of `max_len` slots (default: the model's context)."""

    def __init__(self, model: GPT, batch_size: int, max_len: int | None = None, *, tokenizer: object = None) -> None:
        device, dtype = model_device_dtype(model)
        V = model.config.vocab_size
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.cache = KVCache(model.config, batch_size, max_len, dtype=dtype, device=device)
        self.rows: list[_Row | None] = [None] * batch_size
        self.params = RowParams.of([IDLE] * batch_size, V, device)
        self.positions = [0] * batch_size  # tokens each row holds in the cache = the slot of its next one
        self.logits = torch.zeros(batch_size, V, device=device)  # (B, V) each row's next-token logits
        self.seen = torch.zeros(batch_size, V, dtype=torch.bool, device=device)  # (B, V) prompt + output
        self.counts = torch.zeros(batch_size, V, dtype=torch.int32, device=device)  # (B, V) output only
        self.generator = torch.Generator(device=device)  # unseeded rows' draws, one multinomial per step
        self.generator.seed()
        # A model padded past its tokenizer (nanoGPT's 50304 for GPT-2) never generates an id with no text.
        decodable = V if tokenizer is None else min(V, len(tokenizer))  # type: ignore[arg-type]
        self.undecodable = slice(decodable, V)

    @property
    def free_rows(self) -> list[int]:
        return [b for b, row in enumerate(self.rows) if row is None]

    @property
    def running(self) -> bool:
        return any(row is not None for row in self.rows)

    @torch.inference_mode()
    def add(self, requests: Sequence[Request]) -> list[int]:
        """Prefill the requests' prompts into free rows (one forward pass); return the rows they took."""
        free = self.free_rows
        if len(requests) > len(free):
            raise ValueError(f"requests: {len(requests)} new sequences but only {len(free)} free rows")
        for request in requests:
            self._check_fits(request)
        rows = free[: len(requests)]
        if not rows:
            return rows
        logits = prefill(self.model, self.cache, rows, [r.prompt_ids for r in requests])
        for row, request, row_logits in zip(rows, requests, logits, strict=True):
            params = request.params
            self.rows[row] = _Row(
                request,
                list(request.prompt_ids),
                TextStream(self.tokenizer, params.stop),
                row_generator(params, request.sample, self.device),
                stop_token_ids(self.model, params),
            )
            self.params.set(row, params)
            self.positions[row] = len(request.prompt_ids)
            self.logits[row] = row_logits.float()
            self.logits[row, self.undecodable] = float("-inf")
            self.seen[row] = False
            self.seen[row, request.prompt_ids] = True
            self.counts[row] = 0
        return rows

    def _check_fits(self, request: Request) -> None:
        n, need, window = len(request.prompt_ids), request.params.max_new_tokens, self.model.config.n_positions
        slides = request.params.truncate and self.cache.max_len == window and n <= window
        if n == 0:
            raise ValueError("prompt_ids must hold at least one token (GPT-2 users often start with <|endoftext|>)")
        if n + need > self.cache.max_len and not slides:
            raise ContextLengthError(
                f"prompt of {n} tokens + max_new_tokens {need} does not fit the decode state's "
                f"{self.cache.max_len} cache slots; lower max_new_tokens or set truncate (with a cache of "
                f"the model's full context, {window})"
            )

    def release(self, row: int) -> None:
        """Free row `row` (finished or cancelled) for the next `add()`."""
        self.rows[row] = None
        self.params.set(row, IDLE)
        self.positions[row] = 0

    @torch.inference_mode()
    def step(self) -> list[TokenEvent]:
        """Choose each running row's next token and report it; rows that finish are released."""
        running = [b for b, row in enumerate(self.rows) if row is not None]
        if not running:
            return []
        histories = [row.tokens if row is not None else [] for row in self.rows]
        processed = process(self.logits, self.params, histories, self.seen, self.counts)
        generators = [row.generator if row is not None else None for row in self.rows]
        tokens = choose(processed, self.params, generators, self.generator)  # (B,)
        wants = any(self.rows[b].request.params.logprobs is not None for b in running)  # type: ignore[union-attr]
        logprobs = self.logits.log_softmax(dim=-1) if wants else None
        chosen = tokens.tolist()
        events = [self._advance(b, chosen[b], logprobs) for b in running]
        going = [b for b in running if self.rows[b] is not None]
        if going:
            index = torch.tensor(going, device=self.device)
            self.seen[index, tokens[index]] = True
            self.counts[index, tokens[index]] += 1
            self._forward(tokens, going)
        return events

    def _advance(self, b: int, token: int, logprobs: Tensor | None) -> TokenEvent:
        row = self.rows[b]
        assert row is not None
        params = row.request.params
        row.tokens.append(token)
        row.generated += 1
        hit_eos = token in row.stop_ids
        text = "" if hit_eos else row.stream.push(token)
        finish: FinishReason | None = "stop" if hit_eos or row.stream.stopped else None
        if finish is None and row.generated == params.max_new_tokens:
            finish = "length"
        if finish == "length" or (hit_eos and not row.stream.stopped):
            text += row.stream.flush()
        if finish is not None:
            self.release(b)
        wanted = logprobs is not None and params.logprobs is not None
        return TokenEvent(
            index=row.request.index,
            prompt_index=row.request.prompt_index,
            sample=row.request.sample,
            token_id=token,
            text=text,
            logprob=float(logprobs[b, token]) if wanted else float("nan"),  # type: ignore[index]
            top_logprobs=top_logprobs(logprobs[b], params.logprobs) if wanted else None,  # type: ignore[index]
            finish_reason=finish,
        )

    def _forward(self, tokens: Tensor, going: list[int]) -> None:
        """Write `tokens` (B,) at each row's next slot and compute the next logits of the rows `going`.

        A row whose context is full (truncate) is recomputed over its last n_positions tokens instead, as
        nanoGPT crops; idle rows write a slot nobody reads.
        """
        last = self.cache.max_len - 1
        slots = torch.tensor([min(p, last) for p in self.positions], device=self.device)
        self.logits = decode_step(self.model, tokens, slots, self.cache.prefix(self._span(going))).float()
        self.logits[:, self.undecodable] = float("-inf")
        full = [b for b in going if self.positions[b] > last]
        for b in going:
            self.positions[b] = min(self.positions[b] + 1, self.cache.max_len)
        if full:
            window = [self.rows[b].tokens[-self.cache.max_len :] for b in full]  # type: ignore[union-attr]
            self.logits[full] = prefill(self.model, self.cache, full, window).float()
            self.logits[full, self.undecodable] = float("-inf")

    def _span(self, going: list[int]) -> int:
        """Cache slots the next step needs: past every running row's next slot, rounded up to a multiple of
        SPAN_STEP so that few distinct shapes occur (a server's cache spans the whole context)."""
        end = max(self.positions[b] for b in going) + 1
        return min(-(-end // SPAN_STEP) * SPAN_STEP, self.cache.max_len)


def run(state: DecodeState, requests: Sequence[Request]) -> Iterator[TokenEvent]:
    """Add `requests` to `state` and yield every event until no row is running."""
    state.add(requests)
    while state.running:
        yield from state.step()
