"""gptkit.training.corpus: inputs -> documents and records, with file:line for every row that makes none."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from gptkit.errors import ConfigError, DataError
from gptkit.training import corpus
from gptkit.training.corpus import BadRow, Document, Meter, MissingColumnsError, iter_documents, iter_records

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 20
JOKES = [
    ("Why did the chicken cross the road?", "To get to the other side."),
    ("What do you call a fish with no eyes?", "A fsh."),
    ("Why don't eggs tell jokes?", "They'd crack each other up."),
    ("What is brown and sticky?", "A stick."),
    ("Why was six afraid of seven?", "Because seven eight nine."),
]


def write_csv(path: Path, rows: list[tuple[str, ...]], delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter=delimiter).writerows([("ID", "Question", "Answer"), *rows])
    return path


def write_jsonl(path: Path) -> Path:
    lines = [
        json.dumps({"text": "Hello world."}),
        '{"text": "broken',
        json.dumps({"body": "no text field"}),
        "",
        json.dumps({"text": 42}),
        json.dumps({"text": "  "}),
        json.dumps({"text": "Bye <3", "id": 7}),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def texts(items: list[Document | BadRow]) -> list[tuple[str, int]]:
    return [(d.text, d.line) for d in items if isinstance(d, Document)]


def bad(items: list[Document | BadRow]) -> list[str]:
    return [str(b) for b in items if isinstance(b, BadRow)]


# --- text files -----------------------------------------------------------------------------------


def test_text_modes_give_documents_with_the_line_they_start_on(tmp_path) -> None:
    (src := tmp_path / "a.txt").write_text(body := "one line\n\n  \ntwo\nlines\n\n\nthree\n")
    assert texts(list(iter_documents(src, text_mode="lines"))) == [
        ("one line", 1),
        ("two", 4),
        ("lines", 5),
        ("three", 8),
    ]
    assert texts(list(iter_documents(src, text_mode="blank-lines"))) == [
        ("one line", 1),
        ("two\nlines", 4),
        ("three", 8),
    ]
    whole = list(iter_documents(src))  # one document, which may come in pieces (see the next test)
    assert "".join(d.text for d in whole) == body and whole[0].line == 1 and whole[-1].end


def test_a_whole_file_streams_in_pieces_cut_where_ids_do_not_change(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(corpus, "READ_CHARS", 50)
    (src := tmp_path / "a.txt").write_text(TEXT)
    pieces = list(iter_documents(src))
    assert len(pieces) > 10 and "".join(p.text for p in pieces) == TEXT
    assert [p.end for p in pieces] == [False] * (len(pieces) - 1) + [True]
    start = 0
    for p in pieces:  # each later piece starts at a "\n" that follows a non-space
        assert p.line == TEXT.count("\n", 0, start) + 1
        assert start == 0 or (TEXT[start] == "\n" and not TEXT[start - 1].isspace())
        start += len(p.text)


# --- JSONL, CSV, TSV and bad rows ---------------------------------------------------------------------


def test_jsonl_bad_rows_name_the_file_and_line(tmp_path) -> None:
    src = write_jsonl(tmp_path / "docs.jsonl")
    items = list(iter_documents(src))
    assert texts(items) == [("Hello world.", 1), ("Bye <3", 7)]
    assert bad(items) == [
        f"{src}:2: not valid JSON (Unterminated string starting at: line 1 column 10 (char 9))",
        f"{src}:3: missing field 'text' (fields: body)",
        f"{src}:5: field 'text' is int, expected a string",
        f"{src}:6: empty document",
    ]
    assert texts(list(iter_documents(src, jsonl_field="body"))) == [("no text field", 3)]


def test_on_error_fail_raises_at_the_first_bad_row(tmp_path) -> None:
    src = write_jsonl(tmp_path / "docs.jsonl")
    items = iter_documents(src, on_error="fail")
    assert next(items) == Document("Hello world.", 1)
    with pytest.raises(DataError, match=rf"{src}:2: not valid JSON .*\(pass on_error='skip'"):
        next(items)


def test_csv_template_and_tsv(tmp_path) -> None:
    src = write_csv(tmp_path / "jokes.csv", [(str(i), q, a) for i, (q, a) in enumerate(JOKES[:3])])
    with open(src, "a", encoding="utf-8") as f:
        f.write('9,"A question\nover two lines?"\n')  # short row (no Answer) starting on line 5
        f.write(f'{4},"{JOKES[3][0]}",{JOKES[3][1]}\n')
    items = list(iter_documents(src, csv_template="JOKE: {Question} {Answer}"))
    assert texts(items) == [(f"JOKE: {q} {a}", line) for (q, a), line in zip(JOKES[:4], [2, 3, 4, 7], strict=True)]
    assert bad(items) == [f"{src}:5: row has 2 fields, so template columns ['Answer'] are missing"]
    tsv = write_csv(tmp_path / "jokes.tsv", [("1", "Q\twith tab", "A"), ("2", "Why?", "Because.")], delimiter="\t")
    assert texts(list(iter_documents(tsv, csv_template="{Question} -> {Answer}"))) == [
        ("Q\twith tab -> A", 2),
        ("Why? -> Because.", 3),
    ]
    with pytest.raises(
        DataError,
        match=r"jokes.csv:1: the template '\{text\}' needs columns \['text'\], which the "
        r"header \['ID', 'Question', 'Answer'\] lacks; set the template",
    ):
        list(iter_documents(src))


def test_input_errors_name_the_file(tmp_path) -> None:
    (empty := tmp_path / "empty.txt").write_text("")
    (blank := tmp_path / "blank.jsonl").write_text("\n\n")
    (odd := tmp_path / "notes.md").write_text("x")
    (latin := tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    (huge := tmp_path / "huge.csv").write_text("text\n" + "x" * (csv.field_size_limit() + 1) + "\n")
    cases = [
        (tmp_path / "missing.txt", "cannot read input .*missing.txt"),
        (empty, "empty.txt: no documents"),
        (blank, "blank.jsonl: no documents"),
        (odd, r"notes.md: cannot tell the format from the suffix '.md'"),
        (latin, "latin.txt: not valid UTF-8"),
        (huge, "huge.csv: malformed CSV: field larger than field limit"),
    ]
    for path, message in cases:
        with pytest.raises(DataError, match=message):
            list(iter_documents(path))
    assert list(iter_documents(odd, "text")) == [Document("x", 1)]
    for bad_option in (dict(fmt="json"), dict(text_mode="line"), dict(on_error="ignore")):
        with pytest.raises(ConfigError, match="expected one of"):
            list(iter_documents(odd, **{"fmt": "text", **bad_option}))


# --- records ------------------------------------------------------------------------------------------


def test_csv_and_tsv_records_are_rows_with_the_line_they_start_on(tmp_path) -> None:
    rows = [("1", "Why?", "Because."), ("2", "Two\nlines?", "Yes."), (), ("3", "Short?"), ("4", "Long?", "Yes.", "x")]
    for suffix, delimiter in ((".csv", ","), (".tsv", "\t")):
        src = write_csv(tmp_path / f"rows{suffix}", rows, delimiter)
        assert list(iter_records(src)) == [
            (2, {"ID": "1", "Question": "Why?", "Answer": "Because."}),
            (3, {"ID": "2", "Question": "Two\nlines?", "Answer": "Yes."}),  # a quoted field spans lines 3-4
            (6, {"ID": "3", "Question": "Short?"}),  # line 5 is blank; a short row has only its fields
            (7, {"ID": "4", "Question": "Long?", "Answer": "Yes."}),  # fields past the header are dropped
        ]
        records = list(iter_records(src, columns=["Answer"]))
        assert records[2] == BadRow(str(src), 6, "row has 2 fields, so columns ['Answer'] are missing")
        assert [r[0] for r in records if not isinstance(r, BadRow)] == [2, 3, 7]
        with pytest.raises(
            MissingColumnsError, match=rf"rows{suffix}:1: the header .* lacks the columns \['label'\]"
        ) as e:
            list(iter_records(src, columns=["Question", "label"]))
        assert (e.value.missing, e.value.header) == (["label"], ["ID", "Question", "Answer"])


def test_jsonl_records_are_objects_and_bad_lines_are_bad_rows(tmp_path) -> None:
    src = write_jsonl(tmp_path / "docs.jsonl")
    with open(src, "a") as f:
        f.write("[1, 2]\n")
    records = list(iter_records(src))
    assert [r for r in records if not isinstance(r, BadRow)] == [
        (1, {"text": "Hello world."}),
        (3, {"body": "no text field"}),
        (5, {"text": 42}),
        (6, {"text": "  "}),
        (7, {"text": "Bye <3", "id": 7}),
    ]
    assert [str(r) for r in records if isinstance(r, BadRow)] == [
        f"{src}:2: not valid JSON (Unterminated string starting at: line 1 column 10 (char 9))",
        f"{src}:8: expected a JSON object, got list",
    ]
    with_label = list(iter_records(src, "jsonl", columns=["text", "id"]))
    assert [r for r in with_label if not isinstance(r, BadRow)] == [(7, {"text": "Bye <3", "id": 7})]
    assert str(with_label[0]) == f"{src}:1: missing field 'id' (fields: text)"
    assert str(with_label[2]) == f"{src}:3: missing fields 'text', 'id' (fields: body)"
    with pytest.raises(DataError, match="a text file has no records"):
        list(iter_records(tmp_path / "a.txt"))


def test_a_meter_hashes_and_counts_the_bytes_read(tmp_path) -> None:
    src = write_csv(tmp_path / "jokes.csv", [(str(i), q, a) for i, (q, a) in enumerate(JOKES)])
    for read in (
        lambda m: iter_documents(src, csv_template="{Question}", meter=m),
        lambda m: iter_records(src, meter=m),
    ):
        sizes: list[int] = []
        meter = Meter(sizes.append)
        assert len(list(read(meter))) == len(JOKES)
        assert meter.sha256 == hashlib.sha256(src.read_bytes()).hexdigest() and sum(sizes) == src.stat().st_size
