"""The request and response models, field for field against the `openai` package's own types, and how a request
maps onto SamplingParams (no model, no engine)."""

from __future__ import annotations

import typing

import fastapi  # noqa: F401  (the serve extra, in dev)
import openai
import pytest
from openai.types import completion_choice, completion_create_params, create_embedding_response
from openai.types import embedding_create_params as embedding_params
from openai.types.chat import chat_completion, chat_completion_chunk, chat_completion_token_logprob
from openai.types.chat import completion_create_params as chat_params
from openai.types.shared import error_object

from gptkit.server import responses as ours
from gptkit.server.protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    input_list,
    token_bias,
)

PAIRS = [
    (ours.Completion, openai.types.Completion),
    (ours.CompletionChoice, openai.types.CompletionChoice),
    (ours.CompletionLogprobs, completion_choice.Logprobs),
    (ours.Usage, openai.types.CompletionUsage),
    (ours.ChatCompletion, openai.types.chat.ChatCompletion),
    (ours.ChatChoice, chat_completion.Choice),
    (ours.AssistantMessage, openai.types.chat.ChatCompletionMessage),
    (ours.ChoiceLogprobs, chat_completion.ChoiceLogprobs),
    (ours.TokenLogprob, openai.types.chat.ChatCompletionTokenLogprob),
    (ours.TopLogprob, chat_completion_token_logprob.TopLogprob),
    (ours.ChatCompletionChunk, openai.types.chat.ChatCompletionChunk),
    (ours.ChunkChoice, chat_completion_chunk.Choice),
    (ours.Delta, chat_completion_chunk.ChoiceDelta),
    (ours.Embedding, openai.types.Embedding),
    (ours.EmbeddingUsage, create_embedding_response.Usage),
    (ours.CreateEmbeddingResponse, openai.types.CreateEmbeddingResponse),
    (ours.Model, openai.types.Model),
    (ours.ErrorObject, error_object.ErrorObject),
]


@pytest.mark.parametrize("mine, theirs", PAIRS, ids=[m.__name__ for m, _ in PAIRS])
def test_response_models_follow_the_openai_types(mine, theirs) -> None:
    """Our fields are theirs (same names), theirs that are required are ours, and literal tags agree."""
    assert set(mine.model_fields) <= set(theirs.model_fields), set(mine.model_fields) - set(theirs.model_fields)
    required = {name for name, f in theirs.model_fields.items() if f.is_required()}
    assert required <= set(mine.model_fields), required - set(mine.model_fields)
    for name, field in mine.model_fields.items():
        if typing.get_origin(field.annotation) is typing.Literal:
            allowed = set(typing.get_args(theirs.model_fields[name].annotation))
            assert set(typing.get_args(field.annotation)) <= allowed, name


@pytest.mark.parametrize(
    "request_model, params",
    [
        (CompletionRequest, completion_create_params.CompletionCreateParamsStreaming),
        (ChatCompletionRequest, chat_params.CompletionCreateParamsStreaming),
        (EmbeddingRequest, embedding_params.EmbeddingCreateParams),
    ],
)
def test_request_fields_are_openai_names_plus_vllm_extras(request_model, params) -> None:
    vllm = {"top_k", "min_p", "repetition_penalty", "ignore_eos"}
    assert set(request_model.model_fields) - set(params.__annotations__) <= vllm


def test_a_request_maps_onto_sampling_params() -> None:
    request = CompletionRequest(
        model="m", prompt="x", temperature=0.5, top_p=0.8, top_k=-1, stop="\n", seed=3, logit_bias={"7": -100}
    )
    params = request.sampling_params(20, vocab_size=10, logprobs=2)
    assert (params.max_new_tokens, params.temperature, params.top_p, params.top_k) == (20, 0.5, 0.8, 0)
    assert params.stop == ("\n",) and params.seed == 3 and params.logit_bias == {7: -100.0} and params.logprobs == 2
    defaults = CompletionRequest(model="m", prompt="x").sampling_params(16, vocab_size=10, logprobs=None)
    assert (defaults.temperature, defaults.top_p, defaults.repetition_penalty) == (1.0, 1.0, 1.0)
    greedy = CompletionRequest(model="m", prompt="x", top_p=0).sampling_params(1, vocab_size=10, logprobs=None)
    assert greedy.greedy  # top_p 0 keeps only the most likely token


@pytest.mark.parametrize(
    "bias, message",
    [
        ({"x": 1}, "token ids written as strings"),
        ({"10": 1}, r"outside the vocabulary \[0, 10\)"),
        ({"1": -101}, r"values must be in \[-100, 100\]"),
    ],
)
def test_logit_bias_is_checked_against_the_vocabulary(bias, message) -> None:
    with pytest.raises(APIError, match=message) as caught:
        token_bias(bias, vocab_size=10)
    assert caught.value.param == "logit_bias" and caught.value.status == 400


def test_prompts_and_inputs_in_every_shape() -> None:
    assert input_list("a", "prompt") == ["a"]
    assert input_list(["a", "b"], "prompt") == ["a", "b"]
    assert input_list([1, 2], "prompt") == [[1, 2]]
    assert input_list([[1], [2, 3]], "input") == [[1], [2, 3]]
    for empty in ("", [], [""]):
        with pytest.raises(APIError, match="input is empty"):
            input_list(empty, "input")


def test_a_stream_never_mixes_with_best_of_and_stream_options_need_stream() -> None:
    with pytest.raises(APIError, match="cannot be streamed"):
        CompletionRequest(model="m", prompt="x", n=1, best_of=2, stream=True).check()
    with pytest.raises(APIError, match="only allowed with stream"):
        ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "x"}], stream_options={}).check()
    ok = CompletionRequest(model="m", prompt="x", stream=True, stream_options={"include_usage": True})
    ok.check()
    assert ok.include_usage
