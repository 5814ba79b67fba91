"""The GPT: GPT-1 (post-LayerNorm) and GPT-2 (pre-LayerNorm) in one module.

Parameter names equal Hugging Face's GPT-2 names (`transformer.wte`, `transformer.h.0.attn.c_attn`, ...)
so that loading foreign weights is a table (see convert.py). Linear weights are stored as torch's
[out, in]; Hugging Face's Conv1D stores [in, out], hence the transposes in that table.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from gptkit.errors import ConfigError, ContextLengthError, TokenIdError
from gptkit.models import checkpoint
from gptkit.models.config import IGNORE_INDEX, GPTConfig
from gptkit.models.kernels import Linear, attention

if TYPE_CHECKING:
    from gptkit.text.tokenizer import Tokenizer


@dataclass
class ModelOutput:
    """What `GPT.forward` returns. `hidden_states` is filled only when asked for."""

    logits: Tensor | None  # (B, T, vocab), None when return_logits=False
    last_hidden_state: Tensor  # (B, T, C), after the final LayerNorm where the model has one
    loss: Tensor | None = None  # next-token cross-entropy when labels were given
    hidden_states: tuple[Tensor, ...] | None = None  # embeddings, then each block (n_layer + 1)


class KVCache(nn.Module):
    """A static key/value cache: preallocated (n_layer, B, nh, max_len, hs), written at explicit slots.

    Shapes never change while decoding, so a decode step can be captured by torch.compile / CUDA graphs.
    Slots (`cache_position`) are (T,), the same for every row, or (B, T), each row writing at its own
    slots (rows at different positions, as in continuous batching). With left padding, a row's position
    id is its slot minus its padding; rows written from slot 0 have position id = slot.
    """

    k: Tensor  # buffers, registered in __init__
    v: Tensor

    def __init__(
        self,
        config: GPTConfig,
        batch_size: int,
        max_len: int | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        max_len = config.n_positions if max_len is None else max_len
        if max_len > config.n_positions:
            raise ContextLengthError(
                f"KV cache length {max_len} exceeds the model's context of {config.n_positions} tokens"
            )
        shape = (config.n_layer, batch_size, config.n_head, max_len, config.head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def update(self, layer: int, cache_position: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v (B, nh, T, hs) at slots `cache_position` (T,) or (B, T); return the whole layer cache."""
        if cache_position.dim() == 1 or k.shape[0] == 1:  # one set of slots for every row
            slots = cache_position.reshape(-1)  # (T,)
            self.k[layer].index_copy_(2, slots, k)
            self.v[layer].index_copy_(2, slots, v)
        else:  # an indexed write, not scatter_: torch 2.13's CPU scatter_ took 225 us a call in bfloat16, this 16
            rows = torch.arange(k.shape[0], device=k.device)[:, None]  # (B, 1)
            self.k[layer][rows, :, cache_position] = k.transpose(1, 2)  # (B, T, nh, hs) into rows x slots
            self.v[layer][rows, :, cache_position] = v.transpose(1, 2)
        return self.k[layer], self.v[layer]

    def prefix(self, n: int) -> KVCache:
        """A view of slots [0, n): writes go to this cache; attention over it costs n slots, not max_len.

        A decode step whose rows all sit below slot n reads only what they wrote; the masked slots beyond
        would add exact zeros."""
        if n >= self.max_len:
            return self
        view = KVCache.__new__(KVCache)
        nn.Module.__init__(view)
        view.register_buffer("k", self.k[:, :, :, :n], persistent=False)
        view.register_buffer("v", self.v[:, :, :, :n], persistent=False)
        return view

    def copy_rows(self, rows: Tensor, source: KVCache, source_rows: Tensor) -> None:
        """Write `source`'s rows `source_rows` (n,) into rows `rows` (n,) of this cache, slots [0, source.max_len)."""
        self.k[:, rows, :, : source.max_len] = source.k[:, source_rows]
        self.v[:, rows, :, : source.max_len] = source.v[:, source_rows]

    def reorder(self, rows: Tensor) -> None:
        """Keep batch rows `rows` (B,) in that order (beam search reshuffles its beams)."""
        self.k.copy_(self.k.index_select(1, rows))
        self.v.copy_(self.v.index_select(1, rows))


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_head = config.n_head
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_pdrop = config.attn_pdrop
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: Tensor, mask: Tensor | None, cache: KVCache | None, cache_position: Tensor | None) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None and cache_position is not None:
            k, v = cache.update(self.layer, cache_position, k, v)  # (B, nh, S, hs)
        y = attention(q, k, v, mask, self.attn_pdrop if self.training else 0.0)  # (B, nh, T, hs)
        y = self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))  # (B, T, C)
        return self.resid_dropout(y) if self.training else y  # eval: no module call (8 us a layer decoding)


_ACTIVATIONS = {
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "relu": F.relu,
}


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = Linear(config.n_embd, config.mlp_width, bias=config.bias)
        self.c_proj = Linear(config.mlp_width, config.n_embd, bias=config.bias)
        self.act = _ACTIVATIONS[config.activation]
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: Tensor) -> Tensor:
        y = self.c_proj(self.act(self.c_fc(x)))  # (B, T, C)
        return self.dropout(y) if self.training else y


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__()
        self.pre_norm = config.pre_norm
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, mask: Tensor | None, cache: KVCache | None, cache_position: Tensor | None) -> Tensor:
        if self.pre_norm:  # GPT-2
            x = x + self.attn(self.ln_1(x), mask, cache, cache_position)
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + self.attn(x, mask, cache, cache_position))  # GPT-1
        return self.ln_2(x + self.mlp(x))


class GPTModel(nn.Module):
    """The backbone (transformers' GPT2Model / OpenAIGPTModel): token ids -> final hidden states."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        eps = config.layer_norm_epsilon
        self.ln_f = nn.LayerNorm(config.n_embd, eps=eps, bias=config.bias) if config.final_norm else None

    def forward(
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: KVCache | None = None,
        cache_position: Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> ModelOutput:
        """Hidden states of token ids (B, T); the arguments are GPT.forward's. `logits` is None."""
        B, T = self._check_input(input_ids)
        if cache is not None and cache_position is None:
            raise ValueError("cache_position is required with a cache: the slots these tokens occupy")
        if cache_position is None:
            cache_position = torch.arange(T, device=input_ids.device)
        if position_ids is None:
            position_ids = cache_position.expand(B, T)  # (T,) or (B, T)
        mask = self._attention_mask(attention_mask, cache, cache_position, T)

        x = self.drop(self.wte(input_ids) + self.wpe(position_ids))  # (B, T, C)
        hidden: list[Tensor] = [x] if output_hidden_states else []
        for block in self.h:
            x = block(x, mask, cache, cache_position)  # (B, T, C)
            if output_hidden_states:
                hidden.append(x)
        if self.ln_f is not None:
            x = self.ln_f(x)
            if output_hidden_states:  # as in transformers: the last entry is after the final LayerNorm
                hidden[-1] = x
        return ModelOutput(logits=None, last_hidden_state=x, hidden_states=tuple(hidden) if hidden else None)

    def _check_input(self, input_ids: Tensor) -> tuple[int, int]:
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.long, torch.int):
            raise ValueError(
                f"input_ids must be an integer tensor of shape (batch, time), got {tuple(input_ids.shape)} "
                f"{input_ids.dtype}; wrap a single sequence as ids[None]"
            )
        B, T = input_ids.shape
        if T > self.config.n_positions:
            raise ContextLengthError(
                f"sequence of {T} tokens is longer than the model's context of {self.config.n_positions}; "
                "truncate it (keep the last tokens) or use a sliding window"
            )
        if input_ids.numel() and not torch.compiler.is_compiling():  # one small reduction; compiled graphs skip it
            low, high = torch.stack(input_ids.aminmax()).tolist()
            if low < 0 or high >= self.config.vocab_size:
                bad = input_ids[(input_ids < 0) | (input_ids >= self.config.vocab_size)][0].item()
                raise TokenIdError(
                    f"token id {bad} is out of range for the model's vocabulary of {self.config.vocab_size} tokens "
                    f"(ids 0 to {self.config.vocab_size - 1}); encode text with the model's own tokenizer"
                )
        return B, T

    @staticmethod
    def _attention_mask(
        attention_mask: Tensor | None, cache: KVCache | None, cache_position: Tensor, T: int
    ) -> Tensor | None:
        """A boolean (B|1, 1, T, S) mask: row b's query at slot p sees its slots <= p, padding removed.

        cache_position is (T,) for every row or (B, T) per row. None = plain causal."""
        if cache is None and attention_mask is None:
            return None  # SDPA's is_causal fast path
        S = cache.max_len if cache is not None else T
        slots = torch.arange(S, device=cache_position.device)
        query_slots = cache_position.view(-1, 1, T, 1)  # (B|1, 1, T, 1)
        mask = slots <= query_slots  # (B|1, 1, T, S) causal
        if attention_mask is not None:
            pad = attention_mask.to(torch.bool)
            if pad.shape[1] < S:  # slots not yet written are causally masked anyway
                pad = F.pad(pad, (0, S - pad.shape[1]), value=True)
            mask = mask & pad[:, None, None, :S]  # (B, 1, T, S)
            # A padding query may see no key at all; let it see itself so softmax stays finite.
            mask = mask | (slots == query_slots)
        return mask


class GPT(nn.Module):
    """A GPT language model: the backbone (`transformer`) and the LM head. `GPT(config)` is randomly
    initialised; `GPT.from_pretrained` loads weights."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = GPTModel(config)
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer), two additions per block.
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=config.initializer_range / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self, *, exclude_embeddings: bool = False) -> int:
        """Distinct parameters (a tied LM head counts once)."""
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            total -= self.transformer.wpe.weight.numel() + self.transformer.wte.weight.numel()
        return total

    def forward(
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        labels: Tensor | None = None,
        cache: KVCache | None = None,
        cache_position: Tensor | None = None,
        output_hidden_states: bool = False,
        return_logits: bool = True,
    ) -> ModelOutput:
        """Run the model on token ids (B, T).

        attention_mask: (B, S) with 1 for real tokens and 0 for padding, S = T without a cache and
            S = number of cache slots in use (or all of them) with one.
        position_ids: (B, T); defaults to the slot index (right for unpadded input).
        labels: (B, T) next-token targets aligned with input_ids (shifted inside), IGNORE_INDEX ignored.
        cache, cache_position: a KVCache and the slots these tokens are written to, (T,) for every row or
            (B, T) per row.
        """
        out = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            cache_position=cache_position,
            output_hidden_states=output_hidden_states,
        )
        x = out.last_hidden_state
        logits = self.lm_logits(x) if return_logits or labels is not None else None  # (B, T, vocab)
        out.loss = lm_loss(logits, labels) if logits is not None and labels is not None else None
        out.logits = logits if return_logits else None
        return out

    def lm_logits(self, hidden: Tensor) -> Tensor:
        """The LM head over hidden states (..., C) -> (..., vocab)."""
        return self.lm_head(hidden)

    # -- checkpoints (files are read and written by gptkit.models.checkpoint) ---------------------

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        n_head: int | None = None,
    ) -> GPT:
        """Load a preset hub name (`gpt2`, `openai-community/gpt2-xl`, `openai-gpt`), a Hugging Face or
        gptkit directory, OpenAI's original GPT-2 TensorFlow folder, or GPT-1's `params_*.npy` folder
        (whose head count, not stored in the shards, is `n_head`, default 12)."""
        return load_model(name_or_path, device=device, dtype=dtype, n_head=n_head)

    def save_pretrained(self, path: str | os.PathLike[str], *, tokenizer: Tokenizer | None = None) -> None:
        """Write a directory that gptkit and `transformers.AutoModelForCausalLM` both load."""
        save_model(self, path, tokenizer=tokenizer)


def lm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Next-token cross-entropy: position t predicts labels[t + 1]; IGNORE_INDEX targets are skipped."""
    shifted = logits[:, :-1, :].reshape(-1, logits.size(-1)).float()  # (B*(T-1), vocab)
    targets = labels[:, 1:].reshape(-1)  # (B*(T-1),)
    return F.cross_entropy(shifted, targets, ignore_index=IGNORE_INDEX)


def with_dropout(model: GPT, p: float) -> GPT:
    """Set all three dropout rates of `model` (embeddings, attention, residual) to p, config included."""
    model.config = model.transformer.config = model.config.replace(embd_pdrop=p, attn_pdrop=p, resid_pdrop=p)
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        if isinstance(module, CausalSelfAttention):
            module.attn_pdrop = p
    return model


def resize_token_embeddings(model: GPT, vocab_size: int) -> GPT:
    """Give `model` `vocab_size` token embeddings and LM-head rows, as transformers' resize_token_embeddings
    does for added tokens: the existing rows are kept and new ones drawn as GPT's initialisation draws them."""
    config, old = model.config, model.transformer.wte.weight
    if vocab_size < config.vocab_size:
        raise ConfigError(f"cannot shrink the vocabulary from {config.vocab_size} to {vocab_size} tokens")
    wte = nn.Embedding(vocab_size, config.n_embd, device=old.device, dtype=old.dtype)
    nn.init.normal_(wte.weight, mean=0.0, std=config.initializer_range)
    with torch.no_grad():
        wte.weight[: config.vocab_size] = old
    model.transformer.wte = wte
    if config.tie_word_embeddings:
        model.lm_head.weight = wte.weight
    else:
        head = Linear(config.n_embd, vocab_size, bias=False, device=old.device, dtype=old.dtype)
        nn.init.normal_(head.weight, mean=0.0, std=config.initializer_range)
        with torch.no_grad():
            head.weight[: config.vocab_size] = model.lm_head.weight
        model.lm_head = head
    model.config = model.transformer.config = config.replace(vocab_size=vocab_size)
    return model


class _SkipNormalInit(TorchFunctionMode):
    """Makes `normal_` a no-op, for modules built on the meta device: there is nothing to fill, and torch's
    meta-device normal_ imports torch._dynamo (seconds, the first time). Other ops run as usual."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is nn.init.normal_:
            return kwargs["tensor"] if "tensor" in kwargs else args[0]
        if func is Tensor.normal_:
            return args[0]
        return func(*args, **kwargs)


def empty_model(config: GPTConfig) -> GPT:
    """A GPT on the meta device, its initialisers skipped: shapes without memory, weights to be assigned."""
    with torch.device("meta"), _SkipNormalInit():
        return GPT(config)


def parameter_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """The state dict's shapes of a GPT with this config (computed on the meta device: no memory)."""
    return {k: tuple(v.shape) for k, v in empty_model(config).state_dict().items()}


def build_model(
    config: GPTConfig,
    state: dict[str, Tensor],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> GPT:
    """A GPT in eval mode holding `state` (its tensors become the parameters), without first allocating
    random weights. Tensors already of `dtype` (default float32) on `device` are not copied."""
    model = empty_model(config)
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.transformer.wte.weight
    return model.to(device=device, dtype=dtype or torch.float32).eval()


def load_model(
    name_or_path: str | os.PathLike[str],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    n_head: int | None = None,
) -> GPT:
    """Load a GPT from any source gptkit.models.checkpoint reads. dtype defaults to float32.

    n_head is needed only for GPT-1's original `params_*.npy` shards, which do not record it (default 12).
    """
    source = checkpoint.resolve(name_or_path)
    dtype = dtype or torch.float32
    # Each tensor is read straight into its final dtype and layout, one at a time: the weights are held once.
    config, state = checkpoint.read_checkpoint(source, parameter_shapes, n_head=n_head, dtype=dtype)
    return build_model(config, state, device=device, dtype=dtype)


def save_model(model: GPT, path: str | os.PathLike[str], *, tokenizer: Tokenizer | None = None) -> Path:
    """Write `model` (and its tokenizer) as a directory gptkit and `transformers.AutoModelForCausalLM` both load."""
    return checkpoint.save_checkpoint(path, model.state_dict(), model.config, tokenizer=tokenizer)
