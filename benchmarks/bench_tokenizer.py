"""Encode tinyshakespeare with gptkit and with tiktoken (same run, best of N) and print one JSON object.

    python benchmarks/bench_tokenizer.py [--repeat 5]

tiktoken's gpt2 encoding is built offline from ../shared/assets/gpt2/gpt2.tiktoken with the split pattern
tiktoken itself uses for gpt2 (tiktoken_ext.openai_public.r50k_pat_str): what `tiktoken.get_encoding("gpt2")`
builds, without the download.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from machine import SHARED, load_average, machine_info


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Fastest wall time of `repeat` calls (after one warm-up call), and the last result."""
    result = fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def measure(name: str, fn: Callable[[], list[int]], n_bytes: int, repeat: int) -> dict[str, Any]:
    seconds, ids = best_of(fn, repeat)
    return {
        "name": name,
        "tokens": len(ids),
        "seconds": round(seconds, 5),
        "MB_per_s": round(n_bytes / seconds / 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    corpus = SHARED / "data" / "tinyshakespeare.txt"
    ranks_file = SHARED / "assets" / "gpt2" / "gpt2.tiktoken"
    if not corpus.is_file() or not ranks_file.is_file():
        print(json.dumps({"skipped": f"{SHARED} is absent; nothing to measure"}))
        return

    import tiktoken
    import tiktoken.load
    from tiktoken_ext.openai_public import r50k_pat_str

    import gptkit.text.tokenizer
    from gptkit.text.tokenizer import Tokenizer

    machine = machine_info()
    text = corpus.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    n_bytes = len(text.encode("utf-8"))
    ours = Tokenizer.from_pretrained("gpt2")
    ranks = tiktoken.load.load_tiktoken_bpe(str(ranks_file))
    theirs = tiktoken.Encoding(
        name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256}
    )

    def flat(batches: list[list[int]]) -> list[int]:
        return [i for ids in batches for i in ids]

    gptkit_doc = measure("gptkit encode (whole text)", lambda: ours.encode(text), n_bytes, args.repeat)
    tiktoken_doc = measure("tiktoken encode_ordinary", lambda: theirs.encode_ordinary(text), n_bytes, args.repeat)
    gptkit_lines = measure("gptkit encode_batch (lines)", lambda: flat(ours.encode_batch(lines)), n_bytes, args.repeat)
    tiktoken_lines = measure(
        "tiktoken encode_ordinary_batch (lines)",
        lambda: flat(theirs.encode_ordinary_batch(lines)),
        n_bytes,
        args.repeat,
    )
    chunk_chars = gptkit.text.tokenizer.CHUNK_CHARS
    gptkit.text.tokenizer.CHUNK_CHARS = len(text)  # one engine call on the whole text, on one thread
    try:
        gptkit_unchunked = measure(
            "gptkit encode (whole text, unchunked)", lambda: ours.encode(text), n_bytes, args.repeat
        )
        unchunked_ids = ours.encode(text)
    finally:
        gptkit.text.tokenizer.CHUNK_CHARS = chunk_chars
    identical = ours.encode(text) == theirs.encode_ordinary(text) == unchunked_ids
    print(
        json.dumps(
            {
                "corpus": corpus.name,
                "bytes": n_bytes,
                "lines": len(lines),
                "machine": {**machine, "load_average_end": load_average()},
                "repeat": args.repeat,
                "identical_ids": identical,
                "gptkit_engine": "tiktoken" if ours._tiktoken is not None else "tokenizers",
                "gptkit": gptkit_doc,
                "tiktoken": tiktoken_doc,
                "ratio_vs_tiktoken": round(gptkit_doc["MB_per_s"] / tiktoken_doc["MB_per_s"], 3),
                "gptkit_unchunked": gptkit_unchunked,
                "unchunked_ratio_vs_tiktoken": round(gptkit_unchunked["MB_per_s"] / tiktoken_doc["MB_per_s"], 3),
                "gptkit_batch_lines": gptkit_lines,
                "tiktoken_batch_lines": tiktoken_lines,
                "batch_ratio_vs_tiktoken": round(gptkit_lines["MB_per_s"] / tiktoken_lines["MB_per_s"], 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
