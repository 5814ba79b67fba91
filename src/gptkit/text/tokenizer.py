"""Tokenizers for GPT-1 and GPT-2: one `Tokenizer` class over a Hugging Face `tokenizers` pipeline.

Kinds: "gpt2" (OpenAI's byte-level BPE, equal to tiktoken's gpt2), "openai-gpt" (GPT-1's lower-cased
BPE, equal to transformers' OpenAIGPTTokenizer), "char" (one id per character) and "bpe" (a byte-level
BPE trained on your text). Special tokens follow tiktoken: a special-token string in the text is an
error unless allowed (then it is one id) or disallowed_special=() (then it is ordinary text).

Which engine encodes: OpenAI's GPT-2 vocabulary (whatever the kind or files it came from) encodes through
tiktoken, built offline from that vocabulary, whose ranks are its ids: the same ids, about three times as
fast. Every other vocabulary (GPT-1's, char-level, trained BPEs, foreign byte-level ones, whose merges need
not follow tiktoken's rank order) encodes through its `tokenizers` pipeline. For every vocabulary that
pipeline is also what trains, saves and looks up tokens.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tokenizers as tk

from gptkit.errors import ModelNotFoundError, SpecialTokenError, TokenizerError
from gptkit.io import atomic_write_text
from gptkit.text import tokenizer_files as tkfiles

__all__ = ["Encoding", "Tokenizer", "PRETRAINED_NAMES"]

_GPT2_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
# name -> kind of the vocabulary shipped in gptkit/assets; all GPT-2 sizes share one vocabulary
PRETRAINED_NAMES: dict[str, str] = {
    **{n: "gpt2" for n in _GPT2_NAMES},
    **{f"openai-community/{n}": "gpt2" for n in _GPT2_NAMES},
    "openai-gpt": "openai-gpt",
    "openai-community/openai-gpt": "openai-gpt",
}
# Texts longer than twice this are cut into chunks of about this many characters at safe boundaries
# and encoded in parallel; the ids are identical (see _chunk_starts).
CHUNK_CHARS = 8_192

AllowedSpecial = Literal["all"] | Collection[str]


@dataclass(frozen=True)
class Encoding:
    """Token ids, and for each the (start, end) character span it came from in the original text."""

    ids: list[int]
    offsets: list[tuple[int, int]]


class Tokenizer:
    """A GPT tokenizer: a `tokenizers.Tokenizer` plus the kind of tokenizer it is."""

    def __init__(self, backend: tk.Tokenizer, kind: str, *, eos_token: str | None = None) -> None:
        if kind not in tkfiles.KINDS:
            raise TokenizerError(f"unknown tokenizer kind {kind!r}; expected one of {list(tkfiles.KINDS)}")
        self._backend = backend
        self._kind = kind
        # Special-token strings are split out by encode() according to allowed_special, never by the backend.
        backend.encode_special_tokens = True
        self._specials = {t.content: i for i, t in sorted(backend.get_added_tokens_decoder().items()) if t.special}
        self._special_text = {i: t for t, i in self._specials.items()}
        if eos_token is not None and eos_token not in self._specials:
            raise TokenizerError(f"eos_token {eos_token!r} is not a special token of this tokenizer")
        self._eos = eos_token
        self._vocab_size = backend.get_vocab_size(with_added_tokens=True)
        self._chars = frozenset(backend.get_vocab(with_added_tokens=False)) if kind == "char" else None

    # --- constructors ------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike[str]) -> Tokenizer:
        """Load "gpt2" (any size, also openai-community/...), "openai-gpt", or a tokenizer directory."""
        path = Path(name_or_dir)
        if path.is_dir():
            backend, kind, eos = tkfiles.load_dir(path)
            return cls(backend, kind, eos_token=eos)
        pretrained = PRETRAINED_NAMES.get(str(name_or_dir))
        if pretrained is None:
            raise ModelNotFoundError(
                f"no tokenizer named {str(name_or_dir)!r} and no such directory; "
                f"known names: {', '.join(PRETRAINED_NAMES)}"
            )
        vocab, merges = tkfiles.read_shipped(pretrained)
        if pretrained == "gpt2":
            return cls(tkfiles.gpt2_backend(vocab, merges, [tkfiles.GPT2_EOS]), pretrained, eos_token=tkfiles.GPT2_EOS)
        return cls(tkfiles.openai_gpt_backend(vocab, merges), pretrained)

    @classmethod
    def char_level(cls, text_or_chars: str | Iterable[str], *, special_tokens: Sequence[str] = ()) -> Tokenizer:
        """One id per distinct character of a corpus (sorted, so ids are deterministic); specials follow."""
        distinct = set(text_or_chars)
        if not distinct:
            raise TokenizerError("char_level needs a non-empty text or set of characters")
        if bad := [c for c in distinct if not isinstance(c, str) or len(c) != 1]:
            raise TokenizerError(f"char_level expects single characters, got {bad[:5]}")
        chars = sorted(distinct)
        if clash := set(special_tokens) & set(chars):
            raise TokenizerError(f"special tokens {sorted(clash)} are also ordinary characters")
        backend = tkfiles.char_backend(chars, list(dict.fromkeys(special_tokens)))
        return cls(backend, "char", eos_token=_default_eos(special_tokens))

    @classmethod
    def train_bpe(
        cls,
        files: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        vocab_size: int,
        *,
        min_frequency: int = 2,
        special_tokens: Sequence[str] = (tkfiles.GPT2_EOS,),
        show_progress: bool = True,
    ) -> Tokenizer:
        """Train a GPT-2-style byte-level BPE (GPT-2 split regex, 256 byte tokens) on text files."""
        paths = [Path(files)] if isinstance(files, (str, os.PathLike)) else [Path(f) for f in files]
        if not paths:
            raise TokenizerError("train_bpe needs at least one text file")
        specials = list(special_tokens)
        backend = tkfiles.train_byte_level_bpe(paths, vocab_size, min_frequency, specials, show_progress)
        return cls(backend, "bpe", eos_token=_default_eos(specials))

    def with_special_tokens(self, tokens: Sequence[str]) -> Tokenizer:
        """A copy with `tokens` added as special tokens after the vocabulary, in order (as transformers'
        add_special_tokens numbers them); tokens that are special already keep their ids."""
        backend = tk.Tokenizer.from_str(self._backend.to_str())
        new = [t for t in dict.fromkeys(tokens) if t not in self._specials]
        backend.add_special_tokens([tkfiles.special_token(t) for t in new])
        return Tokenizer(backend, self._kind, eos_token=self._eos)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write a directory that both gptkit and transformers.AutoTokenizer load; returns its path."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in tkfiles.hf_files(self._backend, self._kind, self._eos).items():
            atomic_write_text(out / name, text)
        return out

    # --- properties --------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def backend(self) -> tk.Tokenizer:
        """The wrapped `tokenizers.Tokenizer` (its encode_special_tokens is True; see encode). OpenAI's GPT-2
        vocabulary encodes through tiktoken instead, to the same ids (see the module docstring)."""
        return self._backend

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def __len__(self) -> int:
        return self._vocab_size

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._specials)

    @property
    def eos_token(self) -> str | None:
        return self._eos

    @property
    def eos_token_id(self) -> int | None:
        return None if self._eos is None else self._specials[self._eos]

    def id_to_token(self, token_id: int) -> str:
        token = self._backend.id_to_token(token_id) if token_id >= 0 else None
        if token is None:
            raise TokenizerError(f"token id {token_id} is out of range (vocab_size {self._vocab_size})")
        return token

    def token_to_id(self, token: str) -> int:
        token_id = self._backend.token_to_id(token)
        if token_id is None:
            raise TokenizerError(f"{token!r} is not a token of this {self._kind} vocabulary")
        return token_id

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self._kind!r}, vocab_size={self._vocab_size}, eos_token={self._eos!r})"

    # --- encoding ----------------------------------------------------------------------------

    def encode(
        self, text: str, *, allowed_special: AllowedSpecial = frozenset(), disallowed_special: AllowedSpecial = "all"
    ) -> list[int]:
        """Token ids of `text`. Special-token strings raise SpecialTokenError unless allowed or disallowed=()."""
        return self._encode([text], allowed_special, disallowed_special, offsets=False)[0].ids

    def encode_batch(
        self,
        texts: Sequence[str],
        *,
        allowed_special: AllowedSpecial = frozenset(),
        disallowed_special: AllowedSpecial = "all",
    ) -> list[list[int]]:
        """encode() over many texts, in parallel in the backend."""
        return [e.ids for e in self._encode(texts, allowed_special, disallowed_special, offsets=False)]

    def encode_with_offsets(
        self, text: str, *, allowed_special: AllowedSpecial = frozenset(), disallowed_special: AllowedSpecial = "all"
    ) -> Encoding:
        """Ids plus character spans; a byte-level token holding part of a character spans that character."""
        return self._encode([text], allowed_special, disallowed_special, offsets=True)[0]

    def _encode(
        self, texts: Sequence[str], allowed: AllowedSpecial, disallowed: AllowedSpecial, *, offsets: bool
    ) -> list[Encoding]:
        if isinstance(texts, str):
            raise TokenizerError("encode_batch takes a sequence of strings, not one string")
        allowed_set, disallowed_set = self._resolve_specials(allowed, disallowed)
        plans = [self._plan(text, allowed_set, disallowed_set) for text in texts]
        pieces = [piece for plan in plans for _, piece in plan if isinstance(piece, str)]
        encoded = iter(self._encode_pieces(pieces, offsets))
        results = []
        for plan in plans:
            ids: list[int] = []
            spans: list[tuple[int, int]] = []
            for start, piece in plan:
                if isinstance(piece, int):  # an allowed special token
                    ids.append(piece)
                    spans.append((start, start + len(self._special_text[piece])))
                    continue
                piece_ids, piece_spans = next(encoded)
                ids.extend(piece_ids)
                if offsets:
                    spans.extend((start + a, start + b) for a, b in piece_spans)
            results.append(Encoding(ids, spans))
        return results

    def _encode_pieces(self, pieces: list[str], offsets: bool) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Ids of ordinary text pieces, in parallel, and (when asked) each token's character span in its piece."""
        engine = self._tiktoken
        if engine is None:
            if offsets:
                return [(e.ids, e.offsets) for e in self._backend.encode_batch(pieces, add_special_tokens=False)]
            return [(e.ids, []) for e in self._backend.encode_batch_fast(pieces, add_special_tokens=False)]
        ids = _encode_in_threads(engine.encode_ordinary, pieces)
        if not offsets:
            return [(piece_ids, []) for piece_ids in ids]
        return [(piece_ids, self._byte_spans(piece, piece_ids)) for piece, piece_ids in zip(pieces, ids, strict=True)]

    def _byte_spans(self, piece: str, ids: list[int]) -> list[tuple[int, int]]:
        """Each byte-level token's span of characters in `piece`: the characters its bytes belong to (a token
        holding part of a character spans that character), as the tokenizers backend gives them."""
        table = self._byte_table
        char_at = (
            range(len(piece))
            if piece.isascii()
            else [i for i, c in enumerate(piece) for _ in range(len(c.encode("utf-8", "surrogatepass")))]
        )  # byte offset -> character index
        spans, pos = [], 0
        for token in ids:
            end = pos + len(table[token])
            spans.append((char_at[pos], char_at[end - 1] + 1))
            pos = end
        return spans

    @functools.cached_property
    def _tiktoken(self) -> Any:
        """tiktoken's engine when this tokenizer is OpenAI's GPT-2 (see the module docstring), else None."""
        return tkfiles.gpt2_engine(self._backend) if self._kind in tkfiles.BYTE_LEVEL_KINDS else None

    def _resolve_specials(
        self, allowed: AllowedSpecial, disallowed: AllowedSpecial
    ) -> tuple[frozenset[str], frozenset[str]]:
        for name, value in (("allowed_special", allowed), ("disallowed_special", disallowed)):
            if isinstance(value, str) and value != "all":
                raise TokenizerError(f'{name} must be "all" or a set of strings, e.g. {{{value!r}}}')
        allowed_set = frozenset(self._specials) if allowed == "all" else frozenset(allowed)
        if unknown := allowed_set - self._specials.keys():
            raise TokenizerError(
                f"allowed_special has {sorted(unknown)}, which are not special tokens of this tokenizer; "
                f"its special tokens are {sorted(self._specials)}"
            )
        disallowed_set = frozenset(self._specials) - allowed_set if disallowed == "all" else frozenset(disallowed)
        return allowed_set, disallowed_set

    def _plan(self, text: str, allowed: frozenset[str], disallowed: frozenset[str]) -> list[tuple[int, str | int]]:
        """Cut text into (start, ordinary piece) and (start, special id), in order."""
        if not isinstance(text, str):
            raise TokenizerError(f"expected text as str, got {type(text).__name__}")
        if disallowed:
            _check_disallowed(text, disallowed)
        plan: list[tuple[int, str | int]] = []
        pos = 0
        if allowed:
            for match in _special_regex(allowed).finditer(text):
                self._add_ordinary(plan, text, pos, match.start())
                plan.append((match.start(), self._specials[match.group()]))
                pos = match.end()
        self._add_ordinary(plan, text, pos, len(text))
        return plan

    def _add_ordinary(self, plan: list[tuple[int, str | int]], text: str, start: int, end: int) -> None:
        if start == end:
            return
        piece = text[start:end]
        if self._chars is not None:
            _check_chars(piece, start, self._chars)
        starts = _chunk_starts(piece, CHUNK_CHARS)
        for a, b in zip(starts, [*starts[1:], len(piece)], strict=True):
            plan.append((start + a, piece[a:b]))

    # --- decoding ----------------------------------------------------------------------------

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Text of token ids; for byte-level kinds invalid UTF-8 is handled per `errors` (as bytes.decode)."""
        if self._kind in tkfiles.BYTE_LEVEL_KINDS:
            return self.decode_bytes(ids).decode("utf-8", errors)
        return self._backend.decode(self._checked_ids(ids), skip_special_tokens=False)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Raw bytes of token ids (byte-level kinds may end mid-character); UTF-8 of decode() otherwise."""
        checked = self._checked_ids(ids)
        if self._kind not in tkfiles.BYTE_LEVEL_KINDS:
            return self._backend.decode(checked, skip_special_tokens=False).encode("utf-8")
        table = self._byte_table
        return b"".join([table[i] for i in checked])

    def _checked_ids(self, ids: Iterable[int]) -> list[int]:
        # .tolist() takes numpy arrays and torch tensors without importing either
        checked = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        if checked and (min(checked) < 0 or max(checked) >= self._vocab_size):
            bad = next(i for i in checked if not 0 <= i < self._vocab_size)
            raise TokenizerError(f"token id {bad} is out of range (vocab_size {self._vocab_size})")
        return checked

    @functools.cached_property
    def _byte_table(self) -> list[bytes]:
        """id -> the bytes it stands for, for byte-level vocabularies."""
        byte_of = {c: b for b, c in tkfiles.bytes_to_unicode().items()}
        table = [b""] * self._vocab_size
        for token, i in self._backend.get_vocab(with_added_tokens=True).items():
            if token in self._specials or any(c not in byte_of for c in token):
                table[i] = token.encode("utf-8")
            else:
                table[i] = bytes(byte_of[c] for c in token)
        return table


# --- helpers ----------------------------------------------------------------------------------


def _default_eos(special_tokens: Iterable[str]) -> str | None:
    return tkfiles.GPT2_EOS if tkfiles.GPT2_EOS in special_tokens else None


def _encode_in_threads(encode: Callable[[str], list[int]], pieces: list[str]) -> list[list[int]]:
    """`encode` over pieces, in contiguous groups, one thread per CPU when there is enough text to share (the
    engine releases the GIL while it encodes); alone on the calling thread otherwise."""
    workers = min(os.cpu_count() or 1, len(pieces))
    if workers < 2 or sum(map(len, pieces)) < 2 * CHUNK_CHARS:
        return [encode(piece) for piece in pieces]
    size = -(-len(pieces) // workers)
    groups = [pieces[i : i + size] for i in range(0, len(pieces), size)]
    with ThreadPoolExecutor(len(groups)) as pool:
        return [ids for group in pool.map(lambda g: [encode(piece) for piece in g], groups) for ids in group]


@functools.lru_cache(maxsize=64)
def _special_regex(tokens: frozenset[str]) -> re.Pattern[str]:
    # longest first, so a special that is a prefix of another never wins
    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=lambda t: (-len(t), t))))


def _check_disallowed(text: str, disallowed: frozenset[str]) -> None:
    hits = [(i, t) for t in disallowed if (i := text.find(t)) >= 0]
    if hits:
        index, token = min(hits)
        raise SpecialTokenError(
            f"text contains the special token {token!r} at index {index}, which is disallowed. "
            f"To encode it as its special token id, pass allowed_special={{{token!r}}} (or 'all'); "
            f"to encode it as ordinary text, pass disallowed_special=()."
        )


def _check_chars(piece: str, start: int, chars: frozenset[str]) -> None:
    missing = set(piece) - chars
    if missing:
        index = min(piece.index(c) for c in missing)
        raise TokenizerError(
            f"character {piece[index]!r} (U+{ord(piece[index]):04X}) at index {start + index} is not in "
            f"this character-level vocabulary; build the tokenizer from text that contains it"
        )


def _chunk_starts(text: str, size: int) -> list[int]:
    """Chunk start indices for texts over 2*size characters, each chunk about `size` long.

    A chunk starts only at a "\\n" whose previous character is not whitespace. No pre-token of any kind
    crosses such a point: GPT-2's split regex ends every token that holds a non-space before whitespace,
    and a whitespace run that begins there is matched the same with or without the text before it;
    GPT-1's BERT pre-tokenizer splits at whitespace and char-level at every character. So chunks encode to the same
    ids as the whole text. (Python's \\s covers Unicode White_Space, so isspace() errs on the safe side.)
    """
    starts = [0]
    if len(text) <= 2 * size:
        return starts
    pos = size
    while pos < len(text) - size:
        cut = text.find("\n", pos)
        while cut > 0 and text[cut - 1].isspace():
            cut = text.find("\n", cut + 1)
        if cut <= 0:
            break
        starts.append(cut)
        pos = cut + size
    return starts
