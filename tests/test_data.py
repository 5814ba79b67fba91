"""gptkit.training.data: corpora -> train.bin / val.bin / meta.json / tokenizer, and TokenData reading them back."""

from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from gptkit.cli import main as cli
from gptkit.errors import ConfigError, DataError
from gptkit.text.tokenizer import Tokenizer
from gptkit.training import corpus, data
from gptkit.training.data import PrepareConfig, TokenData, prepare, split_point, token_dtype, tokenizer_fingerprint
from test_corpus import JOKES, TEXT, write_csv, write_jsonl

SHARED = Path(__file__).resolve().parents[2] / "shared"
EOS = 50256


@pytest.fixture(scope="module")
def gpt2() -> Tokenizer:
    return Tokenizer.from_pretrained("gpt2")


def run(tmp_path: Path, inputs: list[Path], name: str = "out", **overrides) -> tuple[data.DataInfo, TokenData]:
    info = prepare(PrepareConfig(inputs, tmp_path / name, **overrides), progress=False)
    return info, TokenData.open(tmp_path / name)


def stream(d: TokenData) -> list[int]:
    return [*d.train.tolist(), *d.val.tolist()]


def expected_ids(tok: Tokenizer, docs: list[str], eos: int | None = EOS) -> list[int]:
    return [i for doc in docs for i in [*tok.encode(doc), *([eos] if eos is not None else [])]]


# --- text files and the nanoGPT split ---------------------------------------------------------------


@pytest.mark.parametrize("read_chars", [corpus.READ_CHARS, 50])  # 50: the file is read and encoded in pieces
def test_txt_is_one_document_split_90_10_like_nanogpt(tmp_path, gpt2, monkeypatch, read_chars) -> None:
    monkeypatch.setattr(corpus, "READ_CHARS", read_chars)
    (src := tmp_path / "input.txt").write_text(TEXT)
    info, d = run(tmp_path, [src])
    ids = gpt2.encode(TEXT) + [EOS]
    n = len(ids)
    assert d.train.tolist() == ids[: int(n * 0.9)] and d.val.tolist() == ids[int(n * 0.9) :]
    assert (info.train_tokens, info.val_tokens, info.documents, info.skipped) == (int(n * 0.9), n - int(n * 0.9), 1, 0)
    assert info.summary().endswith("), 1 document, 0 rows skipped")
    assert d.train.dtype == np.dtype("<u2") and not d.train.flags.writeable and isinstance(d.train, np.memmap)
    assert d.meta["tokens"] == {"train": len(d.train), "val": len(d.val)} and d.eos_token_id == EOS
    assert d.meta["sources"][0]["sha256"] and d.meta["config"]["tokenizer"] == "gpt2"


def test_text_modes_and_no_eos(tmp_path, gpt2) -> None:  # the modes themselves: test_corpus
    (src := tmp_path / "a.txt").write_text("one line\n\n  \ntwo\nlines\n\n\nthree\n")
    _, d = run(tmp_path, [src], "paras", text_mode="blank-lines", val_fraction=0)
    assert stream(d) == expected_ids(gpt2, ["one line", "two\nlines", "three"]) and d.meta["documents"] == 3
    assert len(d.val) == 0
    _, d = run(tmp_path, [src], "noeos", text_mode="lines", val_fraction=0, append_eos=False)
    assert stream(d) == expected_ids(gpt2, ["one line", "two", "lines", "three"], eos=None)
    assert d.meta["eos_appended"] is False and d.eos_token_id == EOS


def test_each_input_keeps_its_own_tail_for_validation(tmp_path, gpt2) -> None:
    texts = ["alpha beta gamma delta " * 30, "one two three four five " * 50]
    paths = [tmp_path / "a.txt", tmp_path / "b.txt"]
    for p, t in zip(paths, texts, strict=True):
        p.write_text(t)
    _, d = run(tmp_path, paths, val_fraction=0.25)
    per_input = [gpt2.encode(t) + [EOS] for t in texts]
    cuts = [split_point(len(ids), 0.25) for ids in per_input]
    assert d.train.tolist() == per_input[0][: cuts[0]] + per_input[1][: cuts[1]]
    assert d.val.tolist() == per_input[0][cuts[0] :] + per_input[1][cuts[1] :]


def test_endoftext_inside_a_document_is_ordinary_text(tmp_path, gpt2) -> None:
    (src := tmp_path / "a.jsonl").write_text(json.dumps({"text": "a<|endoftext|>b"}) + "\n")
    _, d = run(tmp_path, [src], val_fraction=0)
    assert stream(d) == gpt2.encode("a<|endoftext|>b", disallowed_special=()) + [EOS]
    assert stream(d).count(EOS) == 1


# --- bad rows (which rows are bad, and why: test_corpus) ---------------------------------------------


def test_bad_rows_are_skipped_counted_and_reported_in_meta(tmp_path, gpt2, monkeypatch) -> None:
    src = write_jsonl(tmp_path / "docs.jsonl")
    info, d = run(tmp_path, [src], val_fraction=0)
    assert stream(d) == expected_ids(gpt2, ["Hello world.", "Bye <3"])
    assert info.skipped == 4 and d.meta["skipped"]["count"] == 4 and info.documents == 2
    assert [(b.source, b.line) for b in info.bad_rows] == [(str(src), line) for line in (2, 3, 5, 6)]
    assert d.meta["skipped"]["rows"][0] == {"source": str(src), "line": 2, "reason": info.bad_rows[0].reason}
    monkeypatch.setattr(data, "MAX_REPORTED", 3)  # all are counted, the first MAX_REPORTED are kept
    info, d = run(tmp_path, [src, src], "twice", val_fraction=0)
    assert info.skipped == 8 and len(info.bad_rows) == len(d.meta["skipped"]["rows"]) == 3
    _, d = run(tmp_path, [src], "body", jsonl_field="body", val_fraction=0)
    assert stream(d) == expected_ids(gpt2, ["no text field"])


def test_on_error_fail_raises_naming_file_and_line(tmp_path) -> None:
    src = write_jsonl(tmp_path / "docs.jsonl")
    with pytest.raises(DataError, match=rf"{src}:2: not valid JSON"):
        prepare(PrepareConfig([src], tmp_path / "out", on_error="fail"), progress=False)
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["docs.jsonl"]


# --- tokenizers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["char", "bpe:300"])
def test_char_and_trained_bpe_round_trip_through_the_data_dir(tmp_path, spec) -> None:
    src = write_csv(tmp_path / "jokes.csv", [(str(i), q, a) for i, (q, a) in enumerate(JOKES)])
    info, d = run(tmp_path, [src], tokenizer=spec, csv_template="JOKE: {Question} {Answer}")
    tok = d.tokenizer
    assert tok.kind == spec.split(":")[0] and tokenizer_fingerprint(tok) == d.fingerprint == info.tokenizer_fingerprint
    docs = [f"JOKE: {q} {a}" for q, a in JOKES]
    if spec == "char":  # no end-of-text token: documents are joined with no separator
        assert tok.eos_token_id is None and d.eos_token_id is None and tok.vocab_size == len(set("".join(docs)))
        assert tok.decode(stream(d)) == "".join(docs)
    else:
        assert tok.vocab_size == d.vocab_size <= 300 and d.eos_token_id == tok.eos_token_id
        assert tok.decode(stream(d)) == "".join(doc + "<|endoftext|>" for doc in docs)
        assert stream(d) == expected_ids(tok, docs, eos=tok.eos_token_id)
    assert sorted(p.name for p in d.path.iterdir()) == ["meta.json", "tokenizer", "train.bin", "val.bin"]


def test_uint32_for_vocabularies_over_65536(tmp_path) -> None:
    assert (token_dtype(65536), token_dtype(65537)) == (np.dtype("<u2"), np.dtype("<u4"))
    chars = [chr(c) for c in range(0x100, 0x100 + 70_000) if not 0xD800 <= c <= 0xDFFF]
    (src := tmp_path / "wide.txt").write_text("".join(chars), encoding="utf-8")
    info, d = run(tmp_path, [src], tokenizer="char", val_fraction=0)
    assert info.dtype == "uint32" and d.train.dtype == np.dtype("<u4") and d.vocab_size == len(chars)
    assert d.train.tolist() == list(range(len(chars)))  # sorted characters get ids in order
    raw = np.fromfile(d.path / "train.bin", dtype="<u4")
    assert raw[-1] == len(chars) - 1


def test_fingerprint_is_stable_across_save_and_load_and_differs_between_tokenizers(tmp_path, gpt2) -> None:
    char = Tokenizer.char_level("hello world")
    for tok in (gpt2, char):
        assert tokenizer_fingerprint(
            Tokenizer.from_pretrained(tok.save_pretrained(tmp_path / tok.kind))
        ) == tokenizer_fingerprint(tok)
    prints = {
        tokenizer_fingerprint(t)
        for t in (gpt2, char, Tokenizer.char_level("hello worlds"), Tokenizer.from_pretrained("openai-gpt"))
    }
    assert len(prints) == 4 and all(len(p) == 64 for p in prints)


# --- streaming, atomicity, errors ---------------------------------------------------------------------


def test_large_jsonl_prepares_in_constant_memory(tmp_path, gpt2, monkeypatch) -> None:
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "quickly", "because", "it", "was", "warm", "Tuesday", "42"]
    docs = [" ".join(rng.choices(words, k=rng.randint(20, 40))) for _ in range(20_000)]
    (src := tmp_path / "big.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    peaks = []
    batches = data._batches

    def traced_batches(items):  # trace the streaming phase only, not loading and hashing the tokenizer
        stream = batches(items)
        yield next(stream)  # encoding the first batch builds the tokenizer's engine (tiktoken's): loading
        tracemalloc.start()
        try:
            yield from stream
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()

    monkeypatch.setattr(data, "BATCH_DOCS", 128)
    monkeypatch.setattr(data, "_batches", traced_batches)
    info = prepare(PrepareConfig([src], tmp_path / "out"), progress=False)
    total = info.train_tokens + info.val_tokens
    assert info.documents == 20_000 and total > 600_000
    # the corpus's tokens as Python ints or int64 would take >= 8 bytes each; a batch of 128 documents is ~1%
    assert peaks[0] < total * 8 / 10, (peaks, total)
    d = TokenData.open(tmp_path / "out")
    head = expected_ids(gpt2, docs[:100])
    assert d.train[: len(head)].tolist() == head and d.val[-3:].tolist() == (gpt2.encode(docs[-1]) + [EOS])[-3:]


def test_interrupted_prepare_leaves_the_existing_directory_untouched(tmp_path, monkeypatch) -> None:
    (src := tmp_path / "a.txt").write_text(TEXT)
    prepare(PrepareConfig([src], tmp_path / "out"), progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    (src2 := tmp_path / "b.jsonl").write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(50)))
    monkeypatch.setattr(data, "BATCH_DOCS", 10)
    calls = []

    def failing_encode(tok, batch, eos, dtype):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return np.zeros(len(batch), dtype)

    monkeypatch.setattr(data, "_encode", failing_encode)
    with pytest.raises(KeyboardInterrupt):
        prepare(PrepareConfig([src2], tmp_path / "out"), progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.jsonl", "out"]


def test_input_errors_name_the_file(tmp_path) -> None:
    (empty := tmp_path / "empty.txt").write_text("")
    (blank := tmp_path / "blank.jsonl").write_text("\n\n")
    (odd := tmp_path / "notes.md").write_text("x")
    cases = [
        (tmp_path / "missing.txt", "missing.txt not found"),
        (empty, "empty.txt: no documents"),
        (blank, "blank.jsonl: no documents"),
        (odd, r"notes.md: cannot tell the format from the suffix '.md'"),
    ]
    for path, message in cases:
        with pytest.raises(DataError, match=message):
            prepare(PrepareConfig([path], tmp_path / "out"), progress=False)
    _, d = run(tmp_path, [odd], format="text", tokenizer="char")
    assert d.tokenizer.decode(stream(d)) == "x"
    for bad in (dict(val_fraction=1.0), dict(tokenizer="bpe:12"), dict(on_error="ignore"), dict(csv_template="{}")):
        with pytest.raises(ConfigError):
            PrepareConfig([odd], tmp_path / "o", **bad)


def test_refuses_to_replace_a_directory_that_is_not_a_data_dir(tmp_path) -> None:
    (home := tmp_path / "home").mkdir()
    (home / "precious.txt").write_text(TEXT)
    with pytest.raises(DataError, match="contains the input"):
        prepare(PrepareConfig([home / "precious.txt"], home), progress=False)
    (other := tmp_path / "other").mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="is not a gptkit data directory"):
        prepare(PrepareConfig([home / "precious.txt"], other), progress=False)
    assert (home / "precious.txt").read_text() == TEXT and (other / "notes.txt").read_text() == "keep me"


def test_token_data_open_names_what_is_wrong(tmp_path) -> None:
    (src := tmp_path / "a.txt").write_text(TEXT)
    out = tmp_path / "out"
    with pytest.raises(DataError, match="meta.json: not found"):
        TokenData.open(out)
    prepare(PrepareConfig([src], out), progress=False)
    meta = json.loads((out / "meta.json").read_text())
    for field, value, message in [
        ("vocab_size", "big", "field 'vocab_size' must be a positive integer"),
        ("dtype", "uint32", "field 'dtype' must be 'uint16' for vocab_size 50257"),
        ("tokens", {"train": 1}, "field 'tokens' must be"),
    ]:
        (out / "meta.json").write_text(json.dumps({**meta, field: value}))
        with pytest.raises(DataError, match=message):
            TokenData.open(out)
    (out / "meta.json").write_text(json.dumps(meta))
    with open(out / "val.bin", "ab") as f:
        f.write(b"\0")
    with pytest.raises(DataError, match=r"val.bin has \d+ bytes but meta.json says"):
        TokenData.open(out)
    (out / "meta.json").write_text(json.dumps({**meta, "tokens": {"train": meta["tokens"]["train"], "val": 0}}))
    (out / "val.bin").write_bytes(b"")
    d = TokenData.open(out)
    assert len(d.val) == 0 and "val=0" in repr(d)
    Tokenizer.char_level("abc").save_pretrained(out / "tokenizer")
    with pytest.raises(DataError, match="does not match tokenizer_fingerprint"):
        _ = d.tokenizer


def test_cli_prepare(tmp_path, capsys) -> None:
    src = write_jsonl(tmp_path / "docs.jsonl")
    assert cli(["prepare", str(src), "--out", str(tmp_path / "out"), "--val-fraction", "0.5"]) == 0
    captured = capsys.readouterr()
    assert "tokens (uint16, vocabulary 50,257), 2 documents, 4 rows skipped" in captured.out
    assert f"skipped 4 bad rows; first: {src}:2: not valid JSON" in captured.err
    assert cli(["prepare", str(src), "--out", str(tmp_path / "o2"), "--on-error", "fail"]) == 2
    assert f"gptkit prepare: error: {src}:2: not valid JSON" in capsys.readouterr().err
    assert (
        cli(
            [
                "prepare",
                str(src),
                "--out",
                str(tmp_path / "o3"),
                "--field",
                "body",
                "--no-eos",
                "--tokenizer",
                "char",
                "--format",
                "jsonl",
            ]
        )
        == 0
    )
    assert TokenData.open(tmp_path / "o3").tokenizer.decode(stream(TokenData.open(tmp_path / "o3"))) == "no text field"


@pytest.mark.skipif(not (SHARED / "data" / "tinyshakespeare.txt").is_file(), reason="shared data not present")
def test_tinyshakespeare_char_level_matches_nanogpt(tmp_path) -> None:
    info, d = run(tmp_path, [SHARED / "data" / "tinyshakespeare.txt"], tokenizer="char")
    assert (d.vocab_size, len(d.train), len(d.val)) == (65, 1_003_854, 111_540)
    assert d.tokenizer.decode(d.train[:14]) == "First Citizen:"
