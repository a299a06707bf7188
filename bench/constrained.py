"""The local server's speed with and without constrained decoding (response_format).

    OMP_NUM_THREADS=1 python bench/constrained.py                  # Gemma 3 270M (needs the local-llm extra)
    OMP_NUM_THREADS=1 python bench/constrained.py --model tiny

Prints the load time (the first run includes the GGUF conversion), the time to build
llguidance's view of the tokenizer, tokens/s of a judge's listwise reply free and constrained
(and whether the constrained one is valid), and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

from app.judging import templates as tpl
from trainer.serve import ChatModel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--max-tokens", type=int, default=400)
    ap.add_argument("--seeds", type=int, default=1)
    args = ap.parse_args()
    t0 = time.perf_counter()
    chat = ChatModel(args.model)
    print(f"load (with any GGUF conversion): {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    chat.grammars()
    print(f"llguidance tokenizer view: {time.perf_counter() - t0:.2f} s")
    shown = [(i, f"Answer {i}: rain falls softly on the roofs.") for i in range(1, 5)]
    messages = tpl.BUILTIN["listwise"].render(k=4, allow_ties=False, aspects=[], data=tpl.data_block("Write a haiku about rain.", shown))
    for label, extra in (("free", {}), ("constrained", {"response_format": tpl.listwise_format(4)})):
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            r = chat.chat_completion({"messages": messages, "max_tokens": args.max_tokens, "temperature": 0.7, "seed": seed, **extra})
            seconds, n = time.perf_counter() - t0, r["usage"]["completion_tokens"]
            text = r["choices"][0]["message"]["content"]
            valid = sorted(json.loads(text)["ranks"]) == [1, 2, 3, 4] if extra else None
            print(f"{label} seed {seed}: {n} tokens in {seconds:.1f} s = {n / seconds:.1f} tok/s, valid {valid}: {text[:80]!r}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
