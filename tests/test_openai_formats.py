"""OpenAI's original releases: GPT-2's TensorFlow folder and GPT-1's params_*.npy shards, read back exactly."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gptkit.errors import CheckpointError
from gptkit.models.config import GPTConfig
from gptkit.models.gpt import GPT
from gptkit.models.openai_release import gpt1_config_from_shapes, read_gpt1_shards, read_openai_tf
from openai_layouts import gpt2_tf_variables, random_gpt, write_gpt1_shards, write_gpt2_tf

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up banner, before it is imported

SMALL = dict(n_embd=64, n_layer=2, n_head=4, vocab_size=512, n_positions=128)
ODD = dict(n_embd=48, n_layer=5, n_head=3, vocab_size=1001, n_positions=77)  # 3 heads, 5 layers
TINY = dict(n_embd=16, n_layer=2, n_head=2, vocab_size=50, n_positions=8)
REAL_GPT1_SHAPES = Path(__file__).resolve().parents[2] / "shared" / "assets" / "openai-gpt" / "params_shapes.json"


def assert_same_state(model: GPT, config: GPTConfig, state: dict[str, torch.Tensor]) -> None:
    """Config equal, the same keys, every tensor bit-identical, lm_head the same tensor as wte."""
    assert config == model.config
    original = model.state_dict()
    assert sorted(state) == sorted(original)
    for key, tensor in original.items():
        assert state[key].dtype == tensor.dtype, key
        assert torch.equal(state[key], tensor), key
    assert state["lm_head.weight"] is state["transformer.wte.weight"]


# -- GPT-1 shards ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [SMALL, ODD], ids=["small", "odd"])
@pytest.mark.parametrize("n_shards", [10, 1, 3])
def test_gpt1_shards_round_trip(tmp_path: Path, shape: dict, n_shards: int) -> None:
    model = random_gpt("openai-gpt", seed=n_shards, **shape)
    write_gpt1_shards(tmp_path, model, n_shards=n_shards)
    config, state = read_gpt1_shards(tmp_path, n_head=shape["n_head"])
    assert_same_state(model, config, state)


def test_gpt1_non_default_mlp_width(tmp_path: Path) -> None:
    model = random_gpt("openai-gpt", **TINY, n_inner=40)
    write_gpt1_shards(tmp_path, model)
    config, state = read_gpt1_shards(tmp_path, n_head=2)
    assert config.n_inner == 40
    assert_same_state(model, config, state)


def _released_gpt1_shapes() -> list[list[int]]:
    """The release's params_shapes.json, written out: 2 embeddings, then 12 identical layers."""
    layer = [[1, 768, 2304], [2304], [1, 768, 768], [768], [768], [768]]
    layer += [[1, 768, 3072], [3072], [1, 3072, 768], [768], [768], [768]]
    return [[512, 768], [40478, 768]] + layer * 12


def test_released_gpt1_shapes_give_the_openai_gpt_preset() -> None:
    config = gpt1_config_from_shapes([tuple(s) for s in _released_gpt1_shapes()])
    assert config == GPTConfig.from_name("openai-gpt")


@pytest.mark.skipif(not REAL_GPT1_SHAPES.is_file(), reason="the release's params_shapes.json is not present")
def test_released_gpt1_shapes_file_is_as_written_out() -> None:
    assert json.loads(REAL_GPT1_SHAPES.read_text()) == _released_gpt1_shapes()


@pytest.fixture
def gpt1_dir(tmp_path: Path) -> Path:
    return write_gpt1_shards(tmp_path / "gpt1", random_gpt("openai-gpt", **TINY), n_shards=4)


def test_gpt1_missing_first_shard(gpt1_dir: Path) -> None:
    (gpt1_dir / "params_0.npy").unlink()
    with pytest.raises(CheckpointError, match=r"params_0\.npy: missing"):
        read_gpt1_shards(gpt1_dir, n_head=2)


def test_gpt1_missing_middle_shard(gpt1_dir: Path) -> None:
    (gpt1_dir / "params_2.npy").unlink()
    with pytest.raises(CheckpointError, match=r"params_2\.npy: missing, but params_3\.npy exists"):
        read_gpt1_shards(gpt1_dir, n_head=2)


def test_gpt1_missing_last_shard_is_a_size_mismatch(gpt1_dir: Path) -> None:
    (gpt1_dir / "params_3.npy").unlink()
    with pytest.raises(CheckpointError, match=r"params_0\.npy\.\.params_2\.npy hold \d+ values but .*params_shapes"):
        read_gpt1_shards(gpt1_dir, n_head=2)


def test_gpt1_extra_shard_is_a_size_mismatch(gpt1_dir: Path) -> None:
    np.save(gpt1_dir / "params_4.npy", np.zeros(3, np.float32))
    with pytest.raises(CheckpointError, match=r"params_0\.npy\.\.params_4\.npy hold"):
        read_gpt1_shards(gpt1_dir, n_head=2)


def test_gpt1_truncated_shard(gpt1_dir: Path) -> None:
    path = gpt1_dir / "params_1.npy"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(CheckpointError, match=r"params_1\.npy: not a readable \.npy file"):
        read_gpt1_shards(gpt1_dir, n_head=2)


def test_gpt1_shard_of_wrong_kind(gpt1_dir: Path) -> None:
    np.save(gpt1_dir / "params_1.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(CheckpointError, match=r"params_1\.npy: expected a flat float array"):
        read_gpt1_shards(gpt1_dir, n_head=2)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s[:-1], r"25 shapes; expected 2 embeddings \+ 12 per layer"),
        (lambda s: [[8, 16], [50, 17]] + s[2:], r"entry 0 .* and entry 1 .* disagree on the embedding width"),
        (lambda s: s[:5] + [[17]] + s[6:], r"entry 5 \(layer 0 attn/c_proj/b\) has shape \[17\], expected \[16\]"),
        (lambda s: s[:16] + [[1, 48, 16]] + s[17:], r"entry 16 \(layer 1 attn/c_proj/w\)"),
        (lambda s: "not a list", r"expected a list of shapes"),
        (lambda s: [[8, 0]] + s[1:], r"expected a list of shapes"),
    ],
    ids=["count", "widths", "bias", "weight", "type", "zero"],
)
def test_gpt1_inconsistent_shapes(gpt1_dir: Path, edit, message: str) -> None:
    path = gpt1_dir / "params_shapes.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    with pytest.raises(CheckpointError, match=r"params_shapes\.json: .*" + message):
        read_gpt1_shards(gpt1_dir, n_head=2)


def test_gpt1_missing_shapes_file(gpt1_dir: Path) -> None:
    (gpt1_dir / "params_shapes.json").unlink()
    with pytest.raises(CheckpointError, match=r"params_shapes\.json: missing"):
        read_gpt1_shards(gpt1_dir)


def test_gpt1_head_count_must_divide_width(gpt1_dir: Path) -> None:
    with pytest.raises(CheckpointError, match=r"params_shapes\.json: does not describe a valid model.*n_head"):
        read_gpt1_shards(gpt1_dir, n_head=3)


# -- GPT-2 TensorFlow folder ----------------------------------------------------------------------


@pytest.fixture
def tf() -> object:
    return pytest.importorskip("tensorflow")


@pytest.mark.parametrize("shape", [SMALL, ODD], ids=["small", "odd"])
def test_gpt2_tf_round_trip(tf: object, tmp_path: Path, shape: dict) -> None:
    model = random_gpt("gpt2", seed=3, **shape)
    write_gpt2_tf(tmp_path, model)
    assert {p.name for p in tmp_path.iterdir()} >= {"checkpoint", "hparams.json", "model.ckpt.index"}
    config, state = read_openai_tf(tmp_path)
    assert_same_state(model, config, state)


@pytest.fixture
def tf_model() -> GPT:
    return random_gpt("gpt2", **TINY)


@pytest.fixture
def tf_dir(tf: object, tmp_path: Path, tf_model: GPT) -> Path:
    return write_gpt2_tf(tmp_path / "gpt2", tf_model)


def test_tf_prefix_from_checkpoint_file(tf: object, tmp_path: Path, tf_model: GPT) -> None:
    write_gpt2_tf(tmp_path, tf_model, prefix="model-1000")
    assert_same_state(tf_model, *read_openai_tf(tmp_path))


def test_tf_prefix_with_foreign_absolute_path(tf_dir: Path, tf_model: GPT) -> None:
    """The `checkpoint` file written on another machine names a path that does not exist here."""
    (tf_dir / "checkpoint").write_text('model_checkpoint_path: "/mnt/openai/run-7/model.ckpt"\n')
    assert_same_state(tf_model, *read_openai_tf(tf_dir))


def test_tf_prefix_without_checkpoint_file(tf: object, tmp_path: Path, tf_model: GPT) -> None:
    write_gpt2_tf(tmp_path, tf_model, prefix="weights")
    (tmp_path / "checkpoint").unlink()
    assert_same_state(tf_model, *read_openai_tf(tmp_path))


def test_tf_no_checkpoint(tmp_path: Path, tf_model: GPT) -> None:
    (tmp_path / "hparams.json").write_text(json.dumps(dict(n_vocab=50, n_ctx=8, n_embd=16, n_head=2, n_layer=2)))
    with pytest.raises(CheckpointError, match=r"cannot find the TensorFlow checkpoint \(no \*\.index file\)"):
        read_openai_tf(tmp_path)


def test_tf_missing_tensorflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hparams.json").write_text(json.dumps(dict(n_vocab=50, n_ctx=8, n_embd=16, n_head=2, n_layer=2)))
    (tmp_path / "model.ckpt.index").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # makes `import tensorflow` raise ImportError
    with pytest.raises(CheckpointError, match=r"model\.ckpt: .*needs TensorFlow: pip install 'gptkit\[tf\]'"):
        read_openai_tf(tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(n_embd=32), r"model\.ckpt\.index: variable 'model/wte' has shape \[50, 16\], expected \[50, 32\]"),
        (dict(n_vocab=51), r"variable 'model/wte' has shape \[50, 16\], expected \[51, 16\] from .*hparams\.json"),
        (dict(n_ctx=9), r"variable 'model/wpe' has shape \[8, 16\], expected \[9, 16\]"),
        (dict(n_layer=3), r"variable 'model/h2/attn/c_attn/w' is missing"),
        (dict(n_layer=1), r"variable\(s\) \['model/h1/attn/c_attn/b', .*\] and 7 more are not part of a GPT-2"),
        (dict(n_head=3), r"hparams\.json: does not describe a valid model.*n_head"),
    ],
    ids=["n_embd", "n_vocab", "n_ctx", "more-layers", "fewer-layers", "n_head"],
)
def test_tf_wrong_hparams(tf_dir: Path, change: dict, message: str) -> None:
    path = tf_dir / "hparams.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(CheckpointError, match=message):
        read_openai_tf(tf_dir)


@pytest.mark.parametrize(
    ("text", "message"), [(None, "missing"), ("{", "not valid JSON"), ('{"n_vocab": 50}', "expected a JSON object")]
)
def test_tf_bad_hparams_file(tf_dir: Path, text: str | None, message: str) -> None:
    path = tf_dir / "hparams.json"
    path.unlink() if text is None else path.write_text(text)
    with pytest.raises(CheckpointError, match=r"hparams\.json: " + message):
        read_openai_tf(tf_dir)


def test_tf_missing_variable(tf: object, tmp_path: Path, tf_model: GPT) -> None:
    variables = gpt2_tf_variables(tf_model)
    del variables["model/h1/ln_2/g"]
    write_gpt2_tf(tmp_path, tf_model, variables=variables)
    with pytest.raises(CheckpointError, match=r"model\.ckpt\.index: variable 'model/h1/ln_2/g' is missing"):
        read_openai_tf(tmp_path)


def test_tf_unused_variable(tf: object, tmp_path: Path, tf_model: GPT) -> None:
    variables = {**gpt2_tf_variables(tf_model), "global_step": np.zeros((), np.int64)}
    write_gpt2_tf(tmp_path, tf_model, variables=variables)
    with pytest.raises(CheckpointError, match=r"model\.ckpt\.index: variable\(s\) \['global_step'\] are not part"):
        read_openai_tf(tmp_path)


def test_tf_wrong_variable_shape(tf: object, tmp_path: Path, tf_model: GPT) -> None:
    variables = gpt2_tf_variables(tf_model)
    variables["model/h0/mlp/c_fc/w"] = variables["model/h0/mlp/c_fc/w"][0]  # [C, 4C] without the conv axis
    write_gpt2_tf(tmp_path, tf_model, variables=variables)
    with pytest.raises(CheckpointError, match=r"'model/h0/mlp/c_fc/w' has shape \[16, 64\], expected \[1, 16, 64\]"):
        read_openai_tf(tmp_path)


def test_tf_truncated_data(tf_dir: Path) -> None:
    data = tf_dir / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model\.ckpt\.data-\*: cannot read variable .*truncated or corrupt"):
        read_openai_tf(tf_dir)


def test_tf_corrupt_index(tf_dir: Path) -> None:
    (tf_dir / "model.ckpt.index").write_bytes(b"not an index")
    with pytest.raises(CheckpointError, match=r"model\.ckpt: not a readable TensorFlow checkpoint"):
        read_openai_tf(tf_dir)


# -- end to end: GPT.from_pretrained(folder) dispatches to these readers ----------------------------


def _logits(model: GPT, vocab_size: int) -> torch.Tensor:
    ids = torch.randint(0, vocab_size, (2, 20), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("shape", [SMALL, ODD], ids=["small", "odd"])
def test_from_pretrained_openai_tf_folder(tf: object, tmp_path: Path, shape: dict) -> None:
    model = random_gpt("gpt2", seed=11, **shape)
    loaded = GPT.from_pretrained(write_gpt2_tf(tmp_path, model))
    assert loaded.config == model.config
    assert torch.equal(_logits(loaded, shape["vocab_size"]), _logits(model, shape["vocab_size"]))


@pytest.mark.parametrize("n_head", [12, 3])
def test_from_pretrained_gpt1_folder(tmp_path: Path, n_head: int) -> None:
    # The shards do not record the head count: the release's 12 by default, else given by the caller.
    shape = dict(ODD, n_head=n_head)
    model = random_gpt("openai-gpt", seed=12, **shape)
    folder = write_gpt1_shards(tmp_path, model)
    loaded = GPT.from_pretrained(folder, n_head=None if n_head == 12 else n_head)
    assert loaded.config == model.config
    assert torch.equal(_logits(loaded, shape["vocab_size"]), _logits(model, shape["vocab_size"]))
