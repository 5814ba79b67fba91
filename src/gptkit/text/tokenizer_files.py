"""The `tokenizers` pipelines behind `gptkit.Tokenizer`, the files they live in, and tiktoken's engine for GPT-2.

One builder per kind of tokenizer, BPE training, the vocabularies gptkit ships, reading/writing the directory
layout that Hugging Face `transformers` also loads (vocab.json, merges.txt, tokenizer.json,
tokenizer_config.json), and the tiktoken Encoding that encodes OpenAI's GPT-2 vocabulary (with the check that a
pipeline holds exactly that vocabulary). No torch here.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import tokenizers as tk
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from gptkit import io
from gptkit.errors import TokenizerError

KINDS = ("gpt2", "openai-gpt", "char", "bpe")
BYTE_LEVEL_KINDS = frozenset({"gpt2", "bpe"})
GPT2_EOS = "<|endoftext|>"
GPT1_UNK = "<unk>"
GPT2_VOCAB_SIZE = 50257  # OpenAI's GPT-2 vocabulary, <|endoftext|> included

# kind -> tokenizer_class written to tokenizer_config.json, so transformers.AutoTokenizer loads it
_HF_CLASS = {
    "gpt2": "GPT2Tokenizer",
    "openai-gpt": "OpenAIGPTTokenizer",
    "char": "PreTrainedTokenizerFast",
    "bpe": "PreTrainedTokenizerFast",
}
_KIND_OF_HF_CLASS = {
    "GPT2Tokenizer": "gpt2",
    "GPT2TokenizerFast": "gpt2",
    "OpenAIGPTTokenizer": "openai-gpt",
    "OpenAIGPTTokenizerFast": "openai-gpt",
}
_KIND_OF_MODEL_TYPE = {"gpt2": "gpt2", "openai-gpt": "openai-gpt"}
# the vocabularies shipped in gptkit/assets: kind -> (folder, vocabulary file, merges file)
_SHIPPED = {
    "gpt2": ("gpt2", "encoder.json", "vocab.bpe"),
    "openai-gpt": ("openai-gpt", "encoder_bpe_40000.json", "vocab_40000.bpe"),
}
# vocabulary + merges file names of OpenAI's original releases (GPT-2's models/124M/, GPT-1's model/)
_OPENAI_RELEASE_FILES = {
    "gpt2": ("encoder.json", "vocab.bpe"),
    "openai-gpt": ("encoder_bpe_40000.json", "vocab_40000.bpe"),
}


# --- builders ---------------------------------------------------------------------------------


def special_token(content: str) -> tk.AddedToken:
    return tk.AddedToken(content, special=True, normalized=False)


def _byte_level_pipeline(backend: tk.Tokenizer) -> None:
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    # trim_offsets=False: a GPT-2 token such as " world" owns its leading space, so its offsets do too.
    backend.post_processor = processors.ByteLevel(trim_offsets=False)


def gpt2_backend(vocab: dict[str, int], merges: list[tuple[str, str]], specials: Sequence[str]) -> tk.Tokenizer:
    """GPT-2 byte-level BPE (no normalizer, GPT-2 split regex, byte alphabet)."""
    backend = tk.Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    _byte_level_pipeline(backend)
    backend.add_special_tokens([special_token(s) for s in specials])
    return backend


def openai_gpt_backend(vocab: dict[str, int], merges: list[tuple[str, str]], unk: str = GPT1_UNK) -> tk.Tokenizer:
    """GPT-1 BPE, built exactly as transformers' OpenAIGPTTokenizer (v5) builds it."""
    if unk not in vocab:
        raise TokenizerError(f"the GPT-1 vocabulary has no unknown token {unk!r}")
    backend = tk.Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            continuing_subword_prefix="",
            end_of_word_suffix="</w>",
            fuse_unk=False,
            unk_token=unk,
        )
    )
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.BPEDecoder(suffix="</w>")
    backend.add_special_tokens([special_token(unk)])
    return backend


def char_backend(chars: Sequence[str], specials: Sequence[str]) -> tk.Tokenizer:
    """One token per character: ids 0..n-1 are the sorted characters, specials follow."""
    # A BPE model with no merges and no pre-tokenizer splits text into characters, fast and with offsets.
    backend = tk.Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(chars)}, merges=[]))
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([special_token(s) for s in specials])
    return backend


def train_byte_level_bpe(
    files: Sequence[Path], vocab_size: int, min_frequency: int, specials: Sequence[str], show_progress: bool
) -> tk.Tokenizer:
    """Train a GPT-2-style byte-level BPE on text files; specials get ids 0..k-1, the 256 bytes follow."""
    if len(set(specials)) != len(specials):
        raise TokenizerError(f"special_tokens has duplicates: {list(specials)}")
    if not isinstance(vocab_size, int) or vocab_size <= 256 + len(specials):
        raise TokenizerError(
            f"vocab_size={vocab_size!r} is too small: it must exceed 256 byte tokens + {len(specials)} "
            f"special tokens = {256 + len(specials)}, to leave room for at least one merge"
        )
    for f in files:
        if not f.is_file():
            raise TokenizerError(f"training file {f} not found")
    backend = tk.Tokenizer(models.BPE(fuse_unk=False))
    _byte_level_pipeline(backend)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[special_token(s) for s in specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    backend.train([str(f) for f in files], trainer)
    return backend


# --- tiktoken's engine for OpenAI's GPT-2 -------------------------------------------------------------

# GPT-2's split regex as tiktoken runs it (tiktoken_ext.openai_public.r50k_pat_str): equal in effect to the
# one OpenAI published with GPT-2 (`'s|'t|...|\s+(?!\S)|\s+`), written to run faster.
GPT2_SPLIT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


def tiktoken_encoding(vocab: Mapping[str, int], *, exclude: Collection[str] = ()) -> Any:
    """A tiktoken Encoding over a byte-level vocabulary whose ids are its merge ranks (OpenAI's GPT-2), with
    GPT-2's split and no special tokens (`exclude` them: gptkit splits them out before encoding)."""
    import tiktoken

    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    ranks = {bytes(byte_of[c] for c in token): i for token, i in vocab.items() if token not in exclude}
    return tiktoken.Encoding("gptkit-byte-level", pat_str=GPT2_SPLIT, mergeable_ranks=ranks, special_tokens={})


def read_shipped(kind: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The vocabulary and merges shipped in gptkit/assets for a pretrained kind."""
    folder, vocab_name, merges_name = _SHIPPED[kind]
    root = importlib.resources.files("gptkit") / "assets" / folder
    source = f"gptkit/assets/{folder}/"
    try:
        vocab_text = (root / vocab_name).read_text(encoding="utf-8")
        merges_text = (root / merges_name).read_text(encoding="utf-8")
        vocab = json.loads(vocab_text)
    except (OSError, ValueError) as e:
        raise TokenizerError(f"cannot read the shipped tokenizer files in {source} (reinstall gptkit): {e}") from e
    vocab = parse_vocab(vocab, source + vocab_name)
    return vocab, parse_merges(merges_text, source + merges_name)


def gpt2_engine(backend: tk.Tokenizer) -> Any:
    """tiktoken's encoding of GPT-2 if `backend` encodes as OpenAI's GPT-2 (`_is_openai_gpt2`), else None: other
    vocabularies' merges need not follow tiktoken's rank order, so they encode through their pipeline."""
    return _gpt2_tiktoken() if _is_openai_gpt2(backend) else None


@functools.lru_cache(maxsize=1)
def _gpt2_tiktoken() -> Any:
    """tiktoken's encoding of GPT-2, built from the shipped vocabulary (once per process: ~30 ms)."""
    vocab, _ = read_shipped("gpt2")
    return tiktoken_encoding(vocab, exclude=(GPT2_EOS,))


def _is_openai_gpt2(backend: tk.Tokenizer) -> bool:
    """Whether a `tokenizers` pipeline encodes as OpenAI's GPT-2: its vocabulary and merges in a plain BPE, the
    byte-level split with nothing before it, and no added tokens but special ones (encode() splits those)."""
    split = backend.pre_tokenizer
    if not (
        backend.get_vocab_size(with_added_tokens=False) == GPT2_VOCAB_SIZE
        and backend.normalizer is None
        and isinstance(split, tk.pre_tokenizers.ByteLevel)
        and split.use_regex
        and not split.add_prefix_space
        and all(token.special for token in backend.get_added_tokens_decoder().values())
    ):
        return False
    options, tables = _bpe_state(backend)
    plain = not any(
        options.get(k) for k in ("dropout", "byte_fallback", "continuing_subword_prefix", "end_of_word_suffix")
    )
    return options.get("type") == "BPE" and plain and tables == _gpt2_tables()


def _bpe_state(backend: tk.Tokenizer) -> tuple[dict[str, Any], str]:
    """A BPE model's options, and a digest of its vocabulary and merges. The model serialises as
    {options..., "vocab": {by id}, "merges": [in order]}: the tables' text is the same however they were read."""
    state = backend.model.__getstate__()  # the model's JSON, as pickling stores it
    options, found, tables = state.partition(b',"vocab":')
    if not found:
        return {}, ""
    return json.loads(options + b"}"), hashlib.sha256(tables).hexdigest()


@functools.lru_cache(maxsize=1)
def _gpt2_tables() -> str:
    """The digest of OpenAI's GPT-2 vocabulary and merges as this process's `tokenizers` serialises them."""
    return _bpe_state(gpt2_backend(*read_shipped("gpt2"), [GPT2_EOS]))[1]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


# --- reading ----------------------------------------------------------------------------------


def read_json(path: Path) -> Any:
    """Parse a JSON file, or raise TokenizerError naming it."""
    return io.read_json(path, TokenizerError, missing="not found")


def parse_vocab(data: Any, source: str) -> dict[str, int]:
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in data.items()
    ):
        raise TokenizerError(f"{source} must be a JSON object mapping token strings to integer ids")
    return data


def parse_merges(text: str, source: str) -> list[tuple[str, str]]:
    """Merges in the `#version: 0.2` text format, one `left right` pair per line."""
    merges = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line or (number == 1 and line.startswith("#version")):
            continue
        pair = line.split(" ")
        if len(pair) != 2:
            raise TokenizerError(f"{source} line {number}: expected two space-separated symbols, got {line!r}")
        merges.append((pair[0], pair[1]))
    return merges


def _token_content(value: Any) -> str | None:
    # tokenizer_config.json writes a token either as a string or as an AddedToken dict
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _kind_of(config: Mapping[str, Any], directory: Path) -> str:
    """The kind a directory holds, as its config files state it (gptkit_kind, tokenizer_class, model_type)."""
    kind = config.get("gptkit_kind")
    if kind is not None:
        if kind not in KINDS:
            raise TokenizerError(
                f"{directory / 'tokenizer_config.json'}: unknown gptkit_kind {kind!r}; expected one of {list(KINDS)}"
            )
        return kind
    cls = config.get("tokenizer_class")
    if cls in _KIND_OF_HF_CLASS:
        return _KIND_OF_HF_CLASS[cls]
    if cls is None and (directory / "config.json").is_file():
        model_type = read_json(directory / "config.json").get("model_type")
        if model_type in _KIND_OF_MODEL_TYPE:
            return _KIND_OF_MODEL_TYPE[model_type]
    if cls is None:
        # OpenAI's own releases carry no config; their vocabulary file names are the format.
        for kind, names in _OPENAI_RELEASE_FILES.items():
            if all((directory / n).is_file() for n in names):
                return kind
        raise TokenizerError(
            f"{directory / 'tokenizer_config.json'} not found or names no tokenizer_class; "
            f"it must say which tokenizer {directory} holds"
        )
    raise TokenizerError(
        f"{directory / 'tokenizer_config.json'}: unsupported tokenizer_class {cls!r} and no gptkit_kind; "
        f"supported classes are {sorted(_KIND_OF_HF_CLASS)}"
    )


def load_dir(directory: Path) -> tuple[tk.Tokenizer, str, str | None]:
    """Load a gptkit, Hugging Face or OpenAI-release tokenizer directory: (backend, kind, eos_token)."""
    config_path = directory / "tokenizer_config.json"
    config = read_json(config_path) if config_path.is_file() else {}
    if not isinstance(config, dict):
        raise TokenizerError(f"{config_path} must hold a JSON object")
    kind = _kind_of(config, directory)
    unk = _token_content(config.get("unk_token"))
    eos = _token_content(config.get("eos_token"))

    tokenizer_json = directory / "tokenizer.json"
    if tokenizer_json.is_file():
        try:
            backend = tk.Tokenizer.from_file(str(tokenizer_json))
        except Exception as e:  # the Rust side raises plain Exception
            raise TokenizerError(f"{tokenizer_json} is not a valid tokenizers file: {e}") from None
        if kind in BYTE_LEVEL_KINDS:
            _byte_level_pipeline(backend)  # same split and decoding; guarantees untrimmed offsets
    elif kind in _OPENAI_RELEASE_FILES:
        names = ("vocab.json", "merges.txt")
        if not (directory / names[0]).is_file() and all((directory / n).is_file() for n in _OPENAI_RELEASE_FILES[kind]):
            names = _OPENAI_RELEASE_FILES[kind]
        vocab_path, merges_path = directory / names[0], directory / names[1]
        for path in (vocab_path, merges_path):
            if not path.is_file():
                raise TokenizerError(f"{path} not found (and there is no tokenizer.json in {directory})")
        vocab = parse_vocab(read_json(vocab_path), str(vocab_path))
        try:
            merges_text = merges_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise TokenizerError(f"cannot read {merges_path}: {e}") from e
        merges = parse_merges(merges_text, str(merges_path))
        if kind == "gpt2":
            named = dict.fromkeys(t for t in (unk, eos, GPT2_EOS) if t)
            backend = gpt2_backend(vocab, merges, [t for t in named if t in vocab])
        else:
            backend = openai_gpt_backend(vocab, merges, unk or GPT1_UNK)
    else:
        raise TokenizerError(f"{tokenizer_json} not found; a {kind!r} tokenizer is stored there")

    if kind == "gpt2" and eos is None and backend.token_to_id(GPT2_EOS) is not None:
        eos = GPT2_EOS  # transformers' GPT2Tokenizer default
    if eos is not None and backend.token_to_id(eos) is None:
        raise TokenizerError(f"{config_path}: eos_token {eos!r} is not in the vocabulary")
    return backend, kind, eos


# --- writing ----------------------------------------------------------------------------------


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"


def hf_files(backend: tk.Tokenizer, kind: str, eos: str | None) -> dict[str, str]:
    """The files of a tokenizer directory, name -> content."""
    serialized = backend.to_str()
    files = {"tokenizer.json": serialized}
    names: dict[str, str] = {}
    if kind == "gpt2":
        names = {"bos_token": eos, "eos_token": eos, "unk_token": eos} if eos else {}
    elif kind == "openai-gpt":
        unk = backend.model.unk_token
        names = {"unk_token": unk}
    elif eos:
        names = {"eos_token": eos}
    config: dict[str, Any] = {"gptkit_kind": kind, "tokenizer_class": _HF_CLASS[kind], **names}
    if kind == "gpt2":
        config.update(add_prefix_space=False, errors="replace")
    if kind == "openai-gpt":
        config["do_lower_case"] = True
    config["clean_up_tokenization_spaces"] = False
    files["tokenizer_config.json"] = _dumps(config)
    files["special_tokens_map.json"] = _dumps(names)
    if kind in ("gpt2", "openai-gpt"):
        model = json.loads(serialized)["model"]
        vocab = dict(sorted(model["vocab"].items(), key=lambda kv: kv[1]))
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        files["vocab.json"] = json.dumps(vocab, ensure_ascii=False) + "\n"
        files["merges.txt"] = "#version: 0.2\n" + "".join(m + "\n" for m in merges)
    return files
