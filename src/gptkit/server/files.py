"""Files: uploaded bytes stored atomically under DATA_DIR/files/<id>, with a row in the store (OpenAI's Files API).

A file's bytes are written to a temporary file, checked, synced and renamed into place before its row is
committed, so a crash leaves either a whole file with its row or a stray file without one (never a row
without its bytes). The client's filename is kept as metadata and never becomes part of a path. A
`fine-tune` upload is checked as instruction data (gptkit.tasks.instruct's readers): JSONL of
{"prompt", "completion"} or {"messages": [...]} objects; a bad one is refused with a DataError naming the
file, its first bad line and why.
"""

from __future__ import annotations

import builtins
import os
import time
from pathlib import Path
from typing import BinaryIO, Literal

from gptkit.errors import DataError
from gptkit.io import atomic_write
from gptkit.server.store import FileRow, Page, RequestError, Store, new_id, now
from gptkit.tasks.instruct import read_instruct

__all__ = ["FILES_DIR", "MAX_BYTES", "RESULTS_PURPOSE", "UPLOAD_PURPOSES", "Files", "check_fine_tune_file"]

FILES_DIR = "files"
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")  # what clients upload
RESULTS_PURPOSE = "fine-tune-results"  # what a job writes (step_metrics.csv)
MAX_BYTES = 512 * 1024**2  # OpenAI's limit for one file
MAX_FILENAME = 512
_CHUNK = 1 << 20


class Files:
    """The Files API's operations over a store: create (upload), retrieve, list, content, delete."""

    def __init__(self, store: Store, *, max_bytes: int = MAX_BYTES) -> None:
        self.store, self.max_bytes = store, max_bytes
        self.root = store.data_dir / FILES_DIR

    def create(self, content: bytes | BinaryIO, filename: str, purpose: str) -> FileRow:
        """Store an upload (bytes, or a binary stream read in chunks); a `fine-tune` one must be valid data.

        Raises RequestError for a bad purpose or filename, DataError for content that is too large or (for
        fine-tune) not instruction data, naming the filename and the first bad line; nothing is stored then.
        """
        if purpose not in UPLOAD_PURPOSES:
            raise RequestError(f"purpose must be one of {', '.join(UPLOAD_PURPOSES)}, got {purpose!r}", "purpose")
        return self.store.insert(self.stage(content, filename, purpose))

    def stage(self, content: bytes | BinaryIO, filename: str, purpose: str) -> FileRow:
        """Write the bytes of a new file (checked as `create` says) and return its row, not yet inserted: a
        caller that commits the row with other changes (a job's results) inserts it in its own transaction."""
        if not isinstance(filename, str) or not filename.strip() or len(filename) > MAX_FILENAME:
            raise RequestError(f"filename must be a non-empty string of at most {MAX_FILENAME} characters", "file")
        file_id = new_id("file-")
        size = 0

        def write(tmp: Path) -> None:
            nonlocal size
            with open(tmp, "wb") as out:
                size = _copy(content, out, self.max_bytes, filename)
            if purpose == "fine-tune":
                check_fine_tune_file(tmp, filename)

        atomic_write(self.root / file_id, write)
        return FileRow(file_id, size, now(), filename, purpose, "processed", f"{FILES_DIR}/{file_id}")

    def retrieve(self, file_id: str) -> FileRow:
        return self.store.get(FileRow, file_id)

    def list(
        self,
        *,
        after: str | None = None,
        limit: int = 10_000,
        order: Literal["desc", "asc"] = "desc",
        purpose: str | None = None,
    ) -> Page[FileRow]:
        where = {} if purpose is None else {"purpose": purpose}
        return self.store.page(FileRow, after=after, limit=limit, order=order, where=where)

    def path(self, file_id: str) -> Path:
        """Where a file's bytes are (for streaming its content)."""
        return self.store.data_dir / self.retrieve(file_id).path

    def content(self, file_id: str) -> bytes:
        return self.path(file_id).read_bytes()

    def delete(self, file_id: str) -> FileRow:
        """Remove the row, then the bytes (a crash between leaves a stray file, never a row without bytes)."""
        row = self.retrieve(file_id)
        self.store.delete(FileRow, file_id)
        (self.store.data_dir / row.path).unlink(missing_ok=True)
        return row

    def remove_strays(self, *, older_than: float = 3600.0) -> builtins.list[str]:
        """Delete stored bytes without a row, and temporary files, left by a crash mid-upload or mid-delete; their
        names. Only those untouched for `older_than` seconds: an upload in flight has its bytes before its row."""
        if not self.root.is_dir():
            return []
        known = {Path(row.path).name for row in self.store.all(FileRow)}
        cutoff = time.time() - older_than
        stray = [p for p in self.root.iterdir() if p.name not in known and p.stat().st_mtime <= cutoff]
        for path in stray:
            path.unlink(missing_ok=True)
        return sorted(p.name for p in stray)


def _copy(content: bytes | BinaryIO, out: BinaryIO, limit: int, name: str) -> int:
    """Copy content into out; DataError past `limit` bytes. Returns the number of bytes."""
    if isinstance(content, (bytes, bytearray, memoryview)):
        if len(content) > limit:
            raise DataError(f"{name}: {len(content)} bytes is more than the {limit} a file may hold")
        out.write(content)
        return len(content)
    size = 0
    while chunk := content.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise DataError(f"{name}: more than the {limit} bytes a file may hold")
        out.write(chunk)
    return size


def check_fine_tune_file(path: str | os.PathLike[str], name: str) -> int:
    """The number of examples in fine-tuning data: JSONL of {"prompt", "completion"} or {"messages": [...]}.

    A DataError names `name` (the upload's filename, not the server's path), the first bad line and why:
    an empty file, a line that is not JSON or not an object, missing or wrong keys, an empty completion.
    """
    with open(path, "rb") as fh:
        if not any(line.strip() for line in fh):
            raise DataError(
                f'{name}: the file is empty; fine-tuning data is JSONL, one {{"prompt", "completion"}} or '
                '{"messages": [...]} object a line'
            )
    try:
        data = read_instruct(path, on_error="skip")
    except DataError as exc:  # no good line at all: the message names the first bad one
        raise DataError(str(exc).replace(str(path), name)) from None
    if data.skipped:
        first, more = data.skipped[0], len(data.skipped) - 1
        count = f" ({more} more bad line{'s' * (more > 1)})" if more else ""
        raise DataError(f"{name}:{first.line}: {first.reason}{count}")
    return len(data)
