"""Task fine-tuning end to end: the one loop trains each task, checkpoints load in transformers and peft,
resume equals an uninterrupted run, and the completion-only loss weighs exactly the answer tokens."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from gptkit.config import TaskConfig, TrainConfig
from gptkit.finetune import EpochSampler, _base_model, collate, finetune
from gptkit.predict import load_finetuned
from gptkit.model import IGNORE_INDEX

POSITIVE = ["good", "great", "fine", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "poor", "terrible", "dull"]
FILLER = ["the", "film", "was", "plot", "a", "really", "it"]


def write_sentiment(path: Path, n: int, seed: int) -> Path:
    """A synthetic two-class task: the label is whether a positive or a negative word appears."""
    rng = random.Random(seed)
    lines = ["text\tlabel"]
    for _ in range(n):
        label = rng.randint(0, 1)
        words = [rng.choice(POSITIVE if label else NEGATIVE)] + [rng.choice(FILLER) for _ in range(4)]
        rng.shuffle(words)
        lines.append(f"{' '.join(words)}\t{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def small_train(tmp_path: Path, name: str, **changes) -> TrainConfig:
    base = dict(data="", out_dir=str(tmp_path / name), model="gpt2-tiny", init_from="scratch", batch_size=8,
                lr=2e-3, warmup_steps=5, eval_interval=0, log_interval=5, progress=False, seed=3, device="cpu")
    return TrainConfig(**{**base, **changes})


def metrics_losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


# -- building blocks ------------------------------------------------------------------------------


def test_epoch_sampler_covers_each_example_once_per_epoch_and_resumes():
    sampler = EpochSampler(10, seed=0)
    first = torch.cat([sampler.draw(4) for _ in range(5)])  # two whole epochs
    assert sorted(first[:10].tolist()) == list(range(10)) and sorted(first[10:].tolist()) == list(range(10))
    state = sampler.state()
    expected = sampler.draw(7)
    resumed = EpochSampler(10, seed=99)
    resumed.load_state(state)
    assert torch.equal(resumed.draw(7), expected)


def test_collate_pads_ids_masks_and_token_labels():
    rows = [{"input_ids": [5, 6, 7], "labels": [1, -100, 2]}, {"input_ids": [8], "labels": [3]}]
    batch = collate(rows, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[1, -100, 2], [3, IGNORE_INDEX, IGNORE_INDEX]]
    choice = collate([{"input_ids": [[1, 2], [3]], "labels": 1}], pad_id=0)
    assert choice["input_ids"].shape == (1, 2, 2) and choice["labels"].tolist() == [1]


# -- classification -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sentiment_run(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("sentiment")
    task = TaskConfig(task="classify", train_file=str(write_sentiment(tmp / "train.tsv", 320, 0)),
                      eval_file=str(write_sentiment(tmp / "dev.tsv", 100, 1)), max_length=16, epochs=4)
    return finetune(task, small_train(tmp, "run"))


def test_classifier_learns_a_synthetic_task_far_above_chance(sentiment_run):
    assert sentiment_run.train.step == 4 * 320 // 8
    assert sentiment_run.metrics["accuracy"] >= 0.9, sentiment_run.metrics
    assert set(sentiment_run.metrics) >= {"val_loss", "accuracy", "f1", "precision", "recall"}


def test_classifier_checkpoint_loads_in_transformers_with_equal_logits(sentiment_run):
    transformers = pytest.importorskip("transformers")
    from gptkit.heads import load_task_model
    from gptkit.tokenizer import Tokenizer

    run = sentiment_run.run_dir
    ours = load_task_model(run)
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(run).eval()
    assert type(theirs).__name__ == "GPT2ForSequenceClassification"
    tok = Tokenizer.from_pretrained(run)
    ids = torch.tensor([tok.encode("the plot was superb"), tok.encode("it was dull really")])
    with torch.no_grad():
        assert torch.allclose(ours(ids).logits, theirs(ids).logits, atol=1e-5)
    task = json.loads((run / "task.json").read_text())
    assert task["labels"] == ["0", "1"] and task["task"]["task"] == "classify"


def test_resumed_finetune_equals_uninterrupted(tmp_path: Path):
    train_file = str(write_sentiment(tmp_path / "train.tsv", 64, 0))
    task = TaskConfig(task="classify", train_file=train_file, max_length=16, epochs=None)
    whole = small_train(tmp_path, "whole", max_steps=12, eval_interval=6, log_interval=1, dropout=0.1)
    finetune(task, whole)
    part = whole.replace(out_dir=str(tmp_path / "part"), max_steps=6)
    finetune(task, part)
    finetune(task, part.replace(max_steps=12, init_from="resume"))
    assert metrics_losses(tmp_path / "part") == metrics_losses(tmp_path / "whole")


def test_lora_classifier_saves_a_peft_adapter_that_peft_loads(tmp_path: Path):
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")

    train_file = str(write_sentiment(tmp_path / "train.tsv", 64, 0))
    task = TaskConfig(task="classify", train_file=train_file, max_length=16, epochs=None)
    train = small_train(tmp_path, "lora", max_steps=6, lora_r=4, lora_targets="c_attn,c_fc")
    result = finetune(task, train)
    run = result.run_dir
    assert (run / "adapter_config.json").is_file() and (run / "adapter_model.safetensors").is_file()
    base = transformers.AutoModelForSequenceClassification.from_pretrained(run)
    theirs = peft.PeftModel.from_pretrained(base, run).eval()
    ours = load_finetuned(run).model
    ids = torch.tensor([[11, 42, 7, 300, 9]])
    with torch.no_grad():
        assert torch.allclose(ours(ids).logits, theirs(ids).logits, atol=1e-5)
    # only the adapters and the head were trained: the backbone still equals its initialisation
    initial, _ = _base_model(train, task.max_length)
    backbone = {k: v for k, v in ours.state_dict().items() if k.startswith("transformer.") and "lora_" not in k}
    assert backbone.keys() == {"transformer." + k for k in initial.transformer.state_dict()}
    assert all(torch.equal(v, initial.state_dict()[k]) for k, v in backbone.items())
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in ours.state_dict().items() if "lora_B" in k)
