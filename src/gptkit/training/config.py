"""`TrainConfig`: every setting of a training run, built from flags or a JSON/YAML file (no torch)."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gptkit.errors import ConfigError
from gptkit.models.config import GPTConfig, LoRAConfig

FLAT_LORA_KEYS = ("lora_r", "lora_alpha", "lora_dropout", "lora_targets")  # the CLI's flags, older config files
RUN_CONFIG_FILE = "train_config.json"  # a run directory's record of its TrainConfig
QUICKSTART_DIR = "runs/shakespeare-char"  # `gptkit quickstart`'s run (and model) directory; `gptkit serve` finds it
# What a resumed run may change: its length, learning-rate schedule and clipping (applied at each step) and its
# bookkeeping. The rest fixes the model, its batches or its optimizer state (AdamW's betas, eps and weight decay
# come back with that state), so a resume that asks for other values is refused rather than half-applied.
RESUMABLE = frozenset(
    {
        "data",  # may have moved; its contents are checked against the run's fingerprint
        "out_dir",
        "init_from",
        "overwrite",
        "max_steps",
        "lr",
        "min_lr",
        "warmup_steps",
        "schedule",
        "decay_steps",
        "grad_clip",
        "compile",
        "device",
        "eval_interval",
        "eval_batches",
        "log_interval",
        "sample_tokens",
        "sample_prompt",
        "save_interval",
        "keep_last",
        "progress",
        "onednn",
        "keep_freed_memory",
        "early_stopping_patience",  # the count of evaluations without improvement is kept; more patience continues
        "report_to",
    }
)
REPORTERS = ("tensorboard", "wandb")  # where TrainConfig.report_to may send metrics.jsonl's records


@dataclass(frozen=True)
class TrainConfig:
    """Everything `gptkit train` does, in one place. Build it from flags, or from a JSON/YAML file.

    It lives here, beside GPTConfig, so that building the CLI does not import torch.
    """

    data: str | None = None  # language modelling: a directory written by `gptkit prepare` (fine-tuning: TaskConfig)
    out_dir: str = "runs/gptkit"
    overwrite: bool = False  # out_dir holds an earlier run: remove its files and start afresh (else: refused)
    init_from: Literal["scratch", "pretrained", "resume"] = "scratch"
    model: str = "gpt2-tiny"  # scratch: a GPTConfig preset; pretrained: a hub name or checkpoint folder
    model_overrides: dict[str, Any] = field(default_factory=dict)  # scratch: GPTConfig fields
    block_size: int = 256
    batch_size: int = 12  # sequences per micro-batch per process
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int = 2000
    lr: float = 6e-4
    min_lr: float | None = None  # None: lr / 10
    warmup_steps: int = 100
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    decay_steps: int | None = None  # None: max_steps
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0: off
    decay_embeddings: bool = True
    dropout: float | None = None  # overrides the model's three dropout rates
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # autocast dtype; weights stay float32
    compile: bool = False
    fsdp: bool = False  # shard parameters, gradients and optimizer state across processes (torchrun)
    device: str = "auto"
    eval_interval: int = 250  # 0: only at the end
    eval_batches: int = 20
    log_interval: int = 10
    sample_tokens: int = 200  # generated at each evaluation (0: none)
    sample_prompt: str = "\n"
    save_interval: int | None = None  # None: at each evaluation
    keep_last: int = 2
    best_metric: str = "val_loss"  # the evaluation metric whose best checkpoint is best/ (loss: lower; F1: higher)
    early_stopping_patience: int = 0  # stop after this many evaluations in a row that did not improve it (0: never)
    report_to: str = "none"  # also send metrics.jsonl's records to tensorboard, wandb, or both (comma-separated)
    seed: int = 1337
    progress: bool = True  # the CLI draws a progress bar from the run's events (library calls print nothing)
    onednn: bool = True  # CPU: fp32 Linear layers through oneDNN where it pays (AVX-512; kernels.use_onednn)
    keep_freed_memory: bool = True  # CPU: glibc keeps freed large blocks during the run (kernels.keep_freed_memory)
    trainable: str = "auto"  # all, lora, head, last:N (the last N blocks and the head); auto: lora if lora else all
    lora: LoRAConfig | None = None  # adapters to add (saved in peft's format); a mapping of LoRAConfig fields is read

    def __post_init__(self) -> None:
        if not re.fullmatch(r"auto|all|lora|head|last:[1-9][0-9]*", self.trainable):
            raise ConfigError(f"TrainConfig.trainable must be auto, all, lora, head or last:N, got {self.trainable!r}")
        if isinstance(self.lora, dict):
            unknown = sorted(set(self.lora) - {f.name for f in dataclasses.fields(LoRAConfig)})
            if unknown:
                raise ConfigError(f"TrainConfig.lora: unknown LoRAConfig field(s) {unknown}")
            object.__setattr__(self, "lora", LoRAConfig(**self.lora))
        if self.lora is not None and not isinstance(self.lora, LoRAConfig):
            raise ConfigError(
                f"TrainConfig.lora must be a LoRAConfig, a mapping of its fields, or None, got {self.lora!r}"
            )
        if self.lora is not None and self.fsdp:
            raise ConfigError("TrainConfig.lora: LoRA adapters train with DDP or on one device; drop --fsdp")
        if self.lora is None and self.trainable == "lora":
            raise ConfigError("TrainConfig.trainable is lora but TrainConfig.lora is None: give adapters to train")
        positive = ("block_size", "batch_size", "grad_accum", "max_steps", "eval_batches", "log_interval")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.lr <= 0 or (self.min_lr is not None and self.min_lr < 0):
            raise ConfigError(f"TrainConfig.lr must be > 0 and min_lr >= 0, got {self.lr!r}, {self.min_lr!r}")
        if self.init_from not in ("scratch", "pretrained", "resume"):
            raise ConfigError(f"TrainConfig.init_from must be scratch, pretrained or resume, got {self.init_from!r}")
        if self.overwrite and self.init_from == "resume":
            raise ConfigError("--overwrite starts afresh and --init-from resume continues the run: give one of them")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ConfigError(f"TrainConfig.schedule must be cosine, linear or constant, got {self.schedule!r}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"TrainConfig.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.early_stopping_patience < 0:
            raise ConfigError(f"TrainConfig.early_stopping_patience must be >= 0, got {self.early_stopping_patience!r}")
        if self.early_stopping_patience > 0 and self.eval_interval <= 0:
            raise ConfigError(
                "--early-stopping-patience counts evaluations, and --eval-interval 0 evaluates only at the end; "
                "give --eval-interval N"
            )
        reporter_names(self.report_to)

    @property
    def reporters(self) -> tuple[str, ...]:
        """report_to as names: () for none, else some of REPORTERS."""
        return reporter_names(self.report_to)

    @property
    def trainable_mode(self) -> str:
        """Which parameters train: `trainable`, with auto resolved (lora with adapters, else all)."""
        return ("lora" if self.lora is not None else "all") if self.trainable == "auto" else self.trainable

    @property
    def final_lr(self) -> float:
        return self.lr / 10 if self.min_lr is None else self.min_lr

    def lr_at(self, step: int) -> float:
        from gptkit.training.optim import lr_at

        return lr_at(
            step,
            lr=self.lr,
            min_lr=self.final_lr,
            warmup_steps=self.warmup_steps,
            decay_steps=self.decay_steps or self.max_steps,
            schedule=self.schedule,
        )

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_run(cls, run_dir: str | Path, **changes: Any) -> TrainConfig:
        """The settings to resume the run in run_dir: its recorded TrainConfig with `changes` (RESUMABLE fields only;
        a different value of any other field is refused, naming both values)."""
        path = Path(run_dir) / RUN_CONFIG_FILE
        if not path.is_file():
            raise ConfigError(f"{run_dir}: nothing to resume (no {RUN_CONFIG_FILE}); start it with --init-from scratch")
        saved = cls.from_file(path)
        check_resume_changes(saved, changes, run_dir)
        return saved.replace(**{**changes, "init_from": "resume", "overwrite": False})

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a JSON or YAML file of TrainConfig fields; keyword overrides win (the CLI's flags).

        LoRA is `lora: {r: 8, alpha: 16, ...}` (LoRAConfig's fields), or the older flat keys (see `fold_lora_keys`).
        """
        return cls(**{**read_config_file(path), **overrides})


def reporter_names(report_to: str) -> tuple[str, ...]:
    """`tensorboard,wandb` -> ("tensorboard", "wandb"); `none` -> (); a ConfigError naming the flag for others."""
    names = tuple(dict.fromkeys(n.strip() for n in report_to.split(",") if n.strip() not in ("", "none")))
    if unknown := [n for n in names if n not in REPORTERS]:
        raise ConfigError(
            f"--report-to {report_to}: unknown {', '.join(unknown)}; give none, {', '.join(REPORTERS)}, "
            "or several joined by commas"
        )
    return names


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The TrainConfig fields of a JSON or YAML file, with the flat LoRA keys folded (see `TrainConfig.from_file`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such training config file") from exc
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except ImportError as exc:
        raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or use JSON") from exc
    except Exception as exc:  # json.JSONDecodeError / yaml.YAMLError both carry the position
        raise ConfigError(f"{path}: cannot parse ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of TrainConfig fields")
    known = {f.name for f in dataclasses.fields(TrainConfig)} | set(FLAT_LORA_KEYS)
    unknown = sorted(set(data) - known)
    if unknown:
        shape = [k for k in unknown if k in {f.name for f in dataclasses.fields(GPTConfig)}]
        hint = f"; model fields go under model_overrides, e.g. model_overrides: {{{shape[0]}: ...}}" if shape else ""
        raise ConfigError(f"{path}: unknown TrainConfig field(s) {unknown}{hint}")
    _check_types(path, data)
    return fold_lora_keys(data)


def check_resume_changes(saved: TrainConfig, wanted: dict[str, Any], run_dir: str | Path) -> None:
    """Refuse values in `wanted` that differ from the run's `saved` settings in fields a resume may not change."""
    if isinstance(wanted.get("lora"), dict):
        wanted = {**wanted, "lora": LoRAConfig(**wanted["lora"])}
    clash = [
        f"--{k.replace('_', '-')} {v!r} (the run has {getattr(saved, k)!r})"
        for k, v in wanted.items()
        if k not in RESUMABLE and v != getattr(saved, k)
    ]
    if clash:
        raise ConfigError(
            f"{run_dir}: a resumed run keeps its settings, but "
            + ", ".join(clash)
            + " differ; drop them to continue the run, or start a new one (another --out-dir, or --overwrite)"
        )


def _check_types(path: Path, data: dict[str, Any]) -> None:
    """A config file's scalar fields must have their field's type (`block_size: "big"` is an error naming it)."""
    import types
    import typing

    hints = typing.get_type_hints(TrainConfig)
    kinds = {**hints, "lora_r": int, "lora_alpha": float, "lora_dropout": float, "lora_targets": Any}
    for name, value in data.items():
        hint = kinds[name]
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        options = typing.get_args(hint) if union else (hint,)
        if value is None and type(None) in options:
            continue
        plain = [o for o in options if o in (int, float, str, bool)]
        if typing.get_origin(hint) is typing.Literal or not plain:
            continue  # checked with a better message in __post_init__, or not a scalar (lora, model_overrides)
        ok = any(
            isinstance(value, bool) if o is bool else isinstance(value, o) and not isinstance(value, bool)
            for o in plain
        ) or (float in plain and isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            names = " or ".join(o.__name__ for o in plain) + (" or null" if type(None) in options else "")
            raise ConfigError(f"{path}: {name} must be {names}, got {value!r}")


def fold_lora_keys(values: dict[str, Any]) -> dict[str, Any]:
    """`values` with the flat LoRA settings (lora_r, lora_alpha, lora_dropout, lora_targets: the CLI's flags and
    older config files) folded into one `lora` LoRAConfig, with those settings' own defaults (alpha 16, c_attn).

    lora_r 0 or absent means no adapters; a `lora` given in `values` as well is an error.
    """
    flat = {k: values[k] for k in FLAT_LORA_KEYS if values.get(k) is not None}
    rest = {k: v for k, v in values.items() if k not in FLAT_LORA_KEYS}
    if not flat:
        return rest
    if rest.get("lora") is not None:
        raise ConfigError(f"give LoRA either as lora or as {', '.join(flat)}, not both")
    if not flat.get("lora_r"):
        return rest
    targets = tuple(t.strip() for t in str(flat.get("lora_targets", "c_attn")).split(",") if t.strip())
    lora = LoRAConfig(
        r=flat["lora_r"], alpha=flat.get("lora_alpha", 16.0), dropout=flat.get("lora_dropout", 0.0), targets=targets
    )
    return {**rest, "lora": lora}
