"""Checkpoints in and out: transformers directories load with the same numbers, ours load in transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptkit import GPT, CheckpointError, GPTConfig, ModelNotFoundError
from gptkit.cli import main as cli
from gptkit.models.gpt import load_model, save_model
from gptkit.models.loading import describe

from conftest import SHAPES, hf_model, random_ids

transformers = pytest.importorskip("transformers")


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def test_hf_directory_loads_with_equal_logits_and_saves_back(hf_dir: tuple[Path, torch.nn.Module], tmp_path) -> None:
    path, reference = hf_dir
    ids = random_ids(reference.config.vocab_size, 2, reference.config.n_positions)
    model = GPT.from_pretrained(path)
    assert (_logits(model, ids) - _logits(reference, ids)).abs().max().item() <= 1e-4
    model.save_pretrained(tmp_path / "out")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert type(reloaded) is type(reference)
    assert (_logits(reloaded, ids) - _logits(model, ids)).abs().max().item() <= 1e-4
    assert GPT.from_pretrained(tmp_path / "out").config == model.config


@pytest.mark.parametrize("family", ["gpt2", "openai-gpt"])
def test_bare_model_pytorch_bin_and_sharded_checkpoints(family: str, tmp_path) -> None:
    dims = SHAPES["gpt2-small"][1]
    reference = hf_model(family, dims)
    ids = random_ids(dims["vocab_size"], 2, 16)
    expected = _logits(reference, ids)
    # The bare model (no LM head, no `transformer.` prefix) gives the same logits through the tied head.
    reference.transformer.save_pretrained(tmp_path / "bare")
    assert torch.allclose(_logits(GPT.from_pretrained(tmp_path / "bare"), ids), expected, atol=1e-5)
    # Sharded safetensors with an index file.
    reference.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert torch.allclose(_logits(GPT.from_pretrained(tmp_path / "sharded"), ids), expected, atol=1e-5)
    # A legacy pytorch_model.bin, read with torch.load(weights_only=True).
    legacy = tmp_path / "legacy"
    reference.save_pretrained(legacy)
    (legacy / "model.safetensors").unlink()
    torch.save(reference.state_dict(), legacy / "pytorch_model.bin")
    assert torch.allclose(_logits(GPT.from_pretrained(legacy), ids), expected, atol=1e-5)


def test_gptkit_round_trip_is_exact_in_float32_and_bfloat16(tmp_path) -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("gpt2-tiny", vocab_size=300, n_inner=100)).eval()
    ids = random_ids(300, 2, 20)
    save_model(model, tmp_path / "a")
    again = load_model(tmp_path / "a")
    assert again.config == model.config
    assert torch.equal(_logits(again, ids), _logits(model, ids))
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["n_inner"] == 100 and config["gptkit"]["config"]["n_inner"] == 100
    save_model(model.to(torch.bfloat16), tmp_path / "b")
    assert describe(tmp_path / "b")["dtype"] == "bfloat16"
    assert load_model(tmp_path / "b", dtype=torch.bfloat16).transformer.wte.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_loading_in_another_dtype_equals_casting_after(hf_dir: tuple[Path, torch.nn.Module], dtype) -> None:
    path, _ = hf_dir
    full, cast = load_model(path), load_model(path, dtype=dtype)
    for (name, a), (_, b) in zip(full.state_dict().items(), cast.state_dict().items(), strict=True):
        assert b.dtype == dtype and torch.equal(a.to(dtype), b), name
    assert cast.lm_head.weight is cast.transformer.wte.weight


def test_shape_without_hf_equivalent_still_round_trips(tmp_path) -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("gpt2-tiny", vocab_size=300, bias=False)).eval()
    save_model(model, tmp_path / "c")
    ids = random_ids(300, 1, 12)
    assert torch.equal(_logits(load_model(tmp_path / "c"), ids), _logits(model, ids))


def test_interrupted_save_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch) -> None:
    import safetensors.torch

    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("gpt2-tiny", vocab_size=300)).eval()
    save_model(model, tmp_path / "ckpt")
    before = _logits(model, random_ids(300, 1, 8))

    def crash(tensors, filename, metadata=None):  # writes half a file, then dies like a full disk would
        Path(filename).write_bytes(b"\0" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with torch.no_grad():
        model.transformer.wte.weight.add_(1.0)
    with pytest.raises(OSError, match="No space left"):
        save_model(model, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    assert torch.equal(_logits(load_model(tmp_path / "ckpt"), random_ids(300, 1, 8)), before)


def _hf_dir(tmp_path: Path) -> Path:
    path = tmp_path / "hf"
    hf_model("gpt2", SHAPES["gpt2-small"][1]).save_pretrained(path)
    return path


def test_missing_unexpected_and_mismatched_weights_are_named(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    path = _hf_dir(tmp_path)
    weights = path / "model.safetensors"
    state = load_file(weights)
    save_file({k: v for k, v in state.items() if k != "transformer.h.1.mlp.c_fc.bias"}, weights, {"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing weight 'transformer\.h\.1\.mlp\.c_fc\.bias'"):
        GPT.from_pretrained(path)
    save_file({**state, "transformer.h.9.attn.c_attn.weight": torch.zeros(2)}, weights, {"format": "pt"})
    with pytest.raises(CheckpointError, match=r"unexpected weight\(s\) \['transformer\.h\.9\.attn\.c_attn\.weight'\]"):
        GPT.from_pretrained(path)
    save_file({**state, "transformer.wpe.weight": torch.zeros(99, 64)}, weights, {"format": "pt"})
    with pytest.raises(CheckpointError, match=r"'transformer\.wpe\.weight' has shape \(99, 64\).*expects \(128, 64\)"):
        GPT.from_pretrained(path)


def test_malformed_and_missing_files_are_named(tmp_path) -> None:
    path = _hf_dir(tmp_path)
    (path / "config.json").write_text('{"model_type": "gpt2",\n "n_embd": }')
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON \(line 2"):
        GPT.from_pretrained(path)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="model_type 'llama' is not supported"):
        GPT.from_pretrained(path)
    (path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 64}))
    missing = r"lacks required field\(s\) \['n_head', 'n_layer', 'n_positions', 'vocab_size'\]"
    with pytest.raises(CheckpointError, match=missing):
        GPT.from_pretrained(path)
    (path / "model.safetensors").write_bytes(b"not a safetensors file")
    (path / "config.json").write_text(json.dumps(hf_model("gpt2", SHAPES["gpt2-small"][1]).config.to_dict()))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: cannot read weights"):
        GPT.from_pretrained(path)
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights found"):
        GPT.from_pretrained(path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        GPT.from_pretrained(empty)


def test_unknown_hub_name_while_offline_is_a_clear_error(tmp_path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    code = (
        "import gptkit\n"
        "try:\n    gptkit.GPT.from_pretrained('gpt2')\n"
        "except gptkit.ModelNotFoundError as e:\n    print('ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    expected = "ERR 'openai-community/gpt2' is not in the local Hugging Face cache and the hub cannot be reached"
    assert expected in out.stdout, out.stderr
    assert "run `gptkit download gpt2` once online" in out.stdout
    with pytest.raises(ModelNotFoundError, match="not a hub repo id"):
        GPT.from_pretrained(str(tmp_path / "no" / "such" / "dir"))


# -- gptkit download: the hub, faked by a snapshot_download that serves repos from folders -------------------


class FakeHub:
    """huggingface_hub.snapshot_download over repos held as {repo id: {path in the repo: bytes}}: files are chosen
    by huggingface_hub's own pattern matching and written where the real one writes them."""

    def __init__(self, root: Path, repos: dict[str, dict[str, bytes]]) -> None:
        self.root, self.repos, self.calls = root, repos, []

    def __call__(self, repo_id: str, **kwargs) -> str:
        from huggingface_hub.utils import RepositoryNotFoundError, filter_repo_objects

        self.calls.append({"repo_id": repo_id, **kwargs})
        if repo_id not in self.repos:
            response = type("Response", (), {"headers": {}, "request": None})()
            raise RepositoryNotFoundError(f"404 Client Error: Repository Not Found for {repo_id}", response=response)
        files = self.repos[repo_id]
        chosen = filter_repo_objects(
            files, allow_patterns=kwargs["allow_patterns"], ignore_patterns=kwargs["ignore_patterns"]
        )
        cache = Path(kwargs["cache_dir"] or self.root / "default-cache")
        revision = kwargs["revision"] or "main"
        folder = (
            Path(kwargs["local_dir"])
            if kwargs["local_dir"]
            else cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / revision
        )
        for name in chosen:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(files[name])
        return str(folder)


NOT_READ = (
    "flax_model.msgpack",
    "tf_model.h5",
    "rust_model.ot",
    "64-8bits.tflite",
    "README.md",
    "onnx/model.safetensors",
)


def _hub_repo(tmp_path: Path, *, bin_weights: bool = False) -> tuple[dict[str, bytes], torch.nn.Module]:
    """A tiny GPT-2 as a hub repo: what gptkit saves, a generation config and a chat template, other frameworks'
    weights and a subfolder gptkit never reads; with bin_weights, PyTorch's pickle instead of safetensors."""
    from safetensors.torch import load_file

    from gptkit.text.tokenizer import Tokenizer

    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("gpt2-tiny", initializer_range=0.1)).eval()
    folder = tmp_path / "repo-source"
    model.save_pretrained(folder, tokenizer=Tokenizer.from_pretrained("gpt2"))
    if bin_weights:
        torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    files["generation_config.json"] = b'{"bos_token_id": 50256, "eos_token_id": 50256}'
    files["chat_template.jinja"] = b"{% for m in messages %}{{ m.content }}{% endfor %}"
    return files | {name: b"not for gptkit" for name in NOT_READ}, model


def test_download_fetches_only_what_gptkit_reads_and_the_name_then_loads(tmp_path, monkeypatch, capsys) -> None:
    import huggingface_hub

    import gptkit

    repo, model = _hub_repo(tmp_path)
    hub = FakeHub(tmp_path, {"someone/tiny-gpt2": repo})
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    cache = tmp_path / "cache"
    assert cli(["download", "someone/tiny-gpt2", "--cache-dir", str(cache), "--revision", "v1"]) == 0
    [call] = hub.calls
    assert call["repo_id"] == "someone/tiny-gpt2" and call["revision"] == "v1" and call["cache_dir"] == str(cache)
    assert call["local_dir"] is None and call["ignore_patterns"] == ["*/*"]  # subfolders: other frameworks' exports
    folder = cache / "models--someone--tiny-gpt2" / "snapshots" / "v1"
    wanted = sorted(name for name in repo if name not in NOT_READ)
    assert sorted(p.name for p in folder.iterdir()) == wanted and "model.safetensors" in wanted
    out = capsys.readouterr().out
    assert f"someone/tiny-gpt2 at v1: a gpt2 model, {len(wanted)} files" in out and str(folder) in out
    assert f"Works offline now: gptkit generate --model {folder}" in out  # a revision: its own folder
    ids = torch.tensor([[15496, 11, 314, 1101]])
    with torch.no_grad():
        assert torch.equal(gptkit.load(folder).model(ids).logits, model(ids).logits)
        # a name is resolved through the same download: the default cache, the main revision
        assert torch.equal(gptkit.load("someone/tiny-gpt2").model(ids).logits, model(ids).logits)
    assert hub.calls[-1]["revision"] is None and hub.calls[-1]["allow_patterns"] == call["allow_patterns"]
    assert cli(["download", "someone/tiny-gpt2", "--cache-dir", str(cache)]) == 0
    expected = f"HF_HUB_OFFLINE=1 HF_HUB_CACHE={cache} gptkit generate --model someone/tiny-gpt2"
    assert expected in capsys.readouterr().out


def test_download_takes_pytorch_bin_weights_only_where_a_repo_has_no_safetensors(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    import gptkit

    repo, model = _hub_repo(tmp_path, bin_weights=True)
    hub = FakeHub(tmp_path, {"someone/old-gpt2": repo})
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    local = tmp_path / "here"
    assert cli(["download", "someone/old-gpt2", "--local-dir", str(local)]) == 0
    first, second = hub.calls
    assert "*.safetensors" in first["allow_patterns"] and not any(".bin" in p for p in first["allow_patterns"])
    assert "pytorch_model*.bin" in second["allow_patterns"] and second["local_dir"] == str(local)
    assert sorted(p.name for p in local.iterdir()) == sorted(name for name in repo if name not in NOT_READ)
    assert f"gptkit generate --model {local}" in capsys.readouterr().out
    ids = torch.tensor([[15496, 11, 314, 1101]])
    with torch.no_grad():
        assert torch.equal(gptkit.load(local).model(ids).logits, model(ids).logits)


def test_download_errors_are_one_line_and_say_what_to_do(tmp_path, monkeypatch, capsys) -> None:
    import huggingface_hub
    from huggingface_hub.utils import LocalEntryNotFoundError

    repo, _ = _hub_repo(tmp_path)
    bert = {**repo, "config.json": b'{"model_type": "bert"}'}
    monkeypatch.setattr(huggingface_hub, "snapshot_download", FakeHub(tmp_path, {"someone/bert": bert}))

    def errors(*argv: str) -> str:
        assert cli(["download", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        return err

    assert "'nobody/nothing': no such model on the Hugging Face hub" in errors("nobody/nothing")
    assert "model_type 'bert' is not supported; gptkit loads 'gpt2' and 'openai-gpt'" in errors("someone/bert")

    def offline(repo_id: str, **kwargs) -> str:
        raise LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder ...\nPlease check ...")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    err = errors("gpt2")
    assert "'openai-community/gpt2' is not in the local Hugging Face cache and the hub cannot be reached" in err
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    assert "needs huggingface_hub: pip install 'gptkit[hf]'" in errors("gpt2")


def test_cli_convert_and_info(tmp_path, capsys) -> None:
    source = _hf_dir(tmp_path)
    assert cli(["convert", str(source), str(tmp_path / "out"), "--dtype", "bfloat16"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert cli(["info", str(tmp_path / "out"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == hf_model("gpt2", SHAPES["gpt2-small"][1]).num_parameters()
    assert info["dtype"] == "bfloat16" and info["family"] == "gpt2" and "model.safetensors" in info["files"]
    assert cli(["info", str(tmp_path / "nothing-here")]) == 2
    assert "error:" in capsys.readouterr().err


def test_import_is_light_and_help_explains_itself() -> None:
    code = "import gptkit, sys; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    out = subprocess.run([sys.executable, "-m", "gptkit", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "convert" in out.stdout and "info" in out.stdout


def test_an_unreachable_hub_is_one_line_naming_the_model(monkeypatch) -> None:
    huggingface_hub = pytest.importorskip("huggingface_hub")

    def unreachable(repo_id: str, **kwargs: object) -> str:
        raise OSError("Got: ConnectError: [Errno -2] Name or service not known\nAn error happened while trying...")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(ModelNotFoundError) as caught:
        GPT.from_pretrained("someone/some-model")
    message = str(caught.value)
    assert "'someone/some-model' is neither a local directory" in message and "Name or service not known" in message
    assert "\n" not in message and "An error happened" not in message
