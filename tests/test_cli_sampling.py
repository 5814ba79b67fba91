"""`gptkit generate`'s sampling flags are SamplingParams' fields: one flag each, defaults from the dataclass."""

from __future__ import annotations

import argparse
import dataclasses

from gptkit.cli.models import register, sampling_params
from gptkit.generation.params import SamplingParams


def _parse(*flags: str) -> SamplingParams:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return sampling_params(parser.parse_args(["generate", "--model", "m", "--json", *flags]))


def test_no_flags_give_the_dataclass_defaults_and_every_field_but_logit_bias_has_a_flag() -> None:
    assert _parse() == SamplingParams()
    subcommands = argparse.ArgumentParser().add_subparsers()
    register(subcommands)
    help_text = subcommands.choices["generate"].format_help()
    for f in dataclasses.fields(SamplingParams):
        if f.name != "logit_bias":
            flag = "--" + f.name.replace("_", "-")
            assert f"{flag} " in help_text and f"(default: {f.default!r})" in help_text, flag


def test_flags_set_their_fields() -> None:
    expected = SamplingParams(
        max_new_tokens=7,
        temperature=0.0,
        top_k=5,
        top_p=0.5,
        min_p=0.1,
        repetition_penalty=1.2,
        presence_penalty=0.3,
        frequency_penalty=-0.4,
        no_repeat_ngram_size=3,
        seed=9,
        stop=("a", "bc"),
        stop_token_ids=(5, 6),
        ignore_eos=True,
        logprobs=2,
        num_beams=3,
        length_penalty=0.5,
        early_stopping="never",
        num_return_sequences=2,
        truncate=True,
    )
    flags = []
    for f in dataclasses.fields(SamplingParams):
        value = getattr(expected, f.name)
        flag = "--" + f.name.replace("_", "-")
        if f.name == "logit_bias":
            continue
        if isinstance(value, bool):
            flags.append(flag)
        elif isinstance(value, tuple):
            flags += [part for item in value for part in (flag, str(item))]
        else:
            flags += [flag, str(value)]
    assert _parse(*flags) == expected
    assert _parse("--early-stopping", "true").early_stopping is True
