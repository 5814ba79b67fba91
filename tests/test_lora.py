"""LoRA: exactness against the base model and merged weights, and adapters that peft loads (and back)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from gptkit.errors import CheckpointError, ConfigError
from gptkit.models.config import GPTConfig
from gptkit.models.gpt import GPT, load_model, save_model
from gptkit.models.lora import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    LoRAConfig,
    LoRALinear,
    apply_lora,
    load_adapter,
    lora_state_dict,
    mark_trainable,
    merge_lora,
    save_adapter,
)

from conftest import SHAPES, hf_model, random_ids

ALL = ("c_attn", "c_proj", "c_fc")


def tiny_gpt(*, n_layer: int = 2, pre_norm: bool = True, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(
        vocab_size=97, n_positions=32, n_embd=16, n_layer=n_layer, n_head=2, pre_norm=pre_norm, final_norm=pre_norm
    )
    return GPT(config).eval()


def randomise_lora(model: nn.Module, *, seed: int = 3, std: float = 0.1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if ".lora_A." in name or ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def hf_checkpoint(tmp_path: Path, shape_name: str) -> tuple[Path, nn.Module]:
    family, shape = SHAPES[shape_name]
    model = hf_model(family, shape)
    path = tmp_path / "base"
    model.save_pretrained(path)
    return path, model


class Classifier(nn.Module):
    """A task model as heads compose it: the backbone's modules under `transformer.`, a head beside them.

    Pools the last token's hidden state, as transformers' *ForSequenceClassification does on unpadded input.
    """

    def __init__(self, gpt: GPT, num_labels: int) -> None:
        super().__init__()
        self.transformer = gpt.transformer
        self.score = nn.Linear(gpt.config.n_embd, num_labels, bias=False)
        self.__dict__["gpt"] = gpt  # not a submodule: its parameters are registered once, via `transformer`

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        hidden = self.__dict__["gpt"](ids, return_logits=False).last_hidden_state  # (B, T, C)
        return self.score(hidden[:, -1])  # (B, num_labels)


# -- config -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(r=0), "r"),
        (dict(r=2.0), "r"),
        (dict(alpha=0), "alpha"),
        (dict(dropout=1.0), "dropout"),
        (dict(dropout=-0.1), "dropout"),
        (dict(targets=()), "targets"),
        (dict(targets=("",)), "targets"),
    ],
)
def test_config_validation_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"LoRAConfig\.{field}\b"):
        LoRAConfig(**kwargs)


def test_config_defaults_are_peft_defaults_and_scaling() -> None:
    config = LoRAConfig()
    assert (config.r, config.alpha, config.dropout, config.targets) == (8, 8, 0.0, ("c_attn",))
    assert LoRAConfig(r=4, alpha=16).scaling == 4.0
    assert LoRAConfig(r=4, alpha=16, rslora=True).scaling == 8.0
    assert LoRAConfig(targets=["c_fc"]).targets == ("c_fc",)  # lists (from JSON/YAML) become tuples


# -- exactness --------------------------------------------------------------------------------------


def test_zero_b_is_exactly_the_base_model_and_keeps_base_keys() -> None:
    model = tiny_gpt()
    ids = random_ids(97, 2, 12)
    base_keys = set(model.state_dict())
    base_weight = model.transformer.h[0].attn.c_attn.weight
    with torch.no_grad():
        expected = model(ids).logits

    names = apply_lora(model, LoRAConfig(r=4, alpha=8, targets=ALL))

    assert names == [
        f"transformer.h.{i}.{m}" for i in range(2) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    ]
    layer = model.transformer.h[0].attn.c_attn
    assert isinstance(layer, LoRALinear) and layer.weight is base_weight
    assert layer.lora_A.weight.shape == (4, 16) and layer.lora_B.weight.shape == (48, 4)
    assert layer.lora_A.weight.abs().sum() > 0 and not layer.lora_B.weight.any()
    lora_keys = {f"{n}.lora_{ab}.weight" for n in names for ab in "AB"}
    assert set(model.state_dict()) == base_keys | lora_keys
    assert set(lora_state_dict(model)) == lora_keys
    with torch.no_grad():
        assert torch.equal(model(ids).logits, expected)


def test_forward_is_base_plus_scaled_low_rank_update() -> None:
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    layer = LoRALinear(base, LoRAConfig(r=2, alpha=6))
    randomise_lora(layer)
    x = torch.randn(3, 6)
    A, B = layer.lora_A.weight, layer.lora_B.weight
    expected = x @ (base.weight + 3.0 * B @ A).t() + base.bias  # hand-computed: scaling = 6 / 2
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)
    assert isinstance(LoRALinear(base, LoRAConfig(dropout=0.2)).lora_dropout, nn.Dropout)


@pytest.mark.parametrize("pre_norm", [True, False])
def test_merged_equals_unmerged_and_saves_as_a_plain_gpt(tmp_path: Path, pre_norm: bool) -> None:
    model = tiny_gpt(pre_norm=pre_norm)
    base_keys = list(model.state_dict())
    ids = random_ids(97, 2, 12)
    apply_lora(model, LoRAConfig(r=3, alpha=5, targets=ALL))
    randomise_lora(model)
    with torch.no_grad():
        expected = model(ids).logits

    merged = merge_lora(model)

    assert len(merged) == 8 and not any(isinstance(m, LoRALinear) for m in model.modules())
    assert list(model.state_dict()) == base_keys
    assert model.lm_head.weight is model.transformer.wte.weight
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, expected, rtol=1e-5, atol=1e-5)
        save_model(model, tmp_path / "merged")
        torch.testing.assert_close(load_model(tmp_path / "merged")(ids).logits, expected, rtol=1e-5, atol=1e-5)


def test_apply_lora_errors() -> None:
    model = tiny_gpt()
    with pytest.raises(ConfigError, match=r"\['q_proj'\].*\['c_attn', 'c_fc', 'c_proj', 'lm_head'\]"):
        apply_lora(model, LoRAConfig(targets=("q_proj",)))
    with pytest.raises(ConfigError, match=r"transformer\.h\.0\.attn.*CausalSelfAttention"):
        apply_lora(model, LoRAConfig(targets=("attn",)))
    with pytest.raises(ConfigError, match="lm_head.*tied"):
        apply_lora(model, LoRAConfig(targets=("lm_head",)))
    apply_lora(model, LoRAConfig(targets=("c_attn",)))
    with pytest.raises(ConfigError, match="already has a LoRA adapter"):
        apply_lora(model, LoRAConfig(targets=("c_attn",)))
    # A dotted target narrows the match, as in peft: only the attention projections.
    assert apply_lora(model, LoRAConfig(targets=("attn.c_proj",))) == [
        "transformer.h.0.attn.c_proj",
        "transformer.h.1.attn.c_proj",
    ]


# -- which parameters train --------------------------------------------------------------------------


def _trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_mark_trainable_on_a_language_model() -> None:
    model = tiny_gpt(n_layer=3)
    names = dict(model.named_parameters())
    total = sum(p.numel() for p in names.values())
    assert total == model.num_parameters()  # the tied LM head counts once
    assert mark_trainable(model, "all") == (total, total)
    assert _trainable(model) == set(names)

    block = sum(p.numel() for n, p in names.items() if n.startswith("transformer.h.2."))
    ln_f = 2 * 16
    assert mark_trainable(model, "last:1") == (block + ln_f, total)
    assert _trainable(model) == {n for n in names if n.startswith(("transformer.h.2.", "transformer.ln_f."))}
    assert mark_trainable(model, "last:3")[0] == total - 97 * 16 - 32 * 16  # all but the embeddings

    with pytest.raises(ConfigError, match="no task-head parameters"):
        mark_trainable(model, "head")
    with pytest.raises(ConfigError, match="apply_lora first"):
        mark_trainable(model, "lora")
    for bad in ("last:0", "last:4", "last:x", "everything"):
        with pytest.raises(ConfigError, match=re.escape(repr(bad))):
            mark_trainable(model, bad)

    apply_lora(model, LoRAConfig(r=2, targets=("c_attn",)))
    lora = {n for n, _ in model.named_parameters() if ".lora_" in n}
    assert mark_trainable(model, "lora") == (3 * (2 * 16 + 48 * 2), total + 3 * (2 * 16 + 48 * 2))
    assert _trainable(model) == lora


def test_mark_trainable_with_a_task_head_and_gpt1() -> None:
    model = Classifier(tiny_gpt(n_layer=2, pre_norm=False), num_labels=3)  # GPT-1: no final LayerNorm
    total = sum(p.numel() for p in model.parameters())
    assert mark_trainable(model, "head") == (16 * 3, total)
    assert _trainable(model) == {"score.weight"}
    block = sum(p.numel() for n, p in model.named_parameters() if n.startswith("transformer.h.1."))
    assert mark_trainable(model, "last:1") == (block + 16 * 3, total)
    apply_lora(model, LoRAConfig(r=2, targets=("c_fc",)))
    assert mark_trainable(model, "lora")[0] == 2 * (2 * 16 + 64 * 2) + 16 * 3
    assert _trainable(model) == {"score.weight"} | {n for n, _ in model.named_parameters() if ".lora_" in n}


# -- peft interop ------------------------------------------------------------------------------------

CASES = [("gpt2-odd", ("c_attn",)), ("gpt2-small", ALL), ("gpt1-odd", ("c_attn",)), ("gpt1-small", ALL)]


@pytest.mark.parametrize("shape_name, targets", CASES)
def test_adapter_saved_by_gptkit_loads_in_peft(tmp_path: Path, shape_name: str, targets: tuple[str, ...]) -> None:
    peft = pytest.importorskip("peft")
    base_dir, hf = hf_checkpoint(tmp_path, shape_name)
    model = load_model(base_dir)
    config = LoRAConfig(r=4, alpha=16, targets=targets)
    apply_lora(model, config)
    randomise_lora(model)
    ids = random_ids(model.config.vocab_size, 2, 11)

    save_adapter(model, tmp_path / "adapter", config=config, base_model_name_or_path=str(base_dir))

    written = json.loads((tmp_path / "adapter" / ADAPTER_CONFIG_FILE).read_text())
    assert written["peft_type"] == "LORA" and written["fan_in_fan_out"] is True
    assert set(load_file(tmp_path / "adapter" / ADAPTER_WEIGHTS_FILE)) == {
        "base_model.model." + k for k in lora_state_dict(model)
    }
    peft_model = peft.PeftModel.from_pretrained(type(hf).from_pretrained(base_dir), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, peft_model(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape_name, targets", CASES + [("gpt2-small", r".*\.h\.1\.(attn\.c_attn|mlp\.c_proj)")])
@pytest.mark.parametrize("rslora", [False, True])
def test_adapter_saved_by_peft_loads_in_gptkit(
    tmp_path: Path, shape_name: str, targets: tuple[str, ...] | str, rslora: bool
) -> None:
    peft = pytest.importorskip("peft")
    base_dir, hf = hf_checkpoint(tmp_path, shape_name)
    peft_config = peft.LoraConfig(
        r=4,
        lora_alpha=12,
        target_modules=list(targets) if isinstance(targets, tuple) else targets,
        use_rslora=rslora,
        fan_in_fan_out=True,
    )
    peft_model = peft.get_peft_model(hf, peft_config).eval()
    randomise_lora(peft_model)
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = random_ids(hf.config.vocab_size, 2, 11)

    model = load_model(base_dir)
    config = load_adapter(model, tmp_path / "adapter")

    assert (config.r, config.alpha, config.rslora) == (4, 12, rslora)
    n_layers = sum(isinstance(m, LoRALinear) for m in model.modules())
    assert n_layers == (2 if isinstance(targets, str) else hf.config.n_layer * (1 if len(targets) == 1 else 4))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, peft_model(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


def test_classification_head_round_trips_through_peft_modules_to_save(tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    base_dir, _ = hf_checkpoint(tmp_path, "gpt2-small")
    torch.manual_seed(5)
    hf = transformers.GPT2ForSequenceClassification.from_pretrained(base_dir, num_labels=3, pad_token_id=0)
    peft_model = peft.get_peft_model(
        hf, peft.LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["c_attn"], fan_in_fan_out=True)
    ).eval()
    randomise_lora(peft_model)
    peft_model.save_pretrained(tmp_path / "from_peft")
    ids = random_ids(hf.config.vocab_size - 1, 2, 9) + 1  # no pad token (0): HF pools the last position

    model = Classifier(load_model(base_dir), num_labels=3)
    load_adapter(model, tmp_path / "from_peft")  # modules_to_save ["classifier", "score"]: loads score.weight
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        torch.testing.assert_close(model(ids), expected, rtol=1e-5, atol=1e-5)

    save_adapter(
        model,
        tmp_path / "from_gptkit",
        config=LoRAConfig(r=4, targets=("c_attn",)),
        base_model_name_or_path=str(base_dir),
        task_type="SEQ_CLS",
    )
    assert "base_model.model.score.weight" in load_file(tmp_path / "from_gptkit" / ADAPTER_WEIGHTS_FILE)
    hf2 = transformers.GPT2ForSequenceClassification.from_pretrained(base_dir, num_labels=3, pad_token_id=0)
    reloaded = peft.PeftModel.from_pretrained(hf2, tmp_path / "from_gptkit").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)


# -- damaged adapters --------------------------------------------------------------------------------


@pytest.fixture
def adapter_dir(tmp_path: Path) -> Path:
    model = tiny_gpt()
    config = LoRAConfig(r=2, targets=("c_attn",))
    apply_lora(model, config)
    return save_adapter(model, tmp_path / "adapter", config=config, base_model_name_or_path=None)


def _edit_weights(path: Path, edit) -> None:
    tensors = load_file(path / ADAPTER_WEIGHTS_FILE)
    edit(tensors)
    save_file(tensors, path / ADAPTER_WEIGHTS_FILE)


def _edit_config(path: Path, **changes) -> None:
    config = json.loads((path / ADAPTER_CONFIG_FILE).read_text())
    (path / ADAPTER_CONFIG_FILE).write_text(json.dumps({**config, **changes}))


KEY = "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: (p / ADAPTER_CONFIG_FILE).unlink(), f"{ADAPTER_CONFIG_FILE}: file is missing"),
        (lambda p: (p / ADAPTER_WEIGHTS_FILE).unlink(), f"{ADAPTER_WEIGHTS_FILE}: adapter weights are missing"),
        (lambda p: (p / ADAPTER_WEIGHTS_FILE).write_bytes(b"junk"), "cannot read adapter weights"),
        (lambda p: _edit_weights(p, lambda t: t.update(extra=t.pop(KEY))), "unexpected adapter weight 'extra'"),
        (lambda p: _edit_weights(p, lambda t: t.pop(KEY)), f"missing adapter weight.*{re.escape(KEY)}"),
        (
            lambda p: _edit_weights(p, lambda t: t.update({KEY: torch.zeros(3, 16)})),
            rf"{re.escape(KEY)}' has shape \(3, 16\), expected \(2, 16\)",
        ),
        (lambda p: _edit_config(p, r=4), r"has shape \(2, 16\), expected \(4, 16\)"),
        (lambda p: _edit_config(p, peft_type="IA3"), "peft_type is 'IA3'"),
        (lambda p: _edit_config(p, use_dora=True), "use_dora=True is not supported"),
        (lambda p: _edit_config(p, target_modules=["q_proj"]), "match no module"),
        (lambda p: _edit_config(p, lora_dropout=2), r"LoRAConfig\.dropout"),
    ],
)
def test_damaged_adapter_is_refused_naming_it(adapter_dir: Path, damage, message: str) -> None:
    damage(adapter_dir)
    model = tiny_gpt()
    with pytest.raises(CheckpointError, match=message) as info:
        load_adapter(model, adapter_dir)
    assert str(adapter_dir) in str(info.value)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())  # checked before the model changes


def test_save_adapter_refuses_a_model_without_lora_or_a_mismatched_config(tmp_path: Path) -> None:
    model = tiny_gpt()
    with pytest.raises(ConfigError, match="apply_lora first"):
        save_adapter(model, tmp_path, config=LoRAConfig(), base_model_name_or_path=None)
    apply_lora(model, LoRAConfig(r=2))
    with pytest.raises(ConfigError, match="do not match config"):
        save_adapter(model, tmp_path, config=LoRAConfig(r=4), base_model_name_or_path=None)
