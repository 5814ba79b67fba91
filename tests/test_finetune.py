"""Task fine-tuning end to end: the one loop trains each task, checkpoints load in transformers and peft,
resume equals an uninterrupted run, and the completion-only loss weighs exactly the answer tokens."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from gptkit.models.gpt import IGNORE_INDEX
from gptkit.models.lora import LoRAConfig
from gptkit.tasks.bundle import load
from gptkit.tasks.config import TaskConfig
from gptkit.tasks.finetune import EpochSampler, base_model, collate, finetune
from gptkit.training.config import TrainConfig
from gptkit.training.events import StepEvent

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
    base = dict(
        data="",
        out_dir=str(tmp_path / name),
        model="gpt2-tiny",
        init_from="scratch",
        batch_size=8,
        lr=2e-3,
        warmup_steps=5,
        eval_interval=0,
        log_interval=5,
        progress=False,
        seed=3,
        device="cpu",
    )
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


def test_length_groups_give_batches_of_similar_length_and_still_cover_each_epoch():
    lengths = [(7 * i) % 23 for i in range(40)]
    sampler = EpochSampler(40, seed=1, lengths=lengths, group=20)
    epoch = [sampler.draw(5) for _ in range(8)]
    assert sorted(torch.cat(epoch).tolist()) == list(range(40))
    for group in (epoch[:4], epoch[4:]):  # each group of 20 is drawn longest first
        drawn = [lengths[i] for i in torch.cat(group).tolist()]
        assert drawn == sorted(drawn, reverse=True)


def test_collate_pads_ids_masks_and_token_labels():
    rows = [{"input_ids": [5, 6, 7], "labels": [1, -100, 2]}, {"input_ids": [8], "labels": [3]}]
    batch = collate(rows, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[1, -100, 2], [3, IGNORE_INDEX, IGNORE_INDEX]]
    choice = collate([{"input_ids": [[1, 2], [3]], "labels": 1}], pad_id=0)
    assert choice["input_ids"].shape == (1, 2, 2) and choice["labels"].tolist() == [1]


# -- classification -------------------------------------------------------------------------------


def sentiment_task(folder: Path, n_train: int, n_dev: int, epochs: float) -> TaskConfig:
    train_file = str(write_sentiment(folder / "train.tsv", n_train, 0))
    dev_file = str(write_sentiment(folder / "dev.tsv", n_dev, 1))
    return TaskConfig(task="classify", train_file=train_file, eval_file=dev_file, max_length=16, epochs=epochs)


@pytest.fixture(scope="module")
def sentiment_run(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("sentiment")
    return finetune(sentiment_task(tmp, 320, 100, epochs=4), small_train(tmp, "run"))


def test_classifier_learns_a_synthetic_task_far_above_chance(sentiment_run):
    assert sentiment_run.train.step == 4 * 320 // 8
    assert sentiment_run.metrics["accuracy"] >= 0.9, sentiment_run.metrics
    assert set(sentiment_run.metrics) >= {"val_loss", "accuracy", "f1", "precision", "recall"}


def test_classifier_checkpoint_loads_in_transformers_with_equal_logits(sentiment_run):
    transformers = pytest.importorskip("transformers")
    from gptkit.tasks.heads import load_task_model
    from gptkit.text.tokenizer import Tokenizer

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


def test_predict_reads_texts_and_rows_in_memory_as_it_reads_a_file(sentiment_run, tmp_path: Path):
    from gptkit.errors import DataError
    from gptkit.tasks.predict import predict

    bundle = load(sentiment_run.run_dir, merge_lora=False)
    texts = ["the plot was superb", "it was dull really", "a lovely film"]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    from_file = list(predict(bundle, path))
    assert [r["text"] for r in from_file] == texts
    assert list(predict(bundle, texts)) == from_file
    assert list(predict(bundle, [{"text": t} for t in texts])) == from_file
    with pytest.raises(DataError, match="inputs item 2: int is not an input of classify"):
        list(predict(bundle, ["fine", 3]))
    with pytest.raises(DataError, match="inputs item 1: .*text"):  # the task's reader checks a row as in a file
        list(predict(bundle, [{"review": "fine"}]))


def test_finetune_counts_tokens_not_examples_and_draws_nats_per_example(tmp_path: Path, monkeypatch):
    from gptkit.tasks.registry import TASK_TYPES
    from gptkit.text.tokenizer import Tokenizer
    from gptkit.training import loop

    drawn: list[str] = []
    monkeypatch.setattr(loop, "plot_curves", lambda run_dir, *, unit: drawn.append(unit))
    task = sentiment_task(tmp_path, 32, 8, epochs=1)
    events: list = []
    finetune(task, small_train(tmp_path, "run", batch_size=8), on_event=events.append)
    steps = [e for e in events if isinstance(e, StepEvent)]
    recipe = TASK_TYPES["classify"].recipe
    examples, _ = recipe.read(task, task.train_file, None)
    encoded = recipe.encode(task, examples, Tokenizer.from_pretrained("gpt2"), recipe.labels(task, examples))
    assert len(steps) == 4  # one epoch: every example once
    assert steps[-1].tokens == sum(len(row["input_ids"]) for row in encoded.rows) > len(examples)
    assert drawn == ["example"]


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
    train = small_train(tmp_path, "lora", max_steps=6, lora=LoRAConfig(r=4, alpha=16.0, targets=("c_attn", "c_fc")))
    result = finetune(task, train)
    run = result.run_dir
    assert (run / "adapter_config.json").is_file() and (run / "adapter_model.safetensors").is_file()
    base = transformers.AutoModelForSequenceClassification.from_pretrained(run)
    theirs = peft.PeftModel.from_pretrained(base, run).eval()
    ours = load(run, merge_lora=False).model
    ids = torch.tensor([[11, 42, 7, 300, 9]])
    with torch.no_grad():
        assert torch.allclose(ours(ids).logits, theirs(ids).logits, atol=1e-5)
    from gptkit.tasks.predict import save_merged

    merged = transformers.AutoModelForSequenceClassification.from_pretrained(
        save_merged(load(run, merge_lora=False), tmp_path / "merged")
    )
    with torch.no_grad():
        assert torch.allclose(merged.eval()(ids).logits, theirs(ids).logits, atol=1e-5)
    # only the adapters and the head were trained: the backbone still equals its initialisation
    initial, _ = base_model(train, task.max_length)
    backbone = {k: v for k, v in ours.state_dict().items() if k.startswith("transformer.") and "lora_" not in k}
    assert backbone.keys() == {"transformer." + k for k in initial.transformer.state_dict()}
    assert all(torch.equal(v, initial.state_dict()[k]) for k, v in backbone.items())
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in ours.state_dict().items() if "lora_B" in k)


# -- the other tasks, end to end ------------------------------------------------------------------


def write_conll(path: Path, n: int, seed: int) -> Path:
    """Sentences where a first name (B-PER), maybe followed by a surname (I-PER), is an entity; the rest is O."""
    rng = random.Random(seed)
    names, surnames = ["Anna", "Bo", "Carl", "Dee"], ["Smith", "Jones", "Brown"]
    words = ["went", "home", "to", "see", "the", "sea"]
    lines = ["-DOCSTART- -X- -X- O", ""]
    for _ in range(n):
        for _ in range(rng.randint(2, 4)):
            if rng.random() < 0.4:
                lines.append(f"{rng.choice(names)} NNP B-NP B-PER")
                if rng.random() < 0.5:
                    lines.append(f"{rng.choice(surnames)} NNP I-NP I-PER")
            else:
                lines.append(f"{rng.choice(words)} NN B-NP O")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_tagger_learns_names_and_loads_in_transformers(tmp_path: Path):
    transformers = pytest.importorskip("transformers")
    task = TaskConfig(
        task="tag",
        train_file=str(write_conll(tmp_path / "train.txt", 200, 0)),
        eval_file=str(write_conll(tmp_path / "valid.txt", 40, 1)),
        max_length=24,
        epochs=4,
    )
    result = finetune(task, small_train(tmp_path, "tag"))
    assert result.metrics["f1"] >= 0.8, result.metrics
    theirs = transformers.AutoModelForTokenClassification.from_pretrained(result.run_dir).eval()
    ours = load(result.run_dir, merge_lora=False)
    ids = torch.tensor([ours.tokenizer.encode("Anna went to see Bo")])
    with torch.no_grad():
        assert torch.allclose(ours.model(ids).logits, theirs(ids).logits, atol=1e-5)
    assert theirs.config.id2label == {0: "B-PER", 1: "I-PER", 2: "O"}
    from gptkit.tasks.predict import predict

    (tmp_path / "input.txt").write_text("Carl\nwent\nhome\n\nthe\nsea\n")  # one token per line
    rows = list(predict(ours, tmp_path / "input.txt"))
    assert [r["tokens"] for r in rows] == [["Carl", "went", "home"], ["the", "sea"]]
    assert all(len(r["tags"]) == len(r["tokens"]) for r in rows)
    in_memory = list(predict(ours, ["Carl went home", ["the", "sea"]]))  # a sentence, or its words
    assert [(r["tokens"], r["tags"]) for r in in_memory] == [(r["tokens"], r["tags"]) for r in rows]


def test_qa_choice_and_instruct_train_save_and_score(tmp_path: Path):
    context = "The Normans gave their name to Normandy, a region in France, in the 10th century."
    qa = [
        {"id": f"q{i}", "question": q, "context": context, "answers": {"text": [a], "answer_start": [context.index(a)]}}
        for i, (q, a) in enumerate(
            [("Where is Normandy?", "France"), ("When?", "10th century"), ("Who gave the name?", "The Normans")]
        )
    ]
    qa.append(
        {
            "id": "q9",
            "question": "What is the moon made of?",
            "context": context,
            "answers": {"text": [], "answer_start": []},
        }
    )
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(x) for x in qa) + "\n")
    result = finetune(
        TaskConfig(
            task="qa",
            train_file=str(tmp_path / "qa.jsonl"),
            eval_file=str(tmp_path / "qa.jsonl"),
            max_length=32,
            stride=8,
            epochs=None,
        ),
        small_train(tmp_path, "qa", max_steps=4),
    )
    assert {"exact_match", "f1", "val_loss"} <= set(result.metrics)
    transformers = pytest.importorskip("transformers")
    assert (
        type(transformers.AutoModelForQuestionAnswering.from_pretrained(result.run_dir)).__name__
        == "GPT2ForQuestionAnswering"
    )

    swag = [
        {
            "sent1": "She opened the door.",
            "sent2": "She",
            "ending0": "walked in.",
            "ending1": "ate the moon.",
            "label": 0,
        }
    ] * 6
    (tmp_path / "swag.json").write_text("\n".join(json.dumps(x, indent=2) for x in swag))
    result = finetune(
        TaskConfig(task="choice", train_file=str(tmp_path / "swag.json"), max_length=24, epochs=2),
        small_train(tmp_path, "choice", batch_size=2),
    )
    assert 0.0 <= result.metrics["accuracy"] <= 1.0

    pairs = [{"prompt": f"Q: {a}+{b}=", "completion": f" {a + b}"} for a in range(5) for b in range(5)]
    (tmp_path / "pc.jsonl").write_text("\n".join(json.dumps(x) for x in pairs) + "\n")
    result = finetune(
        TaskConfig(task="instruct", train_file=str(tmp_path / "pc.jsonl"), max_length=16, epochs=1),
        small_train(tmp_path, "instruct", lora=LoRAConfig(r=2, alpha=16.0)),
    )
    assert "val_perplexity" in result.metrics
    from gptkit.text.chat_template import load_chat_template

    assert load_chat_template(result.run_dir) is not None  # the template goes with the model
    assert json.loads((result.run_dir / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    # generation loads the run with its adapter merged: the same logits as the adapter applied unmerged
    from gptkit.cli import main

    merged = load(result.run_dir, lm=True).model
    from gptkit.generation.generate import generate
    from gptkit.generation.sampling import SamplingParams
    from gptkit.tasks.predict import predict

    run = load(result.run_dir)
    [answer] = predict(run, ["Q: 1+2="], max_new_tokens=3)
    greedy = SamplingParams(temperature=0, max_new_tokens=3)
    assert answer["completion"] == generate(run.model, "Q: 1+2=", greedy, tokenizer=run.tokenizer)[0].text
    ids = torch.tensor([[16, 25, 17, 10]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, load(result.run_dir, merge_lora=False).model(ids).logits, atol=1e-5)
    assert (
        main(
            [
                "generate",
                "--model",
                str(result.run_dir),
                "--chat",
                "--temperature",
                "0",
                "--max-new-tokens",
                "2",
                "--device",
                "cpu",
                "Q: 1+2=",
            ]
        )
        == 0
    )


def test_gpt1_multiple_choice_runs_with_its_papers_tokens_and_loads_in_transformers(tmp_path: Path, capsys):
    """README's `gptkit finetune choice --model openai-gpt ...`: GPT-1's vocabulary has no eos to score, so the run
    adds its paper's start/delimiter/extract tokens and embeddings for them."""
    transformers = pytest.importorskip("transformers")
    from gptkit.cli import main
    from gptkit.tasks.choice import CHOICE_TOKENS, encode_choice, read_choice
    from gptkit.text.tokenizer import Tokenizer

    torch.manual_seed(0)
    config = transformers.OpenAIGPTConfig(n_embd=32, n_layer=2, n_head=2, n_positions=64)
    base = tmp_path / "gpt1"
    transformers.OpenAIGPTLMHeadModel(config).save_pretrained(base)
    Tokenizer.from_pretrained("openai-gpt").save_pretrained(base)  # the real GPT-1 vocabulary gptkit ships
    swag = [
        {"sent1": "She opened the door.", "sent2": "She", "ending0": "walked in.", "ending1": "ate it.", "label": 0},
        {"sent1": "He sat down.", "sent2": "He", "ending0": "flew away.", "ending1": "read a book.", "label": 1},
    ] * 3
    (tmp_path / "swag.jsonl").write_text("".join(json.dumps(x) + "\n" for x in swag))
    run = tmp_path / "run"
    argv = ["finetune", "choice", "--model", str(base), "--train", str(tmp_path / "swag.jsonl"), "--aux-lm-weight"]
    argv += ["0.5", "--max-steps", "2", "--batch-size", "2", "--max-length", "24", "--out-dir", str(run)]
    assert main([*argv, "--no-progress", "--device", "cpu"]) == 0
    assert "fine-tuned choice for 2 steps" in capsys.readouterr().out
    theirs = transformers.OpenAIGPTDoubleHeadsModel.from_pretrained(run).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(run)
    vocab = config.vocab_size
    assert theirs.config.vocab_size == len(tokenizer) == vocab + 3
    assert [tokenizer.convert_tokens_to_ids(t) for t in CHOICE_TOKENS] == [vocab, vocab + 1, vocab + 2]
    ours = load(run)
    [rows] = encode_choice(ours.tokenizer, read_choice(tmp_path / "swag.jsonl").examples[:1], max_length=24).input_ids
    assert rows[0][0] == vocab and rows[0][-1] == vocab + 2  # start ... extract
    with torch.no_grad():
        for row in rows:  # transformers scores the token at mc_token_ids, gptkit each candidate's last
            ids = torch.tensor([[row]])
            expected = theirs(ids, mc_token_ids=torch.tensor([[len(row) - 1]])).mc_logits
            torch.testing.assert_close(ours.model(ids).logits, expected, rtol=1e-5, atol=1e-5)
    assert main(["predict", str(tmp_path / "swag.jsonl"), "--model", str(run), "--device", "cpu"]) == 0
    predictions = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(predictions) == 6 and all(p["label"] in (0, 1) for p in predictions)


def test_completion_only_loss_and_uneven_accumulation_equal_one_batch(tmp_path: Path):
    """Two micro-batches holding different numbers of completion tokens step exactly as one batch does."""
    pairs = [{"prompt": "say" + " yes" * k, "completion": " ok" * (k + 1)} for k in range(4)]
    (tmp_path / "pc.jsonl").write_text("\n".join(json.dumps(x) for x in pairs) + "\n")
    task = TaskConfig(
        task="instruct",
        train_file=str(tmp_path / "pc.jsonl"),
        eval_file=str(tmp_path / "pc.jsonl"),
        max_length=16,
        epochs=None,
    )
    # eps=1 makes Adam's first step ~ lr * gradient, so gradients that differ show, while the last-bit noise of
    # gradients that are zero in exact arithmetic (the key bias) is not blown up to lr as with eps=1e-8
    same = dict(max_steps=1, warmup_steps=0, grad_clip=0, dropout=0.0, eps=1.0, lr=0.1)
    one = finetune(task, small_train(tmp_path, "one", batch_size=4, **same))
    two = finetune(task, small_train(tmp_path, "two", batch_size=2, grad_accum=2, **same))
    a = load(one.run_dir, merge_lora=False).model.state_dict()
    b = load(two.run_dir, merge_lora=False).model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)
    initial = base_model(small_train(tmp_path, "x"), 16)[0].state_dict()
    assert not torch.equal(a["transformer.wte.weight"], initial["transformer.wte.weight"])  # it did train
    assert one.train.train_loss == pytest.approx(two.train.train_loss, rel=1e-5)

    # the loss is the mean over completion tokens only: recompute it by hand at the initial weights
    from gptkit.tasks.finetune import run_tokenizer
    from gptkit.tasks.instruct import encode_instruct, read_prompt_completion

    train = small_train(tmp_path, "check")
    model, tok = base_model(train, 16)[0].eval(), run_tokenizer(train)
    features = encode_instruct(tok, read_prompt_completion(tmp_path / "pc.jsonl"), max_length=16)
    total, count = 0.0, 0
    for ids, labels in zip(features.input_ids, features.labels, strict=True):
        answer = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
        assert tok.decode([ids[i] for i in answer]).startswith(" ok") and ids[answer[-1]] == tok.eos_token_id
        logits = model(torch.tensor([ids])).logits[0]
        for i in answer:  # position i - 1 predicts token i
            total += -torch.log_softmax(logits[i - 1], -1)[ids[i]].item()
            count += 1
    from gptkit.tasks.finetune import predict_outputs
    from gptkit.tasks.registry import TASK_TYPES

    enc = TASK_TYPES["instruct"].recipe.encode(task, read_prompt_completion(tmp_path / "pc.jsonl").examples, tok, None)
    loss, _ = predict_outputs(
        model, enc.rows, enc.targets, tok.eos_token_id, (), 2, torch.autocast("cpu", enabled=False)
    )
    assert loss == pytest.approx(total / count, rel=1e-5)


def test_cli_finetune_predict_eval_and_embed(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from gptkit.cli import main

    train_file = write_sentiment(tmp_path / "train.tsv", 48, 0)
    dev_file = write_sentiment(tmp_path / "dev.tsv", 12, 1)
    run = tmp_path / "run"
    assert (
        main(
            [
                "finetune",
                "classify",
                "--train",
                str(train_file),
                "--eval",
                str(dev_file),
                "--init-from",
                "scratch",
                "--model",
                "gpt2-tiny",
                "--max-steps",
                "4",
                "--batch-size",
                "8",
                "--max-length",
                "16",
                "--out-dir",
                str(run),
                "--no-progress",
                "--device",
                "cpu",
                "--lora-r",
                "2",
            ]
        )
        == 0
    )
    assert "fine-tuned classify for 4 steps" in capsys.readouterr().out
    assert main(["predict", str(dev_file), "--model", str(run), "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 12 and all(r["label"] in ("0", "1") for r in rows)
    assert all(abs(sum(r["scores"].values()) - 1) < 1e-5 for r in rows)
    assert main(["eval", "--model", str(run), "--labelled", str(dev_file), "--json", "--device", "cpu"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["examples"] == 12 and 0 <= scores["accuracy"] <= 1
    assert main(["eval", "--model", str(run), "--labelled", str(dev_file), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert f"accuracy {scores['accuracy']:.4f}" in printed and printed.rstrip().endswith("examples 12")  # a count
    assert main(["embed", "--model", str(run), "one text", "another text", "--device", "cpu"]) == 0
    vectors = [json.loads(line)["embedding"] for line in capsys.readouterr().out.splitlines()]
    assert len(vectors) == 2 and abs(sum(v * v for v in vectors[0]) - 1) < 1e-4
    assert (
        main(
            [
                "finetune",
                "classify",
                "--train",
                str(train_file),
                "--label-column",
                "stars",
                "--init-from",
                "scratch",
                "--model",
                "gpt2-tiny",
                "--out-dir",
                str(tmp_path / "bad"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "no column 'stars'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "task, name, max_length",
    [
        ("qa", "squad_sample.json", 96),
        ("choice", "swag_sample.json", 48),
        ("classify", "imdb/imdb_sample_1000.csv", 64),
    ],
)
def test_each_task_runs_on_the_shared_data(tmp_path: Path, task: str, name: str, max_length: int):
    from conftest import SHARED

    path = SHARED / "data" / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    result = finetune(
        TaskConfig(task=task, train_file=str(path), max_length=max_length, epochs=None),
        small_train(tmp_path, task, max_steps=2, batch_size=4),
    )
    assert result.train.step == 2 and result.metrics["val_loss"] > 0
    assert (result.run_dir / "task.json").is_file() and (result.run_dir / "config.json").is_file()


@pytest.mark.parametrize("task_name", ["classify", "tag"])
def test_finetune_steps_equal_a_transformers_training_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, task_name: str
):
    """The oracle for the whole recipe: with the same start (head included), the same batches and no dropout,
    gptkit's loop and a plain loop over transformers' GPT2ForSequenceClassification / GPT2ForTokenClassification
    (Trainer's weight-decay groups, fused AdamW, the same schedule, clipping) give the same loss at every step
    and end with the same weights."""
    transformers = pytest.importorskip("transformers")
    from gptkit.tasks import heads
    from gptkit.tasks.data import LabelledSet, LabelMap, encode_labelled, read_labelled
    from gptkit.tasks.tagging import encode_tagging, read_conll
    from gptkit.text.tokenizer import Tokenizer
    from gptkit.training.optim import lr_at

    steps, batch, lr, warmup = 12, 8, 2e-3, 4
    init = tmp_path / "init"
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_head=4, n_embd=64, n_positions=32, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(init)
    tokenizer = Tokenizer.from_pretrained("gpt2")
    tokenizer.save_pretrained(init)
    tagging = task_name == "tag"
    # (a separate dev file: without one, a seeded tenth of the training file would be held out)
    if tagging:
        train_file, dev_file = write_conll(tmp_path / "train.txt", steps * batch, 0), write_conll(tmp_path / "d", 8, 1)
        data = read_conll(train_file)
        features = encode_tagging(tokenizer, data, LabelMap.from_data(data), max_length=16)
        cls, head = transformers.GPT2ForTokenClassification, "classifier"
    else:
        train_file, dev_file = (
            write_sentiment(tmp_path / "train.tsv", steps * batch, 0),
            write_sentiment(tmp_path / "dev.tsv", 16, 1),
        )
        data = read_labelled(train_file)
        features = encode_labelled(tokenizer, data, LabelMap.from_data(LabelledSet("t", data.examples)), max_length=16)
        cls, head = transformers.GPT2ForSequenceClassification, "score"
    theirs = cls.from_pretrained(init, num_labels=3 if tagging else 2, pad_token_id=50256)
    if tagging:
        theirs.dropout.p = 0.0  # the dropout before the classifier
    start = {k: v.detach().clone() for k, v in getattr(theirs, head).state_dict().items()}

    made = heads.TaskModel.__init__

    def same_head(self, *args, **kwargs):
        made(self, *args, **kwargs)
        getattr(self, head).load_state_dict(start)
        if tagging:
            self.classifier.dropout.p = 0.0  # the dropout before a tagger's classifier

    monkeypatch.setattr(heads.TaskModel, "__init__", same_head)
    monkeypatch.setattr(EpochSampler, "_shuffle", lambda self: torch.arange(self.n))  # file order, both sides
    ours: list[float] = []
    task = TaskConfig(
        task=task_name,
        train_file=str(train_file),
        eval_file=str(dev_file),
        max_length=16,
        epochs=None,
        group_by_length=False,
    )
    train = TrainConfig(
        data="",
        out_dir=str(tmp_path / "run"),
        init_from="pretrained",
        model=str(init),
        batch_size=batch,
        max_steps=steps,
        lr=lr,
        min_lr=0.0,
        warmup_steps=warmup,
        schedule="linear",
        weight_decay=0.01,
        grad_clip=1.0,
        eval_interval=0,
        log_interval=1,
        progress=False,
        device="cpu",
        seed=0,
    )
    run = finetune(task, train, on_event=lambda e: ours.append(e.loss) if isinstance(e, StepEvent) else None).run_dir

    decay = set(
        transformers.Trainer(
            model=theirs,
            args=transformers.TrainingArguments(output_dir=str(tmp_path / "hf"), report_to="none", use_cpu=True),
        ).get_decay_parameter_names(theirs)
    )
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for n, p in theirs.named_parameters() if n in decay], "weight_decay": 0.01},
            {"params": [p for n, p in theirs.named_parameters() if n not in decay], "weight_decay": 0.0},
        ],
        lr=lr,
        betas=(train.beta1, train.beta2),
        eps=train.eps,
        fused=True,
    )
    theirs.train()
    reference = []
    for step in range(steps):
        rows = slice(step * batch, (step + 1) * batch)
        b = collate(
            [
                {"input_ids": ids, "labels": y}
                for ids, y in zip(features.input_ids[rows], features.labels[rows], strict=True)
            ],
            50256,
        )
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, lr=lr, min_lr=0.0, warmup_steps=warmup, decay_steps=steps, schedule="linear")
        loss = theirs(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        reference.append(loss.item())
    assert len(ours) == steps
    assert ours == pytest.approx(reference, rel=1e-4, abs=1e-5)
    trained = heads.load_task_model(run).state_dict()
    for name, weight in theirs.state_dict().items():  # and the weights they end with (Conv1D is [in, out])
        ours_weight = trained[name].t() if name.endswith(("attn.weight", "proj.weight", "fc.weight")) else trained[name]
        torch.testing.assert_close(ours_weight, weight, rtol=1e-3, atol=1e-5, msg=name)
    moved = max((getattr(theirs, head).state_dict()[k] - v).abs().max() for k, v in start.items())
    assert moved > 1e-3  # it trained: not a comparison of two frozen models


def test_a_finetune_stopped_between_steps_resumes_to_the_uninterrupted_one(tmp_path: Path):
    from process_state import global_state

    train_file = str(write_sentiment(tmp_path / "train.tsv", 64, 0))
    task = TaskConfig(task="classify", train_file=train_file, max_length=16, epochs=None)
    whole = small_train(tmp_path, "whole", max_steps=12, eval_interval=6, log_interval=1, dropout=0.1)
    torch.manual_seed(42)
    before = global_state()
    finetune(task, whole)
    assert global_state() == before  # the caller's RNGs (and the rest) as they were
    steps: list[StepEvent] = []
    part = whole.replace(out_dir=str(tmp_path / "part"))

    def listen(event) -> None:
        if isinstance(event, StepEvent):
            steps.append(event)

    stopped = finetune(task, part, on_event=listen, should_stop=lambda: len(steps) >= 7)
    assert stopped.train.stopped and stopped.train.step == 7
    finetune(task, part.replace(init_from="resume"), on_event=listen)
    assert [e.step for e in steps] == list(range(1, 13))
    assert metrics_losses(tmp_path / "part") == metrics_losses(tmp_path / "whole") == [e.loss for e in steps]
    ours, theirs = (
        load(tmp_path / "part", merge_lora=False).model.state_dict(),
        load(tmp_path / "whole", merge_lora=False).model,
    )
    assert all(torch.equal(ours[k], v) for k, v in theirs.state_dict().items())


def test_finetune_prints_nothing_counts_bad_rows_and_takes_the_world_size_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    from gptkit.cli import main
    from gptkit.training.distributed import DistInfo

    path = write_sentiment(tmp_path / "train.tsv", 40, 0)
    path.write_text(path.read_text() + "a row without a label\n")
    task = TaskConfig(task="classify", train_file=str(path), max_length=16, epochs=1, on_error="skip")
    monkeypatch.setenv("WORLD_SIZE", "4")  # torchrun's variable: read by DistInfo.from_env only, not by finetune
    result = finetune(task, small_train(tmp_path, "run"), dist=DistInfo())
    assert result.skipped_rows == 1
    assert result.train.step == -(-36 // 8)  # one epoch of the 36 training rows (a tenth held out), one process
    assert capsys.readouterr() == ("", "")
    monkeypatch.delenv("WORLD_SIZE")
    argv = ["finetune", "classify", "--train", str(path), "--on-error", "skip", "--init-from", "scratch"]
    argv += ["--model", "gpt2-tiny", "--max-length", "16", "--max-steps", "1", "--out-dir", str(tmp_path / "cli")]
    argv += ["--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    assert "skipped 1 bad row (see --on-error)\nfine-tuned classify for 1 step (" in capsys.readouterr().out


def test_finetune_never_writes_into_its_base_model_or_over_a_run(tmp_path: Path):
    from gptkit import ConfigError

    train_file = str(write_sentiment(tmp_path / "train.tsv", 16, 0))
    task = TaskConfig(task="classify", train_file=train_file, max_length=16, epochs=None)
    base = small_train(tmp_path, "base", max_steps=2)
    finetune(task, base)
    weights = {p.name: p.read_bytes() for p in (tmp_path / "base").iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match="already holds a run; pass --overwrite"):
        finetune(task, base)
    onto_base = base.replace(init_from="pretrained", model=base.out_dir, overwrite=True)
    with pytest.raises(ConfigError, match="would write into the model the run reads"):
        finetune(task, onto_base)
    assert {p.name: p.read_bytes() for p in (tmp_path / "base").iterdir() if p.is_file()} == weights
    finetune(task, base.replace(overwrite=True))


def test_epochs_and_max_steps_are_exclusive(tmp_path: Path, capsys):
    from gptkit.cli import main

    path = write_sentiment(tmp_path / "train.tsv", 16, 0)
    argv = ["finetune", "classify", "--train", str(path), "--init-from", "scratch", "--model", "gpt2-tiny"]
    argv += ["--max-length", "16", "--epochs", "1", "--max-steps", "20", "--out-dir", str(tmp_path / "cli")]
    assert main([*argv, "--no-progress", "--device", "cpu"]) == 2
    assert "--epochs 1.0 and --max-steps 20 both set the run's length; give one of them" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()


def test_cli_resume_takes_the_runs_settings_and_compares_only_the_data(tmp_path: Path, capsys):
    from gptkit.cli import main

    path = write_sentiment(tmp_path / "train.tsv", 40, 0)
    dev = write_sentiment(tmp_path / "dev.tsv", 8, 1)
    files = ["finetune", "classify", "--train", str(path), "--eval", str(dev), "--out-dir", str(tmp_path / "run")]
    first = ["--init-from", "scratch", "--model", "gpt2-tiny", "--max-length", "16", "--max-steps", "2"]
    assert main([*files, *first, "--no-progress", "--device", "cpu"]) == 0
    resume = [*files, "--init-from", "resume", "--no-progress"]
    assert main([*resume, "--max-steps", "4"]) == 0, capsys.readouterr().err  # no --model, no --max-length
    assert "fine-tuned classify for 4 steps" in capsys.readouterr().out
    assert main([*resume, "--max-steps", "5", "--max-length", "32"]) == 2
    assert "--max-length 32 (the run has 16)" in capsys.readouterr().err
    dev.write_text(dev.read_text() + "good good good good\t1\n")
    assert main([*resume, "--max-steps", "5"]) == 2
    assert "is not the data" in capsys.readouterr().err


def test_predict_tags_sentences_per_line_and_jsonl_and_refuses_the_rest(tmp_path: Path, capsys, monkeypatch):
    import io
    import sys

    from gptkit.cli import main as cli

    train_file = str(write_conll(tmp_path / "train.txt", 20, 0))
    task = TaskConfig(task="tag", train_file=train_file, max_length=24, epochs=None)
    run = finetune(task, small_train(tmp_path, "tag", max_steps=1)).run_dir
    words = [["Anna", "went", "home"], ["the", "sea"]]
    inputs = {
        "lines": (tmp_path / "in.txt", "Anna went home\n\nthe sea\n"),
        "jsonl": (tmp_path / "in.jsonl", "".join(json.dumps({"tokens": w}) + "\n" for w in words)),
    }
    for fmt, (path, text) in inputs.items():
        path.write_text(text)
        assert cli(["predict", str(path), "--model", str(run), "--format", fmt]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [r["tokens"] for r in rows] == words and [len(r["tags"]) for r in rows] == [3, 2]
    assert cli(["predict", str(inputs["jsonl"][0]), "--model", str(run)]) == 0  # auto: .jsonl is JSONL
    assert len(capsys.readouterr().out.splitlines()) == 2
    monkeypatch.setattr(sys, "stdin", io.StringIO("Anna went home\n"))
    monkeypatch.setattr("builtins.open", _stdin_aware(open))
    assert cli(["predict", "-", "--model", str(run), "--format", "lines"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == words[0]
    refused = [
        (["--format", "conll"], "in.txt", "not CoNLL", "use --format lines"),  # a sentence per line read as CoNLL
        ([], "in.txt", "not CoNLL", "use --format lines"),  # auto: .txt is CoNLL
        (["--format", "conll"], "in.jsonl", "a JSON object, not CoNLL", "--format jsonl"),
        (["--format", "lines"], "in.jsonl", "a JSON object", "--format jsonl"),
        (["--format", "jsonl"], "in.txt", "not valid JSON", '{"tokens"'),
        (["--format", "csv"], "in.txt", "a tagging model reads conll, lines or jsonl", "--format"),
    ]
    for flags, name, *expected in refused:
        assert cli(["predict", str(tmp_path / name), "--model", str(run), *flags]) == 2
        err = capsys.readouterr().err
        assert all(e in err for e in expected) and len(err.splitlines()) == 1, err


def _stdin_aware(real_open):
    """open() that hands back the (monkeypatched) sys.stdin for /dev/stdin, as the shell's stdin would be."""
    import sys

    def opener(file, *args, **kwargs):
        return sys.stdin if str(file) == "/dev/stdin" else real_open(file, *args, **kwargs)

    return opener


def test_without_max_length_the_cli_fits_a_model_with_a_short_context(tmp_path: Path, capsys) -> None:
    """`gptkit new gpt2-tiny` makes a 128-token model; fine-tuning it with the defaults must not ask for 256."""
    from gptkit.cli import main
    from gptkit.models.config import GPTConfig
    from gptkit.models.gpt import GPT
    from gptkit.text.tokenizer import Tokenizer

    base = tmp_path / "tiny"
    GPT(GPTConfig.from_name("gpt2-tiny", n_positions=48)).save_pretrained(
        base, tokenizer=Tokenizer.from_pretrained("gpt2")
    )
    train = write_sentiment(tmp_path / "train.tsv", 16, 0)
    run = tmp_path / "run"
    argv = ["finetune", "classify", "--model", str(base), "--train", str(train), "--max-steps", "1"]
    assert main([*argv, "--batch-size", "4", "--out-dir", str(run), "--no-progress", "--device", "cpu"]) == 0
    assert json.loads((run / "task.json").read_text())["task"]["max_length"] == 48
    capsys.readouterr()
    too_long = ["--max-length", "64", "--out-dir", str(tmp_path / "run2")]  # given: taken as given, refused
    assert main([*argv, *too_long, "--no-progress", "--device", "cpu"]) == 2
    assert "max_length 64 exceeds" in capsys.readouterr().err
