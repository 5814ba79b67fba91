"""Task heads: pooling, losses and checkpoints against transformers' task classes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gptkit import GPT, CheckpointError, ConfigError, GPTConfig
from gptkit.models.gpt import IGNORE_INDEX, save_model
from gptkit.models.heads import classification_loss, lm_targets
from gptkit.models.hf_names import hf_name, is_transposed
from gptkit.models.pooling import last_token, mean_pool, right_pad
from gptkit.tasks.heads import TaskModel, load_task_model, save_task_model
from gptkit.tasks.registry import TASK_TYPES, TaskSpec

from conftest import SHAPES, random_ids, randomized

transformers = pytest.importorskip("transformers")

PAD = 0  # conftest's GPT-2 configs use id 0 as bos/eos; GPT-2 pads with eos
LENGTHS = [7, 3, 5, 1]  # right padding to 7
PARITY = [
    (task, shape)
    for task in ("classify", "tag", "qa", "choice")
    for shape in ("gpt2-odd", "gpt1-odd")
    if SHAPES[shape][0] in TASK_TYPES[task].hf_classes
]


def hf_task_model(task: str, shape_key: str, *, seed: int = 0, **fields) -> torch.nn.Module:
    """A transformers task model on random weights, LayerNorms, biases and head included (eval mode)."""
    family, shape = SHAPES[shape_key]
    torch.manual_seed(seed)
    cls = getattr(transformers, TASK_TYPES[task].hf_classes[family])
    if family == "gpt2":
        config = transformers.GPT2Config(**shape, bos_token_id=PAD, eos_token_id=PAD, pad_token_id=PAD, **fields)
    else:
        config = transformers.OpenAIGPTConfig(**shape, pad_token_id=PAD, **fields)
    model = cls(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                param.add_(0.1 * torch.randn_like(param))
            elif not name.startswith("transformer."):  # the head
                param.normal_(0.0, 0.5)
    return model


def padded_batch(vocab_size: int, lengths: list[int], *, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids that never hold the pad id inside a sequence, and their attention mask."""
    ids = random_ids(vocab_size - 1, len(lengths), max(lengths), seed=seed) + 1
    mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids.masked_fill(mask == 0, PAD), mask


# -- pooling and losses -------------------------------------------------------------------------------


def test_last_token_handles_right_and_left_padding() -> None:
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float).view(2, 4, 3)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    assert torch.equal(last_token(hidden, right), torch.stack([hidden[0, 1], hidden[1, 3]]))
    assert torch.equal(last_token(hidden, left), torch.stack([hidden[0, 3], hidden[1, 3]]))
    assert torch.equal(last_token(hidden, None), hidden[:, -1])


def test_mean_pool_averages_real_tokens_only() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert torch.equal(mean_pool(hidden, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))
    assert torch.equal(mean_pool(hidden, torch.tensor([[0, 1, 1]])), torch.tensor([[51.5, 52.0]]))


def test_right_pad_matches_torch_pad_sequence() -> None:
    rows = [[5, 6, 7], [8], [9, 10]]
    expected = torch.nn.utils.rnn.pad_sequence([torch.tensor(r) for r in rows], batch_first=True, padding_value=-3)
    assert torch.equal(right_pad(rows, -3), expected) and right_pad(rows, -3).dtype == torch.long
    mask = right_pad([[1] * len(r) for r in rows], 0)
    assert torch.equal(mask, (expected != -3).long())


def test_lm_targets_count_only_real_predictions() -> None:
    ids = torch.tensor([[5, 6, 7, 0], [0, 0, 8, 9]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1]])
    # Left padding: the first real token (8) would be predicted from a pad position, so it is not a target.
    assert lm_targets(ids, mask).tolist() == [[5, 6, 7, -100], [-100, -100, -100, 9]]


def test_classification_losses_match_transformers() -> None:
    hf = hf_task_model("classify", "gpt2-small", num_labels=3)
    ids, mask = padded_batch(512, LENGTHS)
    logits = hf(ids, attention_mask=mask).logits
    torch.manual_seed(0)
    cases = [
        ("single_label_classification", torch.tensor([0, 2, 1, 2])),
        ("multi_label_classification", torch.randint(0, 2, (4, 3)).float()),
        ("regression", torch.randn(4, 3)),
        (None, torch.tensor([1, 0, 0, 2])),  # inferred from integer labels, as transformers does
    ]
    for problem_type, labels in cases:
        hf.config.problem_type = problem_type
        expected = hf(ids, attention_mask=mask, labels=labels).loss
        torch.testing.assert_close(classification_loss(logits, labels, problem_type), expected)


def test_regression_with_one_label_matches_transformers() -> None:
    hf = hf_task_model("classify", "gpt2-small", num_labels=1)
    ids, mask = padded_batch(512, LENGTHS)
    labels = torch.tensor([0.5, -1.0, 2.0, 0.0])
    out = hf(ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(classification_loss(out.logits, labels), out.loss)


# -- transformers parity, both directions ---------------------------------------------------------------


def _compare(task: str, ours: TaskModel, hf: torch.nn.Module, vocab: int) -> None:
    """Our logits and losses equal transformers' on a right-padded batch (real positions only where per token)."""
    ids, mask = padded_batch(vocab, LENGTHS)
    real = mask.bool()
    if task == "classify":
        labels = torch.tensor([1, 0, 2, 1])
        got, want = ours(ids, mask, labels=labels), hf(ids, attention_mask=mask, labels=labels)
        torch.testing.assert_close(got.logits, want.logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.loss, want.loss, rtol=1e-5, atol=1e-5)
        left_ids, left_mask = ids.clone(), mask.clone()  # left padding: transformers pools the last non-pad id too
        for row, n in enumerate(LENGTHS):
            left_ids[row] = ids[row].roll(len(ids[row]) - n)
            left_mask[row] = mask[row].roll(len(ids[row]) - n)
        torch.testing.assert_close(
            ours(left_ids, left_mask).logits, hf(left_ids, attention_mask=left_mask).logits, rtol=1e-5, atol=1e-5
        )
    elif task == "tag":
        labels = (ids % 3).masked_fill(~real, IGNORE_INDEX)
        got, want = ours(ids, mask, labels=labels), hf(ids, attention_mask=mask, labels=labels)
        torch.testing.assert_close(got.logits[real], want.logits[real], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.loss, want.loss, rtol=1e-5, atol=1e-5)
    elif task == "qa":
        got, want = ours(ids, mask), hf(ids, attention_mask=mask)
        torch.testing.assert_close(got.start_logits[real], want.start_logits[real], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.end_logits[real], want.end_logits[real], rtol=1e-5, atol=1e-5)
        # Loss on an unpadded batch (transformers scores padding positions too); 99 lies outside: clamped, ignored.
        full = ids[:, :3].clone().clamp(min=1)
        starts, ends = torch.tensor([0, 2, 1, 99]), torch.tensor([1, 2, 99, 2])
        got = ours(full, start_positions=starts, end_positions=ends)
        want = hf(full, start_positions=starts, end_positions=ends)
        torch.testing.assert_close(got.loss, want.loss, rtol=1e-5, atol=1e-5)
    else:
        ids, mask = ids.view(2, 2, -1), mask.view(2, 2, -1)  # 2 questions x 2 candidates
        labels = torch.tensor([1, 0])
        got = ours(ids, mask, labels=labels)
        # OpenAIGPTModel takes the mask flat (batch * candidates, time); GPT2Model takes either.
        want = hf(ids, attention_mask=mask.view(4, -1), mc_token_ids=mask.sum(-1) - 1, mc_labels=labels)
        assert got.logits.shape == (2, 2)
        torch.testing.assert_close(got.logits, want.mc_logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.loss, want.mc_loss, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("task", "shape_key"), PARITY)
def test_transformers_checkpoint_round_trip(task: str, shape_key: str, tmp_path: Path) -> None:
    family, shape = SHAPES[shape_key]
    hf = hf_task_model(
        task,
        shape_key,
        num_labels=3,
        problem_type="single_label_classification",
        id2label={0: "neg", 1: "neutral", 2: "pos"},
    )
    hf.save_pretrained(tmp_path / "hf")
    ours = load_task_model(tmp_path / "hf")
    _compare(task, ours, hf, shape["vocab_size"])
    if task in ("classify", "tag"):
        assert ours.spec.labels == ("neg", "neutral", "pos")

    # gptkit -> transformers: GPT-1 has no eos, so its pad id is given; GPT-2's defaults to the config's eos.
    save_task_model(ours, tmp_path / "ours", pad_token_id=PAD if family == "openai-gpt" else None)
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert config["architectures"] == [TASK_TYPES[task].hf_classes[family]] and config["pad_token_id"] == PAD
    assert config["gptkit"]["task"]["task"] == task
    auto = {
        "classify": transformers.AutoModelForSequenceClassification,
        "tag": transformers.AutoModelForTokenClassification,
        "qa": transformers.AutoModelForQuestionAnswering,
        "choice": getattr(transformers, TASK_TYPES[task].hf_classes[family]),
    }[task]
    reloaded = auto.from_pretrained(tmp_path / "ours").eval()
    assert type(reloaded).__name__ == TASK_TYPES[task].hf_classes[family]
    _compare(task, ours, reloaded, shape["vocab_size"])
    again = load_task_model(tmp_path / "ours")
    assert again.spec == ours.spec
    for key, value in ours.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


@pytest.mark.parametrize(("task", "shape_key"), PARITY)
def test_state_dict_keys_are_the_transformers_class_keys(task: str, shape_key: str) -> None:
    family, shape = SHAPES[shape_key]
    gpt = GPT(GPTConfig.from_name("gpt2-tiny" if family == "gpt2" else "openai-gpt-tiny", **shape))
    ours = TaskModel(gpt, TaskSpec(task, num_labels=3))
    hf = hf_task_model(task, shape_key, num_labels=3)
    assert {hf_name(k, family) for k in ours.state_dict()} == set(hf.state_dict())
    assert ours.transformer is gpt.transformer  # shared, not copied
    for key, value in ours.state_dict().items():
        theirs = hf.state_dict()[hf_name(key, family)]
        assert value.shape == (theirs.t() if is_transposed(key) else theirs).shape, key  # Conv1D is [in, out]


@pytest.mark.parametrize("task", ["classify", "choice"])
def test_untied_lm_head_round_trips(task: str, tmp_path: Path) -> None:
    gpt = randomized(GPT(GPTConfig.from_name("gpt2-tiny", vocab_size=101, tie_word_embeddings=False, eos_token_id=0)))
    ours = TaskModel(gpt, TaskSpec(task)).eval()
    save_task_model(ours, tmp_path)
    ids, mask = padded_batch(101, LENGTHS)
    if task == "choice":
        ids, mask = ids.view(2, 2, -1), mask.view(2, 2, -1)
    torch.testing.assert_close(load_task_model(tmp_path)(ids, mask).logits, ours(ids, mask).logits, rtol=0, atol=0)
    hf = getattr(transformers, TASK_TYPES[task].hf_classes["gpt2"]).from_pretrained(tmp_path).eval()
    if task == "choice":  # double-heads keeps its own LM head; the others have none
        assert torch.equal(hf.lm_head.weight, gpt.lm_head.weight)
    else:
        with pytest.raises(ConfigError, match="aux_lm_weight"):
            TaskModel(gpt, TaskSpec(task), aux_lm_weight=0.5)(ids, mask, labels=torch.tensor([0, 1, 1, 0]))


@pytest.mark.parametrize("task", ["tag", "qa"])
def test_gpt1_without_transformers_class_saves_gptkit_names(task: str, tmp_path: Path) -> None:
    gpt = randomized(GPT(GPTConfig.from_name("openai-gpt-tiny", vocab_size=97)))
    ours = TaskModel(gpt, TaskSpec(task, num_labels=4)).eval()
    save_task_model(ours, tmp_path, id2label=["a", "b", "c", "d"])
    config = json.loads((tmp_path / "config.json").read_text())
    assert "model_type" not in config and config["gptkit"]["weights"] == "gptkit"
    assert "transformers has no openai-gpt class" in config["gptkit"]["note"]
    loaded = load_task_model(tmp_path)
    ids, mask = padded_batch(97, LENGTHS)
    torch.testing.assert_close(loaded(ids, mask).logits, ours(ids, mask).logits, rtol=0, atol=0)
    assert set(loaded.state_dict()) == set(ours.state_dict())


ENTRIES = [(name, family) for name, kind in TASK_TYPES.items() if kind.head for family in ("gpt2", "openai-gpt")]


@pytest.mark.parametrize(("task", "family"), ENTRIES)
def test_every_registry_entry_round_trips(task: str, family: str, tmp_path: Path) -> None:
    """Build -> save -> load in gptkit (equal weights and logits), and in transformers where the entry names
    a class for the family (every weight used, none missing, equal logits)."""
    gpt = randomized(GPT(GPTConfig.from_name("gpt2-tiny" if family == "gpt2" else "openai-gpt-tiny", vocab_size=101)))
    ours = TaskModel(gpt, TaskSpec(task, num_labels=1 if task == "choice" else 3)).eval()
    save_task_model(ours, tmp_path, pad_token_id=PAD)
    again = load_task_model(tmp_path)
    assert again.spec == ours.spec and again.state_dict().keys() == ours.state_dict().keys()
    assert all(torch.equal(again.state_dict()[k], v) for k, v in ours.state_dict().items())
    ids, mask = padded_batch(101, LENGTHS)
    if task == "choice":
        ids, mask = ids.view(2, 2, -1), mask.view(2, 2, -1)
    torch.testing.assert_close(again(ids, mask).logits, ours(ids, mask).logits, rtol=0, atol=0)
    name = TASK_TYPES[task].hf_classes.get(family)
    if name is None:
        return
    hf, info = getattr(transformers, name).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    _compare(task, ours, hf.eval(), 101)


def test_task_model_is_one_module_tree_with_its_backbone() -> None:
    """.parameters(), .train()/.eval(), .to(dtype) and the state dict reach the backbone and the head."""
    gpt = GPT(GPTConfig.from_name("gpt2-tiny", vocab_size=101))
    model = TaskModel(gpt, TaskSpec("choice"))
    backbone = {id(p) for p in gpt.transformer.parameters()}
    head = {id(p) for p in model.head.parameters()}
    assert {id(p) for p in model.parameters()} == backbone | head and head and not head & backbone
    model.train()
    assert all(m.training for m in gpt.transformer.modules()) and model.head.training
    model.eval()
    assert not any(m.training for m in model.modules())
    model.to(torch.float64)
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert gpt.transformer.wte.weight.dtype == torch.float64  # the same modules, converted once
    assert model.lm_head.weight is model.transformer.wte.weight  # the double-heads class keeps the tied LM head
    names = set(model.state_dict())
    assert {k for k in names if k.startswith("transformer.")} == {
        f"transformer.{k}" for k in gpt.transformer.state_dict()
    }
    assert names - {k for k in names if k.startswith("transformer.")} == {
        "multiple_choice_head.summary.weight",
        "multiple_choice_head.summary.bias",
        "lm_head.weight",
    }


# -- auxiliary LM loss, training ------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["classify", "choice"])
def test_aux_lm_loss_adds_weighted_language_modelling_loss(task: str) -> None:
    torch.manual_seed(0)
    gpt = randomized(GPT(GPTConfig.from_name("gpt2-tiny", vocab_size=101)))
    model = TaskModel(gpt, TaskSpec(task), aux_lm_weight=0.5).eval()
    ids, mask = padded_batch(101, LENGTHS)
    labels = torch.tensor([1, 0, 1, 1])
    if task == "choice":
        ids, mask, labels = ids.view(2, 2, -1), mask.view(2, 2, -1), labels[:2]
    with_aux = model(ids, mask, labels=labels)
    model.aux_lm_weight = 0.0
    plain = model(ids, mask, labels=labels)
    flat_ids, flat_mask = ids.reshape(-1, ids.shape[-1]), mask.reshape(-1, ids.shape[-1])
    lm = gpt(flat_ids, attention_mask=flat_mask, labels=flat_ids.masked_fill(flat_mask == 0, IGNORE_INDEX)).loss
    torch.testing.assert_close(with_aux.aux_loss, lm)
    torch.testing.assert_close(with_aux.loss, plain.loss + 0.5 * lm)
    assert plain.aux_loss is None


def test_gradients_reach_head_and_shared_backbone() -> None:
    gpt = GPT(GPTConfig.from_name("gpt2-tiny", vocab_size=101))
    model = TaskModel(gpt, TaskSpec("tag", num_labels=5)).train()
    ids, mask = padded_batch(101, LENGTHS)
    model(ids, mask, labels=ids % 5).loss.backward()
    assert model.classifier.weight.grad is not None and gpt.transformer.wte.weight.grad is not None


# -- errors ---------------------------------------------------------------------------------------------


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown task"):
        TaskSpec("summarise")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="problem_type"):
        TaskSpec("classify", problem_type="ranking")  # type: ignore[arg-type]
    gpt = GPT(GPTConfig.from_name("gpt2-tiny", vocab_size=101))
    with pytest.raises(ValueError, match="candidates"):
        TaskModel(gpt, "choice")(torch.ones(2, 3, dtype=torch.long))
    save_model(gpt, tmp_path / "lm")
    with pytest.raises(CheckpointError, match="not a task model"):
        load_task_model(tmp_path / "lm")
    hf = hf_task_model("choice", "gpt2-small", summary_activation="tanh")
    hf.save_pretrained(tmp_path / "tanh")
    with pytest.raises(CheckpointError, match="summary_activation"):
        load_task_model(tmp_path / "tanh")
