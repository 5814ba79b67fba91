"""The built-in default: shipped corpus -> char-level data -> a short run -> samples, all offline."""

from __future__ import annotations

from pathlib import Path

from gptkit import GPT
from gptkit.training.data import TokenData
from gptkit.training.quickstart import quickstart, shakespeare_path


def test_quickstart_prepares_trains_saves_and_samples(tmp_path: Path) -> None:
    result = quickstart(tmp_path / "qs", max_steps=30, progress=False, n_samples=2)
    data = TokenData.open(tmp_path / "qs" / "data")
    assert data.vocab_size == 65 and len(data.train) == 1_003_854 and len(data.val) == 111_540  # nanoGPT's split
    assert shakespeare_path().stat().st_size == 1_115_394
    assert result.train.step == 30 and result.train.val_loss < 3.5  # from ln(65) = 4.17 at the start
    assert len(result.samples) == 2 and all(len(s) > 100 for s in result.samples)
    assert set("".join(result.samples)) <= set(data.tokenizer.decode(list(range(65))))
    assert GPT.from_pretrained(result.run_dir).config.n_embd == 128
    assert (result.run_dir / "curves.png").is_file() and (result.run_dir / "metrics.jsonl").is_file()


def test_quickstart_refuses_a_used_out_dir_before_preparing(tmp_path: Path) -> None:
    import pytest

    from gptkit import ConfigError

    (tmp_path / "qs" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ConfigError, match="already holds a run; pass --overwrite"):
        quickstart(tmp_path / "qs", max_steps=1, progress=False)
    assert not (tmp_path / "qs" / "data").exists()
