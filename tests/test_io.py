"""gptkit.io: atomic writes leave the old file on failure and give new files the umask's permissions."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from gptkit.io import atomic_directory, atomic_write, atomic_write_text, umask


@pytest.fixture(params=[0o022, 0o077, 0o002])
def mask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_umask_is_read_without_changing_it(mask: int) -> None:
    assert umask() == mask
    assert umask() == mask


def test_files_and_directories_get_the_permissions_open_and_mkdir_would_give(tmp_path: Path, mask: int) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    os.mkdir(tmp_path / "plain-dir")
    atomic_write_text(tmp_path / "a.txt", "hello")
    assert mode(tmp_path / "a.txt") == mode(plain) == 0o666 & ~mask
    with atomic_directory(tmp_path / "run") as staging:
        (staging / "f").write_text("y")
    assert mode(tmp_path / "run") == mode(tmp_path / "plain-dir") == 0o777 & ~mask


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "model.bin"
    atomic_write_text(target, "old")

    def failing(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, failing)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]
