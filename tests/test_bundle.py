"""gptkit.load: one ModelBundle for language models and task models, against load_model/load_task_model and
transformers' task classes on the same folders."""

from __future__ import annotations

import pytest
import torch

import gptkit
from gptkit import GPT, CheckpointError, GPTConfig
from gptkit.models.gpt import load_model, save_model
from gptkit.tasks.bundle import ModelBundle, load
from gptkit.tasks.heads import TaskModel, save_task_model
from gptkit.tasks.registry import TASK_TYPES, TaskSpec
from gptkit.text.chat_template import save_chat_template

from conftest import random_ids, randomized


def tiny_gpt() -> GPT:
    return randomized(GPT(GPTConfig.from_name("gpt2-tiny", vocab_size=50257, n_positions=32)))


def test_language_model_bundle_holds_model_tokenizer_and_template(tmp_path, tok) -> None:
    save_model(tiny_gpt(), tmp_path, tokenizer=tok)
    bundle = load(tmp_path, dtype=torch.float64)
    assert gptkit.load is load and isinstance(bundle, gptkit.ModelBundle)
    assert isinstance(bundle.model, GPT) and not bundle.model.training
    assert bundle.tokenizer.encode("hello world") == tok.encode("hello world")
    assert (bundle.path, bundle.dtype, bundle.device) == (tmp_path, torch.float64, torch.device("cpu"))
    assert (bundle.chat_template, bundle.spec, bundle.kind, bundle.task) == (None, None, None, None)
    assert bundle.pad_id == tok.eos_token_id
    ids = random_ids(50257, 2, 9)
    expected = load_model(tmp_path, dtype=torch.float64)(ids).logits
    assert torch.equal(bundle.model(ids).logits, expected)

    save_chat_template(tmp_path, "{{ messages[0]['content'] }}")  # read once, with the model
    assert load(tmp_path).chat_template == "{{ messages[0]['content'] }}"
    assert load(tmp_path, tokenizer="openai-gpt").tokenizer.kind != tok.kind  # a named tokenizer wins


def test_task_model_folder_loads_as_task_model_or_as_its_language_model(tmp_path, tok) -> None:
    transformers = pytest.importorskip("transformers")
    gpt = tiny_gpt()
    save_task_model(TaskModel(gpt, TaskSpec("classify", num_labels=3, labels=("a", "b", "c"))), tmp_path, tokenizer=tok)
    bundle = load(tmp_path)
    assert isinstance(bundle.model, TaskModel) and bundle.spec.labels == ("a", "b", "c")
    assert bundle.kind is TASK_TYPES["classify"] and bundle.task is None  # a checkpoint, not a finetune run
    ids = random_ids(50257, 2, 9)
    theirs = transformers.GPT2ForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(bundle.model(ids).logits, theirs(ids).logits, rtol=1e-5, atol=1e-5)
    lm = load(tmp_path, lm=True)
    assert isinstance(lm.model, GPT) and lm.spec is None
    assert torch.equal(lm.model(ids).logits, gpt(ids).logits)  # the head left out, the backbone the same


def test_errors_name_the_folder(tmp_path, tok) -> None:
    from gptkit.tasks.predict import evaluate_file

    save_model(tiny_gpt(), tmp_path, tokenizer=tok)
    with pytest.raises(CheckpointError, match="task.json.*not a `gptkit finetune` directory"):
        evaluate_file(load(tmp_path), tmp_path / "dev.tsv")
    small = GPT(GPTConfig.from_name("gpt2-tiny", vocab_size=101))
    save_model(small, tmp_path / "small")
    with pytest.raises(CheckpointError, match="tokenizer has 50257 tokens but the model only 101"):
        load(tmp_path / "small", tokenizer="gpt2")
    assert isinstance(load(tmp_path / "small"), ModelBundle) and load(tmp_path / "small").tokenizer is None
