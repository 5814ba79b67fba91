"""gptkit.text.tokenizer against its oracles: tiktoken (GPT-2), transformers (GPT-1, saved directories), golden ids."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gptkit.text.tokenizer as tokmod
from gptkit.errors import ModelNotFoundError, SpecialTokenError, TokenizerError
from gptkit.text.tokenizer import Encoding, Tokenizer

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHAKESPEARE = SHARED / "data" / "tinyshakespeare.txt"
ASSETS = Path(tokmod.__file__).parents[1] / "assets"
GPT2_FILES = (ASSETS / "gpt2" / "encoder.json", ASSETS / "gpt2" / "vocab.bpe")
GPT1_FILES = (ASSETS / "openai-gpt" / "encoder_bpe_40000.json", ASSETS / "openai-gpt" / "vocab_40000.bpe")
# GPT-2's pre-tokenizer regex, as OpenAI published it (encoder.py)
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOT = "<|endoftext|>"

SAMPLES = [
    "Hello, I'm a language model,",
    "",
    " ",
    "\n\n\n",
    "  leading and trailing  ",
    "They'll say it's John's, we've 'd 're 'm 'LL 'S",
    "Numbers: 1234567890 3.14159 1,000,000 ٣٤٥",
    "Café naïve résumé — façade, Ærøskøbing, straße",
    "日本語のテキスト、中文文本，한국어 텍스트",
    "Emoji 😀👍🏽 👨‍👩‍👧‍👦 flags 🇫🇷 and ☃︎",
    "Tabs\tand\r\nCRLF\u00a0nbsp\u2003em-space\u3000ideographic",
    "Combining e\u0301 a\u0308 and zero\u200bwidth",
    "x" * 300 + " " * 50 + "\n" * 7 + "end",
]


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is not beside the repository)")
    return path


@pytest.fixture(scope="module")
def gpt2() -> Tokenizer:
    return Tokenizer.from_pretrained("gpt2")


@pytest.fixture(scope="module")
def gpt1() -> Tokenizer:
    return Tokenizer.from_pretrained("openai-gpt")


@pytest.fixture(scope="module")
def tiktoken_gpt2():
    """tiktoken's gpt2 encoding, built offline from ../shared (tiktoken.get_encoding would download)."""
    tiktoken_load = pytest.importorskip("tiktoken.load")
    ranks = tiktoken_load.load_tiktoken_bpe(str(_require(SHARED / "assets" / "gpt2" / "gpt2.tiktoken")))
    import tiktoken

    return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: 50256})


@pytest.fixture(scope="module")
def shakespeare() -> str:
    return _require(SHAKESPEARE).read_text(encoding="utf-8")


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the chunked parallel path even on short texts."""
    monkeypatch.setattr(tokmod, "CHUNK_CHARS", 8)


# --- golden ids -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(n for n, k in tokmod.PRETRAINED_NAMES.items() if k == "gpt2"))
def test_gpt2_golden_ids_for_every_name(name: str) -> None:
    tok = Tokenizer.from_pretrained(name)
    assert tok.kind == "gpt2"
    assert tok.encode("Hello, I'm a language model,") == [15496, 11, 314, 1101, 257, 3303, 2746, 11]
    assert tok.encode("The elf queen") == [464, 23878, 16599]
    assert (tok.vocab_size, len(tok), tok.eos_token_id, tok.special_tokens) == (50257, 50257, 50256, {EOT: 50256})


def test_gpt2_golden_decode(gpt2: Tokenizer) -> None:
    ids = [15496, 11, 314, 1101, 257, 3303, 2746, 11, 290, 314, 1101, 1016, 284, 1037, 345, 351, 534, 1917, 13, 198]
    assert gpt2.decode(ids) == "Hello, I'm a language model, and I'm going to help you with your problem.\n"


@pytest.mark.parametrize("name", ["openai-gpt", "openai-community/openai-gpt"])
def test_openai_gpt_golden_ids(name: str) -> None:
    tok = Tokenizer.from_pretrained(name)
    assert tok.encode("Hello, my dog is cute and") == [3570, 240, 547, 2585, 544, 4957, 488]
    assert tok.encode("hello, my dog is cute.") == [3570, 240, 547, 2585, 544, 4957, 239]
    assert (tok.kind, tok.vocab_size, tok.eos_token_id) == ("openai-gpt", 40478, None)
    assert tok.token_to_id("<unk>") == 0 and tok.special_tokens == {"<unk>": 0}
    assert tok.decode([3570, 240, 547, 2585, 544, 4957, 239]) == "hello , my dog is cute ."


@pytest.mark.parametrize("text", SAMPLES)
def test_gpt2_round_trip(gpt2: Tokenizer, text: str) -> None:
    ids = gpt2.encode(text)
    assert gpt2.decode(ids) == text
    assert gpt2.decode_bytes(ids) == text.encode("utf-8")


# --- parity with tiktoken and transformers on real text ----------------------------------------


def test_shakespeare_whole_text_matches_tiktoken_and_transformers(gpt2, tiktoken_gpt2, shakespeare) -> None:
    from transformers import GPT2TokenizerFast

    ours = gpt2.encode(shakespeare)
    assert ours == tiktoken_gpt2.encode_ordinary(shakespeare)
    # positional vocab/merges paths: transformers v5 ignores vocab_file=/merges_file= outside from_pretrained
    hf = GPT2TokenizerFast(*map(str, GPT2_FILES))
    assert ours == hf(shakespeare)["input_ids"]
    assert gpt2.decode(ours) == shakespeare


def test_shakespeare_line_by_line_matches_tiktoken_and_transformers(gpt2, tiktoken_gpt2, shakespeare) -> None:
    from transformers import GPT2TokenizerFast

    lines = shakespeare.splitlines(keepends=True)
    ours = gpt2.encode_batch(lines)
    assert ours == tiktoken_gpt2.encode_ordinary_batch(lines)
    assert ours == GPT2TokenizerFast(*map(str, GPT2_FILES))(lines)["input_ids"]


def test_chunked_encoding_equals_whole(gpt2, tiktoken_gpt2, shakespeare, small_chunks) -> None:
    text = shakespeare[:50_000] + "".join(SAMPLES) + "a\n\nb \nc\n d\t\n\ne\n"
    assert gpt2.encode(text) == tiktoken_gpt2.encode_ordinary(text)
    enc = gpt2.encode_with_offsets(text)
    assert enc.offsets[0][0] == 0 and enc.offsets[-1][1] == len(text)
    assert all(b[0] <= a[1] <= b[1] for a, b in pairwise(enc.offsets))


# fmt: off
FRAGMENTS = [
    "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "n't", "''", "'",
    " ", "  ", "   ", "\t", "\n", "\n\n", " \n", "\r\n", "\u00a0", "\u3000", "\u2028",
    "0", "42", " 123", "١٢٣", "½", "Ⅻ", "3.14", "1,000",
    "Hello", " world", "über", " straße", "naïve", "Ελλάδα", " Москва", "עברית", "العربية", "हिन्दी",
    "日本語", "中文", "한국어", "ไทย", "😀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "e\u0301", "\u200b", "\ufeff",
    "!!", "?", "...", "--", "—", "«»", "()", "$", "@#", "\x00", "\x1f", "\x7f", "\U0010ffff",
]
# fmt: on
# fuzzed Unicode text: any code point but surrogates (not encodable as UTF-8), mixed with fragments above
unicode_text = st.lists(
    st.one_of(st.text(st.characters(exclude_categories=("Cs",)), max_size=6), st.sampled_from(FRAGMENTS)),
    max_size=25,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=unicode_text, chunk=st.sampled_from([8, 1 << 20]))
def test_fuzzed_text_matches_tiktoken_with_valid_offsets(gpt2, tiktoken_gpt2, text: str, chunk: int) -> None:
    old, tokmod.CHUNK_CHARS = tokmod.CHUNK_CHARS, chunk  # hypothesis forbids function-scoped fixtures here
    try:
        enc = gpt2.encode_with_offsets(text, disallowed_special=())
        ids = gpt2.encode(text, disallowed_special=())
    finally:
        tokmod.CHUNK_CHARS = old
    assert enc.ids == ids == tiktoken_gpt2.encode(text, disallowed_special=())
    assert gpt2.decode(ids) == text
    # the spans transformers' byte-level pipeline gives (gptkit's own tokenizers backend, unchunked)
    assert enc.offsets == [tuple(o) for o in gpt2.backend.encode(text, add_special_tokens=False).offsets]
    previous = (0, 0)
    for token_id, (start, end) in zip(ids, enc.offsets, strict=True):
        assert 0 <= start < end <= len(text)
        assert previous[0] <= start <= previous[1] and previous[1] <= end  # in order, no gaps
        # the token's bytes lie inside the characters its span names
        assert gpt2.decode_bytes([token_id]) in text[start:end].encode("utf-8")
        previous = (start, end)
    if text:
        assert enc.offsets[0][0] == 0 and enc.offsets[-1][1] == len(text)


# --- which engine encodes -------------------------------------------------------------------------


def test_openai_gpt2_vocabulary_encodes_through_tiktoken_wherever_it_comes_from(gpt2, trained, tmp_path) -> None:
    from transformers import GPT2TokenizerFast

    GPT2TokenizerFast(*map(str, GPT2_FILES)).save_pretrained(tmp_path / "hf")
    for tok in (
        gpt2,
        Tokenizer.from_pretrained(gpt2.save_pretrained(tmp_path / "ours")),
        Tokenizer.from_pretrained(tmp_path / "hf"),
    ):
        assert tok._tiktoken is not None
    others = (Tokenizer.from_pretrained("openai-gpt"), Tokenizer.char_level("abc"), trained)
    assert all(tok._tiktoken is None for tok in others)


def test_foreign_byte_level_vocabulary_encodes_as_transformers(tmp_path: Path) -> None:
    """GPT-2's files with the last 500 merges (and their tokens) left out: a GPT-2-kind tokenizer that is not
    OpenAI's, so it encodes through its tokenizers pipeline, exactly as transformers does."""
    from transformers import GPT2TokenizerFast

    vocab = json.loads(GPT2_FILES[0].read_text(encoding="utf-8"))
    merges = GPT2_FILES[1].read_text(encoding="utf-8").rstrip("\n").split("\n")
    kept = {t: i for t, i in vocab.items() if i < 50256 - 500}
    kept[EOT] = len(kept)
    folder = tmp_path / "foreign"
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(kept), encoding="utf-8")
    (folder / "merges.txt").write_text("\n".join(merges[:-500]) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}), encoding="utf-8")
    tok = Tokenizer.from_pretrained(folder)
    assert tok.kind == "gpt2" and tok._tiktoken is None
    hf = GPT2TokenizerFast(str(folder / "vocab.json"), str(folder / "merges.txt"))
    assert [tok.encode(t) for t in SAMPLES] == hf(SAMPLES)["input_ids"]


# --- GPT-1 -------------------------------------------------------------------------------------

GPT1_SENTENCES = [
    "Hello, my dog is cute and",
    "The Quick BROWN fox -- jumped over 3 lazy dogs in 1999!",
    "Café, naïve, résumé; Ångström & Ærøskøbing? Straße…",
    "He said: \"it's 12:30pm\", didn't he? (Yes.) [no] {maybe}",
    "Numbers 3.14159, 1,000,000 and 42nd street; e-mail: a@b.com",
    "東京 and 北京 are cities; Москва too. Emoji 😀 are unknown.",
    "  multiple   spaces\tand\ttabs\nand newlines\r\n  ",
    "ALL CAPS SHOUTING!!! whispers... and ellipses…",
]


def test_gpt1_matches_transformers(gpt1: Tokenizer, shakespeare: str) -> None:
    from transformers import OpenAIGPTTokenizer

    hf = OpenAIGPTTokenizer(*map(str, GPT1_FILES))
    lines = shakespeare.splitlines()[:4000] + GPT1_SENTENCES
    assert gpt1.encode_batch(lines) == hf(lines)["input_ids"]
    excerpt = shakespeare[:100_000]  # long enough to take the chunked path
    assert gpt1.encode(excerpt) == hf(excerpt)["input_ids"]


@pytest.mark.parametrize("text", GPT1_SENTENCES)
def test_gpt1_sentences_match_transformers(gpt1: Tokenizer, text: str) -> None:
    from transformers import OpenAIGPTTokenizer

    hf = OpenAIGPTTokenizer(*map(str, GPT1_FILES))
    ids = gpt1.encode(text)
    assert ids == hf(text)["input_ids"]
    assert gpt1.decode(ids) == hf.decode(ids)
    enc = gpt1.encode_with_offsets(text)
    assert all(0 <= s <= e <= len(text) for s, e in enc.offsets)


def test_gpt1_offsets_point_into_the_original_text(gpt1: Tokenizer) -> None:
    text = "Café NAÏVE"
    enc = gpt1.encode_with_offsets(text)
    assert [text[s:e] for s, e in enc.offsets] == ["Café", "NAÏVE"]


# --- special tokens ----------------------------------------------------------------------------


def test_special_token_is_an_error_by_default(gpt2: Tokenizer) -> None:
    with pytest.raises(SpecialTokenError) as info:
        gpt2.encode(f"one{EOT}two")
    message = str(info.value)
    assert EOT in message and "allowed_special={'<|endoftext|>'}" in message and "disallowed_special=()" in message
    with pytest.raises(SpecialTokenError):
        gpt2.encode_batch(["fine", f"not {EOT}"])
    with pytest.raises(SpecialTokenError):
        gpt2.encode(f"one{EOT}two", allowed_special=set(), disallowed_special={EOT})


def test_allowed_special_token_is_one_id(gpt2: Tokenizer, tiktoken_gpt2) -> None:
    text = f"one{EOT}two{EOT}{EOT} three"
    for allowed in ({EOT}, frozenset({EOT}), "all"):
        ids = gpt2.encode(text, allowed_special=allowed)
        assert ids == tiktoken_gpt2.encode(text, allowed_special={EOT})
        assert ids.count(50256) == 3
    enc = gpt2.encode_with_offsets(text, allowed_special="all")
    assert [text[s:e] for s, e in enc.offsets] == ["one", EOT, "two", EOT, EOT, " three"]
    assert gpt2.decode(enc.ids) == text
    assert gpt2.encode_batch([text, "x"], allowed_special="all") == [enc.ids, gpt2.encode("x")]


def test_disallowed_empty_encodes_special_as_text(gpt2: Tokenizer, tiktoken_gpt2) -> None:
    text = f"one{EOT}two"
    ids = gpt2.encode(text, disallowed_special=())
    assert ids == tiktoken_gpt2.encode(text, disallowed_special=())
    assert 50256 not in ids and gpt2.decode(ids) == text


def test_bad_special_arguments(gpt2: Tokenizer) -> None:
    with pytest.raises(TokenizerError, match="not special tokens"):
        gpt2.encode("x", allowed_special={"<|im_start|>"})
    with pytest.raises(TokenizerError, match="set of strings"):
        gpt2.encode("x", allowed_special=EOT)  # a bare string would silently mean its characters


# --- offsets and bytes -------------------------------------------------------------------------


def test_offsets_of_split_multibyte_characters(gpt2: Tokenizer) -> None:
    text = "a 😀ü"
    enc = gpt2.encode_with_offsets(text)
    assert isinstance(enc, Encoding)
    pieces = [gpt2.decode_bytes([i]) for i in enc.ids]
    assert b"".join(pieces) == text.encode("utf-8")
    emoji = text.index("😀")
    assert [(s, e) for s, e in enc.offsets if e == emoji + 1] == [(emoji - 1, emoji + 1), (emoji, emoji + 1)]


def test_decode_bytes_keeps_partial_characters(gpt2: Tokenizer) -> None:
    ids = gpt2.encode("😀")
    assert len(ids) > 1
    head = gpt2.decode_bytes(ids[:1])
    assert "😀".encode().startswith(head) and head != "😀".encode()
    assert gpt2.decode(ids[:1]) == "\ufffd" * len(head.decode("utf-8", "replace"))
    with pytest.raises(UnicodeDecodeError):
        gpt2.decode(ids[:1], errors="strict")


def test_ids_and_tokens(gpt2: Tokenizer) -> None:
    assert gpt2.id_to_token(15496) == "Hello" and gpt2.token_to_id("Hello") == 15496
    assert gpt2.id_to_token(50256) == EOT
    for bad in (-1, 50257):
        with pytest.raises(TokenizerError, match=str(bad)):
            gpt2.id_to_token(bad)
        with pytest.raises(TokenizerError, match="out of range"):
            gpt2.decode([1, bad])
    with pytest.raises(TokenizerError, match="not a token"):
        gpt2.token_to_id("no-such-token-here")


# --- char-level and trained BPE ----------------------------------------------------------------


def test_char_level() -> None:
    corpus = "hello world\nHELLO!"
    tok = Tokenizer.char_level(corpus)
    assert tok.vocab_size == len(set(corpus)) and tok.eos_token_id is None
    assert [tok.id_to_token(i) for i in range(tok.vocab_size)] == sorted(set(corpus))
    assert Tokenizer.char_level(reversed(corpus)).encode(corpus) == tok.encode(corpus)  # order-independent
    assert tok.decode(tok.encode(corpus)) == corpus
    enc = tok.encode_with_offsets("lo\nl")
    assert enc.offsets == [(0, 1), (1, 2), (2, 3), (3, 4)]
    with pytest.raises(TokenizerError, match=r"'z'.*index 6"):
        tok.encode("hello zoo")


def test_char_level_with_specials_and_long_text(small_chunks: None) -> None:
    tok = Tokenizer.char_level("abc \n", special_tokens=[EOT])
    assert tok.special_tokens == {EOT: 5} and tok.eos_token_id == 5
    text = "abc cab\nbca \n\nabc\n" * 5
    ids = tok.encode(text + EOT, allowed_special="all")
    assert ids[-1] == 5 and tok.decode(ids) == text + EOT
    with pytest.raises(TokenizerError, match="single characters"):
        Tokenizer.char_level(["ab", "c"])


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    lines = [
        f"The {w} says hello to the {v} number {n}."
        for n, (w, v) in enumerate([("cat", "dog"), ("dog", "bird"), ("bird", "cat"), ("fox", "hen")] * 40)
    ]
    path.write_text("\n".join(lines) + "\nCafé naïve 😀 it's they'll\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(corpus_file: Path) -> Tokenizer:
    return Tokenizer.train_bpe([corpus_file], 400, show_progress=False)


def test_train_bpe(trained: Tokenizer, corpus_file: Path) -> None:
    assert trained.kind == "bpe" and 256 + 1 < trained.vocab_size <= 400
    assert trained.special_tokens == {EOT: 0} and trained.eos_token_id == 0
    text = corpus_file.read_text(encoding="utf-8")
    ids = trained.encode(text)
    assert len(ids) < len(text.encode("utf-8")) / 2  # it learned merges
    for sample in [text, *SAMPLES]:
        assert trained.decode(trained.encode(sample)) == sample  # bytes make every text encodable
    again = Tokenizer.train_bpe(str(corpus_file), 400, show_progress=False)
    assert again.encode(text) == ids  # deterministic


def test_train_bpe_rejects_bad_arguments(corpus_file: Path, tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="vocab_size=257 is too small"):
        Tokenizer.train_bpe([corpus_file], 257, show_progress=False)
    with pytest.raises(TokenizerError, match="missing.txt"):
        Tokenizer.train_bpe([tmp_path / "missing.txt"], 300, show_progress=False)


# --- save_pretrained / from_pretrained ---------------------------------------------------------


def _tokenizers(trained: Tokenizer) -> dict[str, Tokenizer]:
    return {
        "gpt2": Tokenizer.from_pretrained("gpt2"),
        "openai-gpt": Tokenizer.from_pretrained("openai-gpt"),
        "char": Tokenizer.char_level("".join(SAMPLES) + "<|>" + "".join(GPT1_SENTENCES), special_tokens=[EOT]),
        "bpe": trained,
    }


@pytest.mark.parametrize("kind", ["gpt2", "openai-gpt", "char", "bpe"])
def test_save_pretrained_loads_identically_in_gptkit_and_transformers(kind, trained, tmp_path) -> None:
    from transformers import AutoTokenizer

    tok = _tokenizers(trained)[kind]
    out = tok.save_pretrained(tmp_path / kind)
    names = sorted(p.name for p in out.iterdir())
    expected = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    if kind in ("gpt2", "openai-gpt"):
        expected |= {"vocab.json", "merges.txt"}
    assert names == sorted(expected)  # and no temporary files left behind
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["gptkit_kind"] == kind
    assert config["tokenizer_class"] == {"gpt2": "GPT2Tokenizer", "openai-gpt": "OpenAIGPTTokenizer"}.get(
        kind, "PreTrainedTokenizerFast"
    )

    mine, hf = Tokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(str(out))
    assert (mine.kind, mine.vocab_size, mine.eos_token_id, mine.special_tokens) == (
        tok.kind,
        tok.vocab_size,
        tok.eos_token_id,
        tok.special_tokens,
    )
    texts = [s for s in SAMPLES + GPT1_SENTENCES if kind != "char" or set(s) <= set(_chars(tok))]
    texts.append(f"{texts[1]}{EOT}{texts[2]}")
    ids = [tok.encode(t, allowed_special="all") for t in texts]
    assert [mine.encode(t, allowed_special="all") for t in texts] == ids
    assert hf(texts)["input_ids"] == ids
    assert hf.eos_token_id == tok.eos_token_id
    if kind != "openai-gpt":  # GPT-1 lower-cases and drops spacing; everything else round-trips
        assert [hf.decode(i) for i in ids] == [mine.decode(i) for i in ids] == texts


def _chars(tok: Tokenizer) -> list[str]:
    return [tok.id_to_token(i) for i in range(tok.vocab_size) if tok.id_to_token(i) not in tok.special_tokens]


@pytest.mark.parametrize("kind", ["gpt2", "openai-gpt"])
def test_loads_foreign_transformers_directories(kind: str, tmp_path: Path) -> None:
    from transformers import GPT2TokenizerFast, OpenAIGPTTokenizer

    cls, paths = (GPT2TokenizerFast, GPT2_FILES) if kind == "gpt2" else (OpenAIGPTTokenizer, GPT1_FILES)
    cls(*map(str, paths)).save_pretrained(tmp_path / "full")
    reference = Tokenizer.from_pretrained("gpt2" if kind == "gpt2" else "openai-gpt")
    text = "Hello, World! It's 3.14 — naïve café.\n"
    assert Tokenizer.from_pretrained(tmp_path / "full").encode(text) == reference.encode(text)

    # the older layout (transformers v4, hub repos): vocab.json + merges.txt, no tokenizer.json
    slow = tmp_path / "slow"
    slow.mkdir()
    shutil.copy(paths[0], slow / "vocab.json")
    shutil.copy(paths[1], slow / "merges.txt")
    (slow / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": cls.__name__}), encoding="utf-8")
    loaded = Tokenizer.from_pretrained(slow)
    assert (loaded.kind, loaded.encode(text), loaded.eos_token_id) == (
        kind,
        reference.encode(text),
        reference.eos_token_id,
    )
    # hub snapshots of openai-community/gpt2 name no tokenizer_class; config.json's model_type says it
    (slow / "tokenizer_config.json").write_text("{}", encoding="utf-8")
    (slow / "config.json").write_text(json.dumps({"model_type": kind}), encoding="utf-8")
    assert Tokenizer.from_pretrained(slow).encode(text) == reference.encode(text)

    # OpenAI's release layout (what the checkpoint loader hands over for original weights)
    release = tmp_path / "release"
    release.mkdir()
    for path in paths:
        shutil.copy(path, release / path.name)
    assert Tokenizer.from_pretrained(release).encode(text) == reference.encode(text)


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ModelNotFoundError) as info:
        Tokenizer.from_pretrained("gpt3-turbo")
    assert "gpt3-turbo" in str(info.value) and "openai-community/gpt2-xl" in str(info.value)


def test_missing_and_malformed_files(gpt2: Tokenizer, tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="tokenizer_config.json"):
        Tokenizer.from_pretrained(tmp_path)  # an empty directory

    out = gpt2.save_pretrained(tmp_path / "saved")
    (out / "tokenizer.json").unlink()
    (out / "merges.txt").unlink()
    with pytest.raises(TokenizerError, match="merges.txt not found"):
        Tokenizer.from_pretrained(out)

    out = gpt2.save_pretrained(tmp_path / "bad-json")
    (out / "tokenizer_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"tokenizer_config.json: not valid JSON \(line 1"):
        Tokenizer.from_pretrained(out)

    out = gpt2.save_pretrained(tmp_path / "bad-backend")
    (out / "tokenizer.json").write_text('{"version": "1.0"}', encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"tokenizer.json is not a valid"):
        Tokenizer.from_pretrained(out)

    out = gpt2.save_pretrained(tmp_path / "bad-merges")
    (out / "tokenizer.json").unlink()
    (out / "merges.txt").write_text("#version: 0.2\nĠ t\nthree symbols here\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"merges.txt line 3"):
        Tokenizer.from_pretrained(out)

    out = gpt2.save_pretrained(tmp_path / "bad-class")
    (out / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer"}', encoding="utf-8")
    with pytest.raises(TokenizerError, match="BertTokenizer"):
        Tokenizer.from_pretrained(out)


def test_import_does_not_pull_in_torch() -> None:
    code = "import gptkit.text.tokenizer, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
