"""OpenAI's request objects as pydantic models, OpenAI's error object, and how a request maps onto SamplingParams.

Names, defaults and bounds follow the OpenAI API (`openai.types.completion_create_params`,
`chat.completion_create_params`, `embedding_create_params`); vLLM's extras top_k, min_p and repetition_penalty
are accepted too. Everything a client can get wrong is an `APIError` whose `param` names the field.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from gptkit.errors import ConfigError, ContextLengthError
from gptkit.generation.params import SamplingParams

MAX_CHOICES = 128  # n and best_of; an engine also refuses more than its max_batch_size
MAX_INPUTS = 2048  # prompts of one completions request, inputs of one embeddings request (OpenAI's limit)
MAX_TOKENS = 1 << 20  # max_tokens; the model's context refuses far fewer
MAX_STOPS = 4
SEED_BITS = 40  # a row's generator is seeded with seed * 1_000_003 + choice, which must fit torch's 64 bits


class APIError(Exception):
    """An error a client caused (or, with status 5xx, one it cannot fix), as OpenAI reports it."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(param: str | None, message: str) -> APIError:
    return APIError(400, message, param=param)


@contextmanager
def about(param: str) -> Iterator[None]:
    """Report the library's refusals (ValueError: a bad id, a prompt that does not fit, a bad template...) as a
    400 naming `param`; a prompt too long for the context also gets OpenAI's code context_length_exceeded."""
    try:
        yield
    except ContextLengthError as exc:
        raise APIError(400, str(exc), param=param, code="context_length_exceeded") from None
    except ValueError as exc:
        raise invalid(param, f"{param}: {exc}") from None


# -- requests ---------------------------------------------------------------------------------------

NonEmpty = Annotated[str, Field(min_length=1)]
TokenId = Annotated[StrictInt, Field(ge=0)]
TokenIds = Annotated[list[TokenId], Field(min_length=1)]
# a string, strings, token ids or lists of token ids: what OpenAI's `prompt` and `input` take
Inputs = (
    str
    | Annotated[list[str], Field(max_length=MAX_INPUTS)]
    | TokenIds
    | Annotated[list[TokenIds], Field(max_length=MAX_INPUTS)]
)


class _Request(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)  # json.loads reads NaN and Infinity; no field means them

    model: str


class StreamOptions(BaseModel):
    include_usage: bool | None = False


class _Sampling(_Request):
    """The fields completions and chat share."""

    n: int | None = Field(1, ge=1, le=MAX_CHOICES)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    stop: NonEmpty | Annotated[list[NonEmpty], Field(max_length=MAX_STOPS)] | None = None
    seed: int | None = Field(None, ge=-(1 << SEED_BITS), le=1 << SEED_BITS)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # vLLM's extras
    top_k: int | None = Field(None, ge=-1, description="keep the k most likely tokens (0 or -1: off)")
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0, le=100)
    ignore_eos: bool | None = False

    @property
    def choices(self) -> int:
        return self.n or 1

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk."""
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def check(self) -> None:
        """What the field bounds cannot say on their own."""
        if self.stream_options is not None and not self.stream:
            raise invalid("stream_options", "stream_options is only allowed with stream: true")

    def sampling_params(self, max_new_tokens: int, vocab_size: int, logprobs: int | None) -> SamplingParams:
        temperature = 1.0 if self.temperature is None else self.temperature
        top_p = 1.0 if self.top_p is None else self.top_p
        if top_p == 0:  # only the most likely token is kept: greedy decoding, exactly
            temperature, top_p = 0.0, 1.0
        stop = [self.stop] if isinstance(self.stop, str) else self.stop or []
        try:
            return SamplingParams(
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                top_k=max(self.top_k or 0, 0),
                min_p=self.min_p or 0.0,
                repetition_penalty=self.repetition_penalty or 1.0,
                presence_penalty=self.presence_penalty or 0.0,
                frequency_penalty=self.frequency_penalty or 0.0,
                logit_bias=token_bias(self.logit_bias, vocab_size),
                seed=self.seed,
                stop=tuple(stop),
                ignore_eos=bool(self.ignore_eos),
                logprobs=logprobs,
            )
        except ConfigError as exc:  # the bounds above keep SamplingParams' own checks from firing
            raise invalid(None, str(exc)) from None


def token_bias(bias: dict[str, float] | None, vocab_size: int) -> dict[int, float]:
    """logit_bias {"token id": bias} as ids, each in the vocabulary and each bias in [-100, 100]."""
    out: dict[int, float] = {}
    for key, value in (bias or {}).items():
        if not (key.isascii() and key.isdigit()):
            raise invalid("logit_bias", f'logit_bias keys are token ids written as strings, e.g. "50256"; got {key!r}')
        if not int(key) < vocab_size:
            raise invalid("logit_bias", f"logit_bias: token id {key} is outside the vocabulary [0, {vocab_size})")
        if not -100 <= value <= 100:
            raise invalid("logit_bias", f"logit_bias values must be in [-100, 100]; token {key} has {value}")
        out[int(key)] = value
    return out


class CompletionRequest(_Sampling):
    prompt: Inputs
    max_tokens: int | None = Field(16, ge=0, le=MAX_TOKENS)
    best_of: int | None = Field(None, ge=1, le=MAX_CHOICES)
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool | None = False
    suffix: str | None = None

    @property
    def new_tokens(self) -> int:
        return 16 if self.max_tokens is None else self.max_tokens

    @property
    def candidates(self) -> int:
        """Choices generated per prompt: best_of, of which the n with the highest total logprob are returned."""
        return self.best_of or self.choices

    def check(self) -> None:
        super().check()
        if self.suffix is not None:
            raise invalid("suffix", "suffix (insertion) is not supported by GPT-1/GPT-2 models; leave it out")
        if self.best_of is not None and self.best_of < self.choices:
            raise invalid("best_of", f"best_of ({self.best_of}) must be >= n ({self.choices})")
        if self.stream and self.candidates > self.choices:
            raise invalid("best_of", "best_of > n cannot be streamed: the best choices are known only at the end")
        if self.max_tokens == 0 and not self.echo:
            raise invalid("max_tokens", "max_tokens 0 generates nothing; it is allowed only with echo (scoring)")


class ContentPart(BaseModel):
    type: str
    text: str | None = None


class Message(BaseModel):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self, param: str) -> str:
        """The content as one string; only text parts can be read by these models."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        if bad := [i for i, part in enumerate(self.content) if part.type != "text" or part.text is None]:
            raise invalid(f"{param}.content[{bad[0]}]", f"{param}.content[{bad[0]}]: only text parts are supported")
        return "".join(part.text or "" for part in self.content)


class ResponseFormat(BaseModel):
    type: str


class ChatCompletionRequest(_Sampling):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None

    def check(self) -> None:
        super().check()
        if self.response_format is not None and self.response_format.type != "text":
            raise invalid(
                "response_format",
                f"response_format {self.response_format.type!r} is not supported: these models write free text; "
                'leave it out or use {"type": "text"}',
            )
        for name in ("tools", "functions"):
            if getattr(self, name):
                raise invalid(name, f"{name} (function calling) is not supported by GPT-1/GPT-2 models")
        if self.top_logprobs is not None and not self.logprobs:
            raise invalid("top_logprobs", "top_logprobs needs logprobs: true")

    def conversation(self) -> list[dict[str, str]]:
        """The messages as the chat template reads them."""
        return [{"role": m.role, "content": m.text(f"messages[{i}]")} for i, m in enumerate(self.messages)]

    def logprobs_wanted(self) -> int | None:
        """How many alternatives each token reports (None: no logprobs)."""
        return (self.top_logprobs or 0) if self.logprobs else None


class EmbeddingRequest(_Request):
    input: Inputs
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


class TokenizeRequest(_Request):
    """gptkit's own: how the model's tokenizer splits `prompt` (vLLM's /tokenize takes the same two fields)."""

    prompt: str = Field(max_length=1 << 20)


def input_list(value: str | list[str] | list[int] | list[list[int]], param: str) -> list[str | list[int]]:
    """One prompt or input, or many, as a list; empty ones are refused naming the field."""
    one = isinstance(value, str) or (bool(value) and isinstance(value[0], int))
    items: list[Any] = [value] if one else list(value)
    if not items or any(len(item) == 0 for item in items):
        raise invalid(param, f"{param} is empty; give text or token ids (GPT-2 models can start from <|endoftext|>)")
    return items
