"""A plain (non-editable) install carries every file the package reads at run time: the built wheel holds
each file under src/gptkit that is not Python source (vocabularies, the quick start's corpus, py.typed), and
installed on its own it runs README's main command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "gptkit"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """gptkit's wheel, built from a copy of the tree (the build leaves build/ and *.egg-info behind)."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(tree), "--no-deps", "--no-build-isolation", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (built,) = tmp_path.glob("gptkit-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_holds_every_data_file(wheel: Path) -> None:
    packaged = set(zipfile.ZipFile(wheel).namelist())
    data = {
        p.relative_to(PACKAGE.parent).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }
    assert "gptkit/assets/tinyshakespeare.txt" in data
    assert data - packaged == set()
    sources = {p.relative_to(PACKAGE.parent).as_posix() for p in PACKAGE.rglob("*.py")}
    assert sources - packaged == set()


@pytest.mark.slow
def test_the_installed_wheel_runs_the_quick_start(wheel: Path, tmp_path: Path) -> None:
    """README's main command from a plain install: the wheel alone (dependencies from this environment), run
    away from the source tree, trains the quick start's model and samples from it."""
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import gptkit; print(gptkit.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.strip() == str(site / "gptkit" / "__init__.py"), where.stdout + where.stderr
    run = subprocess.run(
        [sys.executable, "-m", "gptkit", "quickstart", "--max-steps", "20"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "--- sample 1 ---" in run.stdout
    assert (tmp_path / "runs" / "shakespeare-char" / "config.json").is_file()
