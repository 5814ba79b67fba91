"""Task fine-tuning on CPU, gptkit against Hugging Face transformers' Trainer; prints one JSON object.

Tasks (data from ../shared/data; a task whose files are absent is skipped with a note):

* sst2: sentence classification, SST-2 train.tsv (67,349 rows) -> dev.tsv (872), one epoch; dev accuracy.
* conll: token tagging, CoNLL-2003 NER train.txt -> valid.txt, a fixed budget of --conll-steps steps (a
  fraction of the 439-step epoch); entity F1 as conlleval counts it (gptkit.tasks.metrics.entity_scores for both).

Same start, same recipe. One random GPT-2-shaped model (4 layers, 4 heads, 256 wide, 128 positions, GPT-2
vocabulary, default dropouts 0.1) is built by transformers with a fixed seed and saved with `save_pretrained`
beside gptkit's GPT-2 tokenizer; both engines load that folder and add their task head (seeded, N(0, 0.02)).
Both read the same examples (gptkit's readers parse the files for both), truncate to max_length 128 tokens,
pad each batch to its longest row with the eos id, train with batch 32, fused AdamW (betas 0.9/0.999, eps
1e-8, weight decay on matrices and embeddings, not on biases and LayerNorms), gradients clipped to norm
1.0, and a linear schedule: warmup, then decay to 0 at the last step. (gptkit's warmup is lr*(s+1)/(w+1),
Trainer's lr*s/w: one step apart.) Batches group examples of similar length in both (gptkit's default,
Trainer's train_sampling_strategy="group_by_length": shuffled megabatches of 50 batches, each sorted by
length), or in neither with --group-by-length off; each engine shuffles with its own seeded generator, and
both predict the dev set in file order. Head initialisation, dropout masks and batch order therefore differ:
a single 300-step CoNLL run from random weights moves by a few F1 points with them.

* gptkit: `gptkit.finetune.finetune(TaskConfig, TrainConfig(init_from="pretrained"))`, the real entry point.
* transformers: GPT2ForSequenceClassification / GPT2ForTokenClassification `.from_pretrained(folder)`, the
  standard recipes (DataCollatorWithPadding; for tagging, a tokenizer with add_prefix_space=True called with
  is_split_into_words=True, the label on each word's first sub-token, DataCollatorForTokenClassification;
  gptkit's encoding gives the same ids: words joined by spaces, with a space before the first word too)
  and `Trainer` with use_cpu=True, report_to="none", no evaluation or saving during training.

What each timed span contains (all wall-clock, time.perf_counter):

* train_seconds - the optimizer steps. gptkit: the `elapsed` of its last step record (measured by the loop
  from just before its first step). transformers: the `trainer.train()` call (which also builds its
  optimizer and dataloader, well under a second).
* eval_seconds - predicting the dev set and scoring it. gptkit: from its last step record to its evaluation
  record. transformers: `trainer.predict(dev)` plus the same scoring function.
* seconds = train_seconds + eval_seconds: the compared, like-for-like figure (time_ratio = gptkit / transformers).
* prep_seconds - reading, tokenizing, loading the model (and for transformers building the Trainer).
  save_seconds - gptkit only: the checkpoint finetune() writes after its evaluation (model, optimizer state,
  curves.png); transformers saves nothing. end_to_end_seconds is the sum; finetune_reported_seconds is
  finetune()'s own TrainResult.seconds (steps + evaluation + save).

Targets per task: metric within 1 point of transformers' (|gap| <= 1, accuracy or entity F1, in points) and
time_ratio <= 0.8, and the same for the training steps alone (train_time_ratio). With --seeds A,B,C every seed is a
full comparison (both engines train with that seed from the same start model); the targets are judged on the mean
metric over the seeds and the summed times, and the per-seed spread (std) says how far one run can be trusted. Each
engine runs in its own subprocess with --threads torch threads, started after waiting for idle CPUs; the load
average and each run's CPU share are in the output. On a shared machine, distrust runs whose cpu_share is well
below 1 or whose load average exceeds the thread count.

    python benchmarks/bench_finetune.py [--tasks sst2,conll] [--conll-steps 300] [--seeds 1337,1,2] [--quick]
                                        [--group-by-length on|off] [--engines gptkit,transformers]

Each worker records the git HEAD and any uncommitted src/ files it imported (gptkit_source).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from machine import SHARED, cpu_seconds, load_average, machine_info, source_state, wait_for_idle

SEED = 1337
DATA = SHARED / "data"
SHAPE = {"n_layer": 4, "n_head": 4, "n_embd": 256, "n_positions": 128, "vocab_size": 50257}
BATCH, BETAS, EPS, GRAD_CLIP, LOG_EVERY = 32, (0.9, 0.999), 1e-8, 1.0, 50
TARGETS = {"time_ratio_max": 0.8, "metric_gap_points_max": 1.0}
QUICK = {"sst2": (2000, 200), "conll": (500, 200)}  # --quick: (train, dev) rows / sentences


@dataclass(frozen=True)
class Bench:
    """One task's recipe, the same for both engines."""

    name: str
    task: str  # gptkit's task name
    train_file: str
    eval_file: str
    metric: str
    lr: float
    warmup_steps: int
    weight_decay: float = 0.01
    max_length: int = 128
    epochs: float | None = 1.0  # None: a fixed number of steps


BENCHES = {
    "sst2": Bench("sst2", "classify", "sst2/train.tsv", "sst2/dev.tsv", "accuracy", lr=5e-4, warmup_steps=100),
    "conll": Bench(
        "conll", "tag", "conll2003/train.txt", "conll2003/valid.txt", "f1", lr=1e-3, warmup_steps=30, epochs=None
    ),
}


def log(message: str) -> None:
    print(f"[bench_finetune] {message}", file=sys.stderr, flush=True)


# -- data and the shared starting point -----------------------------------------------------------


def subset_tsv(source: Path, target: Path, rows: int) -> Path:
    """The header and the first `rows` rows of a TSV file."""
    with open(source, encoding="utf-8") as fh:
        lines = [line for _, line in zip(range(rows + 1), fh, strict=False)]
    target.write_text("".join(lines), encoding="utf-8")
    return target


def subset_conll(source: Path, target: Path, sentences: int) -> Path:
    """The first `sentences` blank-line-separated blocks of a CoNLL file (-DOCSTART- blocks count too)."""
    blocks = source.read_text(encoding="utf-8").split("\n\n")
    target.write_text("\n\n".join(blocks[:sentences]) + "\n", encoding="utf-8")
    return target


def task_files(bench: Bench, root: Path, quick: bool) -> tuple[Path, Path] | str:
    """(train, eval) files of a task, cut down under --quick; a reason string when the data is absent."""
    train, dev = DATA / bench.train_file, DATA / bench.eval_file
    missing = [str(p) for p in (train, dev) if not p.is_file()]
    if missing:
        return f"data not found: {', '.join(missing)}"
    if not quick:
        return train, dev
    cut = subset_tsv if bench.task == "classify" else subset_conll
    n_train, n_dev = QUICK[bench.name]
    return (
        cut(train, root / f"{bench.name}-train{train.suffix}", n_train),
        cut(dev, root / f"{bench.name}-dev{dev.suffix}", n_dev),
    )


def make_initial_model(folder: Path) -> None:
    """The random GPT-2-shaped model both engines start from, with the GPT-2 tokenizer beside it."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from gptkit.text.tokenizer import Tokenizer

    torch.manual_seed(SEED)
    GPT2LMHeadModel(GPT2Config(**SHAPE)).save_pretrained(folder)
    Tokenizer.from_pretrained("gpt2").save_pretrained(folder)


# -- workers (one engine and task per subprocess) ----------------------------------------------------


def run_gptkit(
    bench: Bench, init: str, train_file: str, eval_file: str, run_dir: str, steps: int | None, grouped: bool, seed: int
) -> dict[str, Any]:
    """`gptkit.finetune.finetune`; its spans come from the times its events arrive."""
    import torch

    from gptkit.tasks.config import TaskConfig
    from gptkit.tasks.finetune import finetune
    from gptkit.training.config import TrainConfig
    from gptkit.training.events import EvalEvent, StepEvent

    marks: dict[str, tuple[float, float]] = {}  # name -> (wall, cpu)
    step_elapsed: dict[str, float] = {}

    def on_event(event: Any) -> None:
        now = (time.perf_counter(), cpu_seconds())
        if isinstance(event, EvalEvent):
            marks["eval_end"] = now
        elif isinstance(event, StepEvent) and (event.step % LOG_EVERY == 0 or event.step == event.max_steps):
            marks.setdefault("first_log", now)
            marks["last_step"], step_elapsed["elapsed"] = now, event.elapsed
            step_elapsed["loss"] = event.loss
            log(f"gptkit {bench.name} step {event.step} loss {event.loss:.4f} ({event.elapsed:.1f} s)")

    task = TaskConfig(
        task=bench.task,
        train_file=train_file,
        eval_file=eval_file,
        max_length=bench.max_length,
        epochs=bench.epochs if steps is None else None,
        group_by_length=grouped,
    )
    train = TrainConfig(
        out_dir=run_dir,
        init_from="pretrained",
        model=init,
        batch_size=BATCH,
        max_steps=steps or 1,
        lr=bench.lr,
        min_lr=0.0,
        warmup_steps=bench.warmup_steps,
        schedule="linear",
        weight_decay=bench.weight_decay,
        beta1=BETAS[0],
        beta2=BETAS[1],
        eps=EPS,
        grad_clip=GRAD_CLIP,
        eval_interval=0,
        log_interval=LOG_EVERY,
        sample_tokens=0,
        keep_last=1,
        progress=False,
        device="cpu",
        seed=seed,
        dtype=os.environ.get("BENCH_GPTKIT_DTYPE", "float32"),  # --gptkit-dtype, passed to this worker
    )
    torch.manual_seed(seed)  # the head's initialisation and the dropout masks
    t0 = time.perf_counter()
    result = finetune(task, train, on_event=on_event)
    t_end = time.perf_counter()
    train_seconds = step_elapsed["elapsed"]
    loop_start = marks["last_step"][0] - train_seconds
    (first_wall, first_cpu), (eval_wall, eval_cpu) = marks["first_log"], marks["eval_end"]
    return {
        "prep_seconds": loop_start - t0,
        "train_seconds": train_seconds,
        "eval_seconds": eval_wall - marks["last_step"][0],
        "save_seconds": t_end - eval_wall,
        "end_to_end_seconds": t_end - t0,
        "finetune_reported_seconds": result.train.seconds,
        "steps": result.train.step,
        "final_train_loss": step_elapsed["loss"],
        "metrics": result.metrics,
        "cpu_share": (eval_cpu - first_cpu) / max(eval_wall - first_wall, 1e-9),
    }


def _hf_classify_rows(bench: Bench, tokenizer: Any, path: str, labels: Any) -> tuple[list[dict[str, Any]], Any]:
    from gptkit.tasks.data import read_labelled

    examples = read_labelled(path, label_map=labels).examples
    enc = tokenizer([ex.text for ex in examples], truncation=True, max_length=bench.max_length)
    rows = [
        {"input_ids": ids, "attention_mask": mask, "labels": labels.encode(ex.label)}
        for ids, mask, ex in zip(enc["input_ids"], enc["attention_mask"], examples, strict=True)
    ]
    return rows, examples


def _hf_tag_rows(bench: Bench, tokenizer: Any, path: str, labels: Any) -> tuple[list[dict[str, Any]], Any]:
    """transformers' token-classification recipe: the label on each word's first sub-token, -100 elsewhere."""
    from gptkit.tasks.tagging import read_conll

    examples = read_conll(path, label_map=labels).examples
    enc = tokenizer(
        [s.tokens for s in examples], is_split_into_words=True, truncation=True, max_length=bench.max_length
    )
    rows = []
    for i, sentence in enumerate(examples):
        tags, previous = [], None
        for word in enc.word_ids(i):
            tags.append(-100 if word is None or word == previous else labels.encode(sentence.tags[word]))
            previous = word
        rows.append({"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "labels": tags})
    return rows, examples


def _hf_score(bench: Bench, predictions: Any, label_ids: Any, examples: Any, labels: Any) -> dict[str, float]:
    """The same scores gptkit computes: accuracy (classify), entity P/R/F1 and token accuracy (tag)."""
    from gptkit.tasks import metrics

    predicted = predictions.argmax(-1)
    if bench.task == "classify":
        return metrics.classification_scores(predicted.tolist(), label_ids.tolist())
    tagged = []
    for sentence, pred, gold in zip(examples, predicted, label_ids, strict=True):
        firsts = [labels.labels[int(p)] for p, g in zip(pred, gold, strict=True) if g != -100]
        tagged.append(firsts + ["O"] * (len(sentence.tokens) - len(firsts)))  # words cut by truncation
    scores = metrics.entity_scores(tagged, [s.tags for s in examples])
    flat = [(p, g) for ps, s in zip(tagged, examples, strict=True) for p, g in zip(ps, s.tags, strict=True)]
    return {
        "precision": scores["precision"],
        "recall": scores["recall"],
        "f1": scores["f1"],
        "accuracy": metrics.accuracy([p for p, _ in flat], [g for _, g in flat]),
    }


def run_transformers(
    bench: Bench, init: str, train_file: str, eval_file: str, run_dir: str, steps: int | None, grouped: bool, seed: int
) -> dict[str, Any]:
    """transformers' Trainer with its standard collators, from the same folder and examples."""
    import torch
    from transformers import (
        AutoTokenizer,
        DataCollatorForTokenClassification,
        DataCollatorWithPadding,
        GPT2ForSequenceClassification,
        GPT2ForTokenClassification,
        Trainer,
        TrainingArguments,
    )

    from gptkit.tasks.data import LabelledSet, LabelMap, read_labelled
    from gptkit.tasks.tagging import TaggedSet, read_conll

    t0 = time.perf_counter()
    tagging = bench.task == "tag"
    tokenizer = AutoTokenizer.from_pretrained(init, add_prefix_space=tagging)
    tokenizer.pad_token = tokenizer.eos_token
    if tagging:
        labels = LabelMap.from_data(TaggedSet("train", read_conll(train_file).examples))
        make_rows, model_class = _hf_tag_rows, GPT2ForTokenClassification
        collator = DataCollatorForTokenClassification(tokenizer)
    else:
        labels = LabelMap.from_data(LabelledSet("train", read_labelled(train_file).examples, task="single"))
        make_rows, model_class = _hf_classify_rows, GPT2ForSequenceClassification
        collator = DataCollatorWithPadding(tokenizer)
    train_rows, _ = make_rows(bench, tokenizer, train_file, labels)
    eval_rows, eval_examples = make_rows(bench, tokenizer, eval_file, labels)
    torch.manual_seed(seed)  # the head's initialisation
    model = model_class.from_pretrained(
        init,
        num_labels=len(labels),
        pad_token_id=tokenizer.eos_token_id,
        id2label=labels.id2label,
        label2id=labels.label2id,
    )
    args = TrainingArguments(
        output_dir=run_dir,
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=BATCH,
        learning_rate=bench.lr,
        weight_decay=bench.weight_decay,
        adam_beta1=BETAS[0],
        adam_beta2=BETAS[1],
        adam_epsilon=EPS,
        max_grad_norm=GRAD_CLIP,
        lr_scheduler_type="linear",
        warmup_steps=bench.warmup_steps,
        num_train_epochs=bench.epochs or 1.0,
        max_steps=steps or -1,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=LOG_EVERY,
        report_to="none",
        use_cpu=True,
        seed=seed,
        disable_tqdm=True,
        train_sampling_strategy="group_by_length" if grouped else "random",
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_rows, data_collator=collator)
    t1, c1 = time.perf_counter(), cpu_seconds()
    trained = trainer.train()
    # Trainer would length-group the dev set too (and return predictions in that order); gptkit predicts in
    # file order, so transformers does here as well.
    args.train_sampling_strategy = "random"
    t2 = time.perf_counter()
    out = trainer.predict(eval_rows)
    scores = _hf_score(bench, out.predictions, out.label_ids, eval_examples, labels)
    t3, c3 = time.perf_counter(), cpu_seconds()
    return {
        "prep_seconds": t1 - t0,
        "train_seconds": t2 - t1,
        "eval_seconds": t3 - t2,
        "end_to_end_seconds": t3 - t0,
        "trainer_reported_train_seconds": trained.metrics.get("train_runtime"),
        "steps": trainer.state.global_step,
        "final_train_loss": next((r["loss"] for r in reversed(trainer.state.log_history) if "loss" in r), None),
        "mean_train_loss": trained.training_loss,
        "metrics": scores,
        "cpu_share": (c3 - c1) / max(t3 - t1, 1e-9),
        "optimizer": str(args.optim),
        "attn_implementation": model.config._attn_implementation,
    }


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    run = run_gptkit if args.worker == "gptkit" else run_transformers
    result = run(
        BENCHES[args.task],
        args.init,
        args.train_file,
        args.eval_file,
        args.run_dir,
        args.steps,
        args.group_by_length == "on",
        args.seed,
    )
    result["gptkit_source"] = source_state()  # src/ may change while a long run goes on: say what each run saw
    result["cpu_share"] /= torch.get_num_threads()  # of all the threads it was given
    result["threads"] = torch.get_num_threads()
    Path(args.result).write_text(json.dumps(result), encoding="utf-8")


# -- the parent: one subprocess per (task, engine) --------------------------------------------------


def run_case(
    engine: str,
    bench: Bench,
    files: tuple[Path, Path],
    init: Path,
    root: Path,
    steps: int | None,
    threads: int,
    idle_wait: float,
    group_by_length: str,
    seed: int,
) -> dict[str, Any]:
    result_file = root / f"{bench.name}-{engine}-{seed}.json"
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        engine,
        "--task",
        bench.name,
        "--init",
        str(init),
        "--train-file",
        str(files[0]),
        "--eval-file",
        str(files[1]),
        "--run-dir",
        str(root / f"run-{bench.name}-{engine}-{seed}"),
        "--result",
        str(result_file),
        "--threads",
        str(threads),
        "--group-by-length",
        group_by_length,
        "--seed",
        str(seed),
    ]
    if steps is not None:
        cmd += ["--steps", str(steps)]
    waited = wait_for_idle(idle_wait)
    load = load_average()[0]
    log(f"{bench.name} / {engine} / seed {seed} (waited {waited:.0f} s for idle CPUs, load {load:.2f})")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=sys.stderr, check=False)  # the child's chatter stays off our stdout
    if proc.returncode != 0:
        raise SystemExit(f"{bench.name} / {engine} failed (exit {proc.returncode})")
    result = json.loads(result_file.read_text(encoding="utf-8"))
    scores = result.pop("metrics")
    rounded = {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}
    return {
        "seconds": round(result["train_seconds"] + result["eval_seconds"], 2),
        bench.metric: round(scores[bench.metric], 4),
        **rounded,
        "scores": {k: round(v, 4) for k, v in scores.items() if isinstance(v, float)},
        "load_average_before": round(load, 2),
        "waited_for_idle_seconds": round(waited, 1),
        "subprocess_wall_seconds": round(time.perf_counter() - t0, 1),
    }


def compare(bench: Bench, gptkit: dict[str, Any], hf: dict[str, Any], steps: int | None) -> dict[str, Any]:
    ratio = gptkit["seconds"] / hf["seconds"]
    gap = 100 * (gptkit[bench.metric] - hf[bench.metric])
    return {
        "budget": f"{bench.epochs} epoch" if steps is None else f"{steps} steps",
        "gptkit": gptkit,
        "transformers": hf,
        "time_ratio": round(ratio, 3),
        "train_time_ratio": round(gptkit["train_seconds"] / hf["train_seconds"], 3),
        "end_to_end_ratio": round(gptkit["end_to_end_seconds"] / hf["end_to_end_seconds"], 3),
        "metric": bench.metric,
        "metric_gap_points": round(gap, 2),
        "targets": TARGETS,
        "met": {"time": ratio <= TARGETS["time_ratio_max"], "metric": abs(gap) <= TARGETS["metric_gap_points_max"]},
    }


def over_seeds(bench: Bench, seeds: list[int], per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-seed comparisons and what the targets are judged on: mean metrics, summed times."""
    import statistics

    def metric(engine: str) -> list[float]:
        return [run[engine][bench.metric] for run in per_seed]

    def spread(values: list[float]) -> float:
        return round(statistics.stdev(values), 4) if len(values) > 1 else 0.0

    def summed_ratio(span: str) -> float:
        return sum(r["gptkit"][span] for r in per_seed) / sum(r["transformers"][span] for r in per_seed)

    ratio, train_ratio = summed_ratio("seconds"), summed_ratio("train_seconds")
    gap = 100 * (statistics.fmean(metric("gptkit")) - statistics.fmean(metric("transformers")))
    return {
        "budget": per_seed[0]["budget"],
        "seeds": seeds,
        "metric": bench.metric,
        "gptkit_mean": round(statistics.fmean(metric("gptkit")), 4),
        "gptkit_std": spread(metric("gptkit")),
        "transformers_mean": round(statistics.fmean(metric("transformers")), 4),
        "transformers_std": spread(metric("transformers")),
        "time_ratio": round(ratio, 3),
        "train_time_ratio": round(train_ratio, 3),
        "metric_gap_points": round(gap, 2),
        "targets": TARGETS,
        "met": {
            "time": ratio <= TARGETS["time_ratio_max"],
            "train_time": train_ratio <= TARGETS["time_ratio_max"],
            "metric": abs(gap) <= TARGETS["metric_gap_points_max"],
        },
        "per_seed": per_seed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="sst2,conll", help="comma-separated: sst2, conll")
    parser.add_argument("--conll-steps", type=int, default=300, help="CoNLL training steps (the epoch is 439)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads per engine")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 2,000 SST-2 / 500 CoNLL training rows, 200 dev rows, <= 16 CoNLL steps",
    )
    parser.add_argument(
        "--engines",
        default="gptkit,transformers",
        help="which to run (one alone: its figures without the comparison, e.g. to profile)",
    )
    parser.add_argument(
        "--group-by-length",
        choices=["on", "off"],
        default="on",
        help="both engines batch examples of similar length (gptkit's default; Trainer's "
        'train_sampling_strategy="group_by_length") or draw batches at random',
    )
    parser.add_argument(
        "--gptkit-dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="gptkit's autocast dtype (transformers' Trainer stays at its float32 default)",
    )
    parser.add_argument(
        "--seeds",
        default=str(SEED),
        help="comma-separated training seeds (head initialisation, dropout, batch order), each run by "
        "both engines from the same start; targets apply to the means over seeds",
    )
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=None,
        help="before each run, wait up to this many seconds for idle CPUs (default 60; 0 with --quick)",
    )
    # internal: one (task, engine) run in this process
    parser.add_argument("--worker", choices=["gptkit", "transformers"], help=argparse.SUPPRESS)
    for name in ("--task", "--init", "--train-file", "--eval-file", "--run-dir", "--result"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=SEED, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if unknown := [t for t in tasks if t not in BENCHES]:
        parser.error(f"unknown task(s) {unknown}; choose from {', '.join(BENCHES)}")
    if args.conll_steps < 1 or args.threads < 1:
        parser.error("--conll-steps and --threads must be >= 1")
    engines = [e for e in ("gptkit", "transformers") if e in args.engines.split(",")]
    if not engines:
        parser.error("--engines: give gptkit, transformers or both")
    idle_wait = args.idle_wait if args.idle_wait is not None else (0.0 if args.quick else 60.0)
    os.environ["BENCH_GPTKIT_DTYPE"] = args.gptkit_dtype  # inherited by the gptkit worker process
    conll_steps = min(args.conll_steps, 16) if args.quick else args.conll_steps
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--seeds: comma-separated integers, got {args.seeds!r}")
    if not seeds:
        parser.error("--seeds: give at least one seed")

    import torch
    import transformers

    t_start, machine, source_start = time.perf_counter(), machine_info(), source_state()
    report: dict[str, Any] = {
        "benchmark": "task fine-tuning on CPU, gptkit.tasks.finetune vs transformers Trainer",
        "setup": {
            "model": {**SHAPE, "dropout": 0.1, "init": "random GPT2LMHeadModel, save_pretrained"},
            "batch": BATCH,
            "optimizer": {
                "name": "AdamW (fused)",
                "betas": BETAS,
                "eps": EPS,
                "grad_clip": GRAD_CLIP,
                "schedule": "linear warmup, linear decay to 0",
            },
            "tasks": {name: asdict(BENCHES[name]) for name in tasks},
            "model_seed": SEED,
            "seeds": seeds,
            "threads": args.threads,
            "group_by_length": args.group_by_length,
            "quick": args.quick,
            "gptkit_dtype": args.gptkit_dtype,
        },
        "tasks": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench_finetune-") as tmp:
        root = Path(tmp)
        init = root / "init"
        make_initial_model(init)
        for name in tasks:
            bench = BENCHES[name]
            files = task_files(bench, root, args.quick)
            if isinstance(files, str):
                log(f"{name}: skipped ({files})")
                report["tasks"][name] = {"skipped": files}
                continue
            steps = conll_steps if bench.epochs is None else None
            per_seed = []
            for seed in seeds:
                runs = {
                    engine: run_case(
                        engine, bench, files, init, root, steps, args.threads, idle_wait, args.group_by_length, seed
                    )
                    for engine in engines
                }
                per_seed.append(compare(bench, runs["gptkit"], runs["transformers"], steps) if len(runs) == 2 else runs)
            report["tasks"][name] = over_seeds(bench, seeds, per_seed) if len(engines) == 2 else per_seed
    shared = [
        f"{name}/{engine}/seed {seed}"
        for name, entry in report["tasks"].items()
        if "skipped" not in entry
        for seed, run in zip(seeds, entry["per_seed"] if isinstance(entry, dict) else entry, strict=True)
        for engine in engines
        if run[engine]["cpu_share"] < 0.8
    ]
    if shared:
        report["warning"] = (
            f"other processes took CPU during {', '.join(shared)} (cpu_share < 0.8): "
            "their times are high; rerun on an idle machine"
        )
    import gptkit

    report["versions"] = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
        "gptkit_from": str(Path(gptkit.__file__).parent),
        "source_at_start": source_start,
        "source_at_end": source_state(),
    }
    report["machine"] = {**machine, "load_average_end": load_average()}
    report["total_seconds"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
