"""TextStream's incremental decoding against the full re-decode it replaces."""

from __future__ import annotations

import codecs
import random

import pytest

from gptkit.generation.decode import TextStream


class ReDecodingStream:
    """The oracle: the earlier TextStream, which decoded the whole sequence again on every push."""

    def __init__(self, tokenizer, stop=()) -> None:
        self.tokenizer, self.stop, self.ids, self.shown, self.stopped = tokenizer, tuple(stop), [], "", False

    def _decoded(self, final: bool) -> str:
        raw = self.tokenizer.decode_bytes(self.ids)
        return codecs.getincrementaldecoder("utf-8")("replace").decode(raw, final=final)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self._decoded(final=False)
        cut = min((i for s in self.stop if (i := text.find(s, len(self.shown))) >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return self._release(text[:cut])
        held = max(
            [n for s in self.stop for n in range(1, min(len(s) - 1, len(text)) + 1) if text.endswith(s[:n])],
            default=0,
        )
        return self._release(text[: len(text) - held])

    def flush(self) -> str:
        return "" if self.stopped else self._release(self._decoded(final=True))

    def _release(self, visible: str) -> str:
        if not visible.startswith(self.shown):
            return ""
        delta, self.shown = visible[len(self.shown) :], visible
        return delta


class ByteTokenizer:
    """A byte-level tokenizer whose tokens are random byte strings: pieces of multi-byte characters, invalid bytes."""

    kind = "gpt2"

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        text = "ab cé€😀 ab\n"
        pieces = [text.encode()[i : i + n] for i in range(len(text.encode())) for n in (1, 2, 3)]
        self.table = (
            pieces + [b"\xff", b"\xe2\x82", b"\xac", b"\xf0\x9f"] + [bytes([rng.randrange(256)]) for _ in range(8)]
        )

    def decode_bytes(self, ids: list[int]) -> bytes:
        return b"".join(self.table[i] for i in ids)


def _deltas(stream, ids: list[int]) -> list[str]:
    out = []
    for token in ids:
        out.append(stream.push(token))
        if stream.stopped:
            return out
    return out + [stream.flush()]


@pytest.mark.parametrize("seed", range(40))
def test_incremental_deltas_equal_the_full_re_decode_on_random_byte_level_text(seed: int) -> None:
    tokenizer = ByteTokenizer(seed)
    rng = random.Random(seed)
    ids = [rng.randrange(len(tokenizer.table)) for _ in range(60)]
    text = tokenizer.decode_bytes(ids).decode("utf-8", "replace")
    start = rng.randrange(len(text) - 4)
    stops = [(), ("é€",), (text[start : start + rng.randint(2, 4)], "zz"), ("ab ab", "b c", "😀")][seed % 4]
    assert _deltas(TextStream(tokenizer, stops), ids) == _deltas(ReDecodingStream(tokenizer, stops), ids)


def test_incremental_deltas_equal_the_full_re_decode_with_gpt1s_word_joining_tokenizer() -> None:
    from gptkit.text.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_pretrained("openai-gpt")
    ids = tokenizer.encode("hello world, it's me. a naive cafe! numbers 123 456 and (brackets) end")
    for stops in [(), ("me. a",), ("cafe", "s 1")]:
        assert _deltas(TextStream(tokenizer, stops), ids) == _deltas(ReDecodingStream(tokenizer, stops), ids)
