"""Raw corpora -> documents (for `gptkit prepare`) and records (for labelled task data), with file:line errors.

Formats, one per input; "auto" maps the suffixes .txt/.jsonl/.csv/.tsv:
- text: text_mode "file" = one document per file, "lines" = one per non-blank line, "blank-lines" = one per
  paragraph. A whole-file document streams in pieces, cut only where the tokenizer's ids do not change.
- jsonl: one JSON object per non-blank line; a document is the string in one field (`jsonl_field`).
- csv / tsv: a header row, then rows; a document is `csv_template` (str.format over column names, e.g.
  "JOKE: {Question} {Answer}"; default "{text}") filled from one row.

`iter_records` yields JSONL objects and CSV/TSV rows as dicts with the line each starts on; `iter_documents`
builds documents on it. A row that can make no record or document is a `BadRow` (file, line, reason);
`on_error` says whether it is yielded (to be counted and skipped) or raised. A problem with a whole file
(unreadable, not UTF-8, malformed CSV, a header without the needed columns) raises DataError naming it.
A `Meter` passed to either reader hashes the bytes read and reports their count, e.g. to a progress bar.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import string
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, get_args

from gptkit.errors import ConfigError, DataError

__all__ = [
    "BadRow",
    "Document",
    "Format",
    "Meter",
    "MissingColumnsError",
    "OnError",
    "Record",
    "TextMode",
    "iter_documents",
    "iter_records",
    "resolve_format",
    "template_fields",
]

Format = Literal["auto", "text", "jsonl", "csv", "tsv"]
TextMode = Literal["file", "lines", "blank-lines"]
OnError = Literal["skip", "fail"]
Record = tuple[int, dict[str, Any]]  # (line the row starts on, the row)
SUFFIX_FORMATS = {".txt": "text", ".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv"}
READ_CHARS = 1 << 20  # a whole-file text document is read (and yielded) in pieces of about this size


@dataclass(frozen=True)
class Document:
    """The text of a document and the line of its input that it starts on."""

    text: str
    line: int
    end: bool = True  # False: a piece of a whole-file document that continues in the next Document


@dataclass(frozen=True)
class BadRow:
    """A row (or record) that made no document or example: where it is and why.

    `where` names a place that is not just a line, e.g. "data[0].paragraphs[2].qas[1]" inside a SQuAD JSON
    document (line is then None); the message then reads "source: where: reason" instead of "source:line: reason".
    """

    source: str
    line: int | None
    reason: str
    where: str | None = None

    def __str__(self) -> str:
        place = f" {self.where}:" if self.where else f"{self.line}:"
        return f"{self.source}:{place} {self.reason}"


class MissingColumnsError(DataError):
    """A CSV/TSV header lacks columns a reader needs; `source`, `header` and `missing` say which."""

    def __init__(self, source: str, header: list[str], missing: list[str]) -> None:
        super().__init__(f"{source}:1: the header {header} lacks the columns {missing}; name columns it has")
        self.source, self.header, self.missing = source, header, missing


class Meter:
    """What a reader takes from a file: the sha256 of its bytes, and each read's size passed to `on_read`."""

    def __init__(self, on_read: Callable[[int], object] = lambda n: None) -> None:
        self.on_read = on_read  # e.g. a tqdm bar's update
        self._digest = hashlib.sha256()

    def update(self, data: memoryview) -> None:
        self._digest.update(data)
        self.on_read(len(data))

    @property
    def sha256(self) -> str:
        """Hex digest of the bytes read so far (of the whole file once a reader has finished it)."""
        return self._digest.hexdigest()


# --- small pure functions -----------------------------------------------------------------------


def _check(name: str, value: str, choices: Any) -> None:
    if value not in (allowed := get_args(choices)):
        raise ConfigError(f"{name}={value!r}; expected one of {list(allowed)}")


def resolve_format(path: Path, fmt: str) -> str:
    """The format of an input: `fmt`, or for "auto" the one its suffix names (DataError for others)."""
    _check("format", fmt, Format)
    if fmt != "auto":
        return fmt
    if (found := SUFFIX_FORMATS.get(path.suffix.lower())) is None:
        raise DataError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r} "
            f"(auto knows {', '.join(SUFFIX_FORMATS)}); set the format explicitly"
        )
    return found


def template_fields(template: str) -> list[str]:
    """The column names a CSV template uses, in order (ConfigError unless it names at least one)."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise ConfigError(f"csv_template {template!r} is not a valid format string: {e}") from None
    if not names or any(n == "" or n.isdigit() for n in names):
        raise ConfigError(f"csv_template {template!r} must name columns, e.g. 'JOKE: {{Question}} {{Answer}}'")
    return names


def _safe_cut(text: str) -> int:
    """The last index where a text may be cut with ids unchanged: a "\\n" after a non-space (0: none).

    Tokenizer.encode chunks long texts at exactly these points and guarantees equal ids (see
    gptkit.text.tokenizer._chunk_starts), so a huge single-document .txt can be encoded piece by piece.
    """
    cut = text.rfind("\n")
    while cut > 0 and text[cut - 1].isspace():
        cut = text.rfind("\n", 0, cut)
    return max(cut, 0)


# --- opening a file -----------------------------------------------------------------------------


class _Metered(io.RawIOBase):
    """A binary file whose reads go through a Meter."""

    def __init__(self, raw: BinaryIO, meter: Meter) -> None:
        self._raw, self._meter = raw, meter

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer) or 0
        self._meter.update(memoryview(buffer)[:n])
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


@contextmanager
def _open(path: Path, fmt: str, meter: Meter | None) -> Iterator[Any]:
    """The input as bytes (jsonl) or UTF-8 text; decoding and CSV errors become DataErrors naming it."""
    try:
        raw = open(path, "rb", buffering=0)  # closed by the BufferedReader below
    except OSError as e:
        raise DataError(f"cannot read input {path}: {e.strerror or e}") from None
    with io.BufferedReader(raw if meter is None else _Metered(raw, meter)) as binary:
        try:
            if fmt == "jsonl":
                yield binary
            else:
                newline = "" if fmt in ("csv", "tsv") else None  # csv needs newline=""; text: universal
                with io.TextIOWrapper(binary, encoding="utf-8", newline=newline) as text:
                    yield text
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not valid UTF-8 ({e.reason}); convert it to UTF-8") from None
        except csv.Error as e:
            raise DataError(f"{path}: malformed CSV: {e}") from None


# --- records: JSONL objects and CSV/TSV rows ----------------------------------------------------


def iter_records(
    path: str | os.PathLike[str], fmt: Format = "auto", *, columns: Sequence[str] = (), meter: Meter | None = None
) -> Iterator[Record | BadRow]:
    """(line, row) for every JSONL object or CSV/TSV row of a file, in order, or a BadRow where there is none.

    JSONL: each non-blank line must be a JSON object. CSV/TSV: the first row is the header; a row maps the
    column names to its fields (a short row only those it has; fields past the header are dropped; blank
    rows are passed over). Every record has `columns`: a header without them raises MissingColumnsError,
    a row or object without them is a BadRow. The line is where a row starts (quoted fields may span lines).
    """
    return _records(Path(path), fmt, columns, meter)


def _records(
    path: Path, fmt: str, columns: Sequence[str], meter: Meter | None, what: str = "columns"
) -> Iterator[Record | BadRow]:
    """iter_records; `what` names `columns` in the reason of a short CSV row."""
    if (fmt := resolve_format(path, fmt)) == "text":
        raise DataError(f"{path}: a text file has no records; records come from .jsonl, .csv and .tsv files")
    with _open(path, fmt, meter) as fh:
        if fmt == "jsonl":
            yield from _jsonl_records(fh, str(path), columns)
        else:
            yield from _csv_records(fh, str(path), "\t" if fmt == "tsv" else ",", columns, what)


def _jsonl_records(fh: BinaryIO, name: str, columns: Sequence[str]) -> Iterator[Record | BadRow]:
    for line, raw in enumerate(fh, 1):
        if not (raw := raw.strip()):
            continue
        try:
            row = json.loads(raw)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            yield BadRow(name, line, f"not valid JSON ({e})")
            continue
        if not isinstance(row, dict):
            yield BadRow(name, line, f"expected a JSON object, got {type(row).__name__}")
        elif missing := [c for c in columns if c not in row]:
            yield BadRow(
                name,
                line,
                f"missing field{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))} "
                f"(fields: {', '.join(list(row)[:10])})",
            )
        else:
            yield line, row


def _csv_records(
    fh: io.TextIOBase, name: str, delimiter: str, columns: Sequence[str], what: str
) -> Iterator[Record | BadRow]:
    reader = csv.reader(fh, delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        return
    index = {c: i for i, c in enumerate(header)}  # a name that repeats means its last column
    if missing := [c for c in columns if c not in index]:
        raise MissingColumnsError(name, header, missing)
    needed = {c: index[c] for c in columns}
    line = reader.line_num
    for row in reader:
        start, line = line + 1, reader.line_num  # a quoted field may span lines; report where the row starts
        if not row:
            continue
        if absent := [c for c, i in needed.items() if i >= len(row)]:
            yield BadRow(name, start, f"row has {len(row)} fields, so {what} {absent} are missing")
        else:
            yield start, {c: row[i] for c, i in index.items() if i < len(row)}


# --- documents ----------------------------------------------------------------------------------


def iter_documents(
    path: str | os.PathLike[str],
    fmt: Format = "auto",
    *,
    jsonl_field: str = "text",
    csv_template: str | None = None,
    text_mode: TextMode = "file",
    on_error: OnError = "skip",
    meter: Meter | None = None,
) -> Iterator[Document | BadRow]:
    """Every document of one input, in order (see the module docstring); a whole-file text comes in pieces.

    A row that makes no document (bad JSON, a missing field or column, a non-string field, a blank
    JSONL/CSV document) is yielded as a BadRow with on_error="skip" and raised as DataError with "fail".
    An input that yields no document at all raises DataError.
    """
    path = Path(path)
    fmt = resolve_format(path, fmt)
    _check("text_mode", text_mode, TextMode)
    _check("on_error", on_error, OnError)
    produced = False
    for item in _documents(path, fmt, jsonl_field, csv_template or "{text}", text_mode, meter):
        if isinstance(item, Document) and fmt != "text" and not item.text.strip():
            item = BadRow(str(path), item.line, "empty document")
        if isinstance(item, BadRow) and on_error == "fail":
            raise DataError(f"{item} (pass on_error='skip' / --on-error skip to skip bad rows)")
        produced = produced or isinstance(item, Document)
        yield item
    if not produced:
        raise DataError(f"{path}: no documents in this input (is it empty, or is the format/field wrong?)")


def _documents(
    path: Path, fmt: str, key: str, template: str, text_mode: str, meter: Meter | None
) -> Iterator[Document | BadRow]:
    if fmt == "text":
        with _open(path, fmt, meter) as fh:
            yield from _text_documents(fh, text_mode)
    elif fmt == "jsonl":
        for item in _records(path, fmt, [key], meter):
            if isinstance(item, BadRow):
                yield item
            elif not isinstance(text := item[1][key], str):
                yield BadRow(str(path), item[0], f"field {key!r} is {type(text).__name__}, expected a string")
            else:
                yield Document(text, item[0])
    else:
        try:
            for item in _records(path, fmt, template_fields(template), meter, "template columns"):
                yield item if isinstance(item, BadRow) else Document(template.format_map(item[1]), item[0])
        except MissingColumnsError as e:
            raise DataError(
                f"{e.source}:1: the template {template!r} needs columns {e.missing}, which the header "
                f"{e.header} lacks; set the template (--template) to name existing columns"
            ) from None


def _text_documents(fh: io.TextIOBase, mode: str) -> Iterator[Document]:
    line = 1
    if mode == "file":
        carry = ""
        while chunk := fh.read(READ_CHARS):
            carry += chunk
            if cut := _safe_cut(carry):
                yield Document(carry[:cut], line, end=False)
                line += carry.count("\n", 0, cut)
                carry = carry[cut:]
        if carry:  # after a piece, carry starts with the "\n" it was cut at, so the document always ends
            yield Document(carry, line)
        return
    paragraph: list[str] = []
    start = 1
    for line, text in enumerate(fh, 1):
        text = text.rstrip("\n")
        if mode == "lines" and text.strip():
            yield Document(text, line)
        elif mode == "blank-lines" and text.strip():
            start = start if paragraph else line
            paragraph.append(text)
        elif paragraph:
            yield Document("\n".join(paragraph), start)
            paragraph = []
    if paragraph:
        yield Document("\n".join(paragraph), start)
