"""Corpora -> token files for training: `prepare` writes a data directory, `TokenData` reads it.

A data directory holds `train.bin` and `val.bin` (raw little-endian uint16 ids, uint32 for vocabularies
over 65,536), `meta.json` (counts, sources, the config, the tokenizer's fingerprint) and `tokenizer/`,
so it names its tokenizer exactly. Documents stream through in batches, so memory stays constant.
Inputs are read into documents by `gptkit.training.corpus` (formats, text modes, templates, bad rows).

Split: the last `val_fraction` of each input's token stream is validation, as nanoGPT splits
tinyshakespeare: train = tokens[:int(n * (1 - val_fraction))], val = the rest. Tokens are appended to
train.bin; when an input ends its tail is copied to val.bin in chunks and train.bin is truncated.

Documents end with the tokenizer's end-of-text token (gpt2 and bpe:N: `<|endoftext|>`). GPT-1 and
char-level tokenizers have none, so their documents are concatenated with no separator. A
`<|endoftext|>` string inside a document is encoded as ordinary text, never as the special id: the data
must not be able to forge document boundaries (nanoGPT's encode_ordinary does the same).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from gptkit.errors import ConfigError, DataError, GptkitError
from gptkit.io import atomic_directory, atomic_write_text, read_json
from gptkit.text.tokenizer import Tokenizer
from gptkit.training import corpus
from gptkit.training.corpus import (  # also importable from here
    BadRow,
    Document,
    Format,
    OnError,
    TextMode,
    resolve_format,
)
from gptkit.training.runlog import counted

__all__ = ["BadRow", "DataInfo", "PrepareConfig", "TokenData", "prepare", "split_point", "tokenizer_fingerprint"]

META_FORMAT, META_VERSION = "gptkit-tokens", 1
MAX_REPORTED = 20  # bad rows kept in meta.json; all are counted
BATCH_DOCS, BATCH_CHARS = 1024, 1 << 20  # a batch of documents for encode_batch ends at either limit
COPY_BYTES = 1 << 22


@dataclass(frozen=True)
class PrepareConfig:
    """What `prepare` reads, how it turns rows into documents, and which tokenizer it uses.

    tokenizer: "gpt2", "openai-gpt", a tokenizer directory, "char" (the characters of the documents)
    or "bpe:N" (a byte-level BPE of vocabulary N trained on the documents). format: one for all
    inputs; "auto" maps the suffixes .txt/.jsonl/.csv/.tsv. text_mode (text inputs): "file" = one
    document per file, "lines" = per non-blank line, "blank-lines" = per paragraph. csv_template
    (csv/tsv): str.format over column names, e.g. "JOKE: {Question} {Answer}"; default "{text}".
    """

    inputs: Sequence[str | os.PathLike[str]]
    out_dir: str | os.PathLike[str]
    tokenizer: str = "gpt2"
    format: Format = "auto"
    jsonl_field: str = "text"
    csv_template: str | None = None
    text_mode: TextMode = "file"
    val_fraction: float = 0.1
    on_error: OnError = "skip"
    append_eos: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(Path(p) for p in self.inputs))
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        choices = {
            "format": ("auto", "text", "jsonl", "csv", "tsv"),
            "text_mode": ("file", "lines", "blank-lines"),
            "on_error": ("skip", "fail"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"PrepareConfig.{name}={getattr(self, name)!r}; expected one of {list(allowed)}")
        if not self.inputs:
            raise ConfigError("PrepareConfig.inputs is empty; name at least one input file")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"PrepareConfig.val_fraction={self.val_fraction!r} must be in [0, 1)")
        if self.tokenizer.startswith("bpe:"):
            size = self.tokenizer[4:]
            if not size.isdigit() or int(size) <= 257:
                raise ConfigError(f"tokenizer {self.tokenizer!r}: write bpe:N with a vocabulary size N > 257")
        if self.csv_template is not None:
            corpus.template_fields(self.csv_template)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {**d, "inputs": [str(p) for p in self.inputs], "out_dir": str(self.out_dir)}


@dataclass(frozen=True)
class DataInfo:
    """What `prepare` wrote."""

    path: Path
    train_tokens: int
    val_tokens: int
    documents: int
    skipped: int
    bad_rows: tuple[BadRow, ...]  # the first MAX_REPORTED
    vocab_size: int
    dtype: str
    eos_token_id: int | None
    tokenizer_fingerprint: str

    def summary(self) -> str:
        return (
            f"wrote {self.path}: {self.train_tokens:,} train + {self.val_tokens:,} val tokens ({self.dtype}, "
            f"vocabulary {self.vocab_size:,}), {counted(self.documents, 'document')}, "
            f"{counted(self.skipped, 'row')} skipped"
        )


@dataclass
class _Source:
    path: Path
    format: str
    documents: int = 0
    tokens: int = 0
    skipped: int = 0
    sha256: str = ""
    bad: list[BadRow] = field(default_factory=list)


# --- small pure functions -----------------------------------------------------------------------


def split_point(n_tokens: int, val_fraction: float) -> int:
    """Tokens of an input that go to train; the rest (its tail) is validation. nanoGPT's int(n * 0.9)."""
    return int(n_tokens * (1 - val_fraction))


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def tokenizer_fingerprint(tok: Tokenizer) -> str:
    """sha256 of the tokenizer's canonical JSON (kind, eos token, backend with sorted keys)."""
    canonical = {"kind": tok.kind, "eos_token": tok.eos_token, "backend": json.loads(tok.backend.to_str())}
    text = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- reading the inputs (gptkit.training.corpus) ----------------------------------------------------------


def _documents(src: _Source, config: PrepareConfig, bar: Any) -> Iterator[Document]:
    """The documents of one input; its bad rows are counted (the first MAX_REPORTED kept), its sha256 recorded."""
    meter = corpus.Meter(bar.update)
    for item in corpus.iter_documents(
        src.path,
        src.format,
        jsonl_field=config.jsonl_field,
        csv_template=config.csv_template,
        text_mode=config.text_mode,
        on_error=config.on_error,
        meter=meter,
    ):
        if isinstance(item, Document):
            yield item
            continue
        src.skipped += 1
        if len(src.bad) < MAX_REPORTED:
            src.bad.append(item)
    src.sha256 = meter.sha256


# --- the tokenizer ------------------------------------------------------------------------------


def _build_tokenizer(config: PrepareConfig, sources: list[_Source], staging: Path, progress: bool) -> Tokenizer:
    if config.tokenizer not in ("char",) and not config.tokenizer.startswith("bpe:"):
        return Tokenizer.from_pretrained(config.tokenizer)
    chars: set[str] = set()
    bpe_text = staging / "bpe-corpus.txt"
    with _bar(sources, progress, "reading") as bar, open(bpe_text, "w", encoding="utf-8") as out:
        for src in sources:
            for doc in _documents(src, config, bar):
                if config.tokenizer == "char":
                    chars.update(doc.text)
                else:
                    out.write(doc.text + ("\n" if doc.end else ""))
            src.skipped, src.bad = 0, []  # counted again by the tokenizing pass
    try:
        if config.tokenizer == "char":
            return Tokenizer.char_level(chars)
        return Tokenizer.train_bpe(bpe_text, int(config.tokenizer[4:]), show_progress=progress)
    finally:
        bpe_text.unlink()


# --- prepare ------------------------------------------------------------------------------------


def _bar(sources: list[_Source], progress: bool, desc: str) -> Any:
    from tqdm import tqdm

    total = sum(s.path.stat().st_size for s in sources)
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, file=sys.stderr, disable=not progress)


def _batches(docs: Iterator[Document]) -> Iterator[list[Document]]:
    batch: list[Document] = []
    chars = 0
    for doc in docs:
        batch.append(doc)
        chars += len(doc.text)
        if len(batch) >= BATCH_DOCS or chars >= BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _encode(tok: Tokenizer, batch: list[Document], eos: int | None, dtype: np.dtype) -> np.ndarray:
    # disallowed_special=(): "<|endoftext|>" in a document is text, not a boundary (see the module doc)
    encoded = tok.encode_batch([d.text for d in batch], disallowed_special=())
    if eos is not None:
        for ids, doc in zip(encoded, batch, strict=True):
            if doc.end:
                ids.append(eos)
    return np.fromiter((i for ids in encoded for i in ids), dtype=dtype, count=sum(map(len, encoded)))


def _move_tail(train: BinaryIO, val: BinaryIO, cut: int) -> None:
    """Append train's bytes from `cut` on to val, then truncate train at `cut`."""
    train.flush()
    train.seek(cut)
    while chunk := train.read(COPY_BYTES):
        val.write(chunk)
    train.truncate(cut)
    train.seek(cut)


def _check_out_dir(out: Path, inputs: Sequence[Path]) -> None:
    """Refuse to replace a directory that is not a data directory, or one that holds an input."""
    resolved = out.resolve()
    for p in inputs:
        if resolved in p.resolve().parents:
            raise DataError(
                f"the output directory {out} contains the input {p}, and is replaced as a whole; "
                f"write the data to another directory (e.g. {out / 'tokens'})"
            )
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "meta.json").is_file())):
        raise DataError(
            f"{out} exists and is not a gptkit data directory (no meta.json); refusing to replace "
            f"it: choose a new or empty directory"
        )


def prepare(config: PrepareConfig, *, progress: bool = True) -> DataInfo:
    """Tokenize the inputs into `config.out_dir` (written atomically); see the module docstring.

    With progress, a tqdm bar over bytes read and a summary of skipped rows go to stderr.
    """
    inputs: tuple[Path, ...] = tuple(config.inputs)
    sources = [_Source(p, resolve_format(p, config.format)) for p in inputs]
    for src in sources:
        if not src.path.is_file():
            raise DataError(f"input {src.path} not found (or not a file)")
    if config.csv_template is not None and not any(s.format in ("csv", "tsv") for s in sources):
        raise DataError("a CSV template was given but no input is CSV/TSV; it applies only to csv/tsv inputs")
    out = Path(config.out_dir)
    _check_out_dir(out, inputs)
    with atomic_directory(out) as staging:
        tok = _build_tokenizer(config, sources, staging, progress)
        dtype = token_dtype(tok.vocab_size)
        eos = tok.eos_token_id if config.append_eos else None
        counts = {"train": 0, "val": 0}
        with (
            _bar(sources, progress, "tokenizing") as bar,
            open(staging / "train.bin", "w+b") as train,
            open(staging / "val.bin", "wb") as val,
        ):
            for src in sources:
                for batch in _batches(_documents(src, config, bar)):
                    ids = _encode(tok, batch, eos, dtype)
                    train.write(ids.tobytes())
                    src.tokens += len(ids)
                    src.documents += sum(d.end for d in batch)
                n_train = split_point(src.tokens, config.val_fraction)
                _move_tail(train, val, (counts["train"] + n_train) * dtype.itemsize)
                counts["train"] += n_train
                counts["val"] += src.tokens - n_train
        tok.save_pretrained(staging / "tokenizer")
        fingerprint = tokenizer_fingerprint(tok)
        bad = [b for s in sources for b in s.bad][:MAX_REPORTED]
        meta = {
            "format": META_FORMAT,
            "version": META_VERSION,
            "dtype": dtype.name,
            "vocab_size": tok.vocab_size,
            "eos_token_id": tok.eos_token_id,
            "eos_appended": eos is not None,  # eos ends every document
            "tokenizer_kind": tok.kind,
            "tokenizer_fingerprint": fingerprint,
            "tokens": counts,
            "documents": sum(s.documents for s in sources),
            "skipped": {
                "count": sum(s.skipped for s in sources),
                "rows": [{k: v for k, v in asdict(b).items() if v is not None} for b in bad],
            },
            "sources": [
                {
                    "path": str(s.path),
                    "format": s.format,
                    "bytes": s.path.stat().st_size,
                    "sha256": s.sha256,
                    "documents": s.documents,
                    "tokens": s.tokens,
                    "skipped": s.skipped,
                }
                for s in sources
            ],
            "config": config.to_dict(),
        }
        atomic_write_text(staging / "meta.json", json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    info = DataInfo(
        out,
        counts["train"],
        counts["val"],
        meta["documents"],
        meta["skipped"]["count"],
        tuple(bad),
        tok.vocab_size,
        dtype.name,
        tok.eos_token_id,
        fingerprint,
    )
    if progress and info.skipped:
        print(
            f"skipped {info.skipped:,} bad rows; first: {bad[0]} (all of the first {len(bad)} in meta.json)",
            file=sys.stderr,
        )
    return info


# --- reading a data directory -------------------------------------------------------------------


class TokenData:
    """A prepared data directory: read-only memmaps of the splits, its meta and its tokenizer."""

    def __init__(self, path: Path, meta: dict[str, Any], train: np.ndarray, val: np.ndarray) -> None:
        self.path, self.meta, self.train, self.val = path, meta, train, val

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> TokenData:
        """Open a directory written by `prepare`; DataError names the file and field of any problem."""
        path = Path(directory)
        meta_path = path / "meta.json"
        meta = read_json(meta_path, DataError, missing=f"not found; is {path} a data directory from `gptkit prepare`?")
        _validate_meta(meta, meta_path)
        dtype = np.dtype(meta["dtype"]).newbyteorder("<")
        train, val = (_open_split(path / f"{split}.bin", dtype, meta["tokens"][split]) for split in ("train", "val"))
        return cls(path, meta, train, val)

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def eos_token_id(self) -> int | None:
        return self.meta["eos_token_id"]

    @property
    def fingerprint(self) -> str:
        return str(self.meta["tokenizer_fingerprint"])

    @functools.cached_property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer saved with the data (checked against the fingerprint in meta.json)."""
        try:
            tok = Tokenizer.from_pretrained(self.path / "tokenizer")
        except GptkitError as e:
            raise DataError(f"cannot load the tokenizer of {self.path}: {e}") from None
        if tokenizer_fingerprint(tok) != self.fingerprint:
            raise DataError(
                f"{self.path / 'tokenizer'} does not match tokenizer_fingerprint in meta.json; "
                f"the directory was modified after `gptkit prepare` wrote it: prepare it again"
            )
        return tok

    def __repr__(self) -> str:
        return (
            f"TokenData({str(self.path)!r}, train={len(self.train):,}, val={len(self.val):,}, "
            f"vocab_size={self.vocab_size})"
        )


def _validate_meta(meta: Any, where: Path) -> None:
    """Raise DataError naming the first field of a meta.json that is missing or wrong."""
    if not isinstance(meta, dict):
        raise DataError(f"{where} must hold a JSON object; prepare the data directory again")

    def need(ok: bool, name: str, expected: str) -> None:
        if not ok:
            got = meta.get(name, "nothing (missing)")
            raise DataError(f"{where}: field {name!r} must be {expected}, got {got!r}; prepare the data again")

    def is_count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    need(meta.get("format") == META_FORMAT, "format", repr(META_FORMAT))
    need(meta.get("version") == META_VERSION, "version", str(META_VERSION))
    vocab = meta.get("vocab_size")
    need(is_count(vocab) and vocab > 0, "vocab_size", "a positive integer")
    need(meta.get("dtype") == token_dtype(vocab).name, "dtype", f"{token_dtype(vocab).name!r} for vocab_size {vocab}")
    eos = meta.get("eos_token_id")
    need(eos is None or (is_count(eos) and eos < vocab), "eos_token_id", f"null or an id below {vocab}")
    need(isinstance(meta.get("tokenizer_fingerprint"), str), "tokenizer_fingerprint", "a sha256 hex string")
    tokens = meta.get("tokens")
    need(
        isinstance(tokens, dict) and all(is_count(tokens.get(k)) for k in ("train", "val")),
        "tokens",
        'an object {"train": count, "val": count}',
    )


def _open_split(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path} not found; prepare the data directory again")
    if (size := path.stat().st_size) != count * dtype.itemsize:
        raise DataError(
            f"{path} has {size} bytes but meta.json says {count} {dtype.name} tokens "
            f"({count * dtype.itemsize} bytes); the directory is damaged: prepare it again"
        )
    if count == 0:  # mmap cannot map an empty file
        empty = np.empty(0, dtype)
        empty.flags.writeable = False
        return empty
    return np.memmap(path, dtype=dtype, mode="r")
