"""Small synthetic exports with a verifiable answer, for tests, the bench and the examples.

The task is single-digit addition: the prompt ``"3+4="``, the completion ``"7"``. An RM record
gives K candidate sums ranked by their distance from the true sum (equal distances tie). Every
file follows ``trainer.formats``, so the trainer reads them exactly as it reads real exports.
"""

from __future__ import annotations

import random

from trainer.formats import RLRecord, RMRecord, SFTRecord


def addition_prompt(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    return f"{a}+{b}=", a + b


def sft_records(n: int, seed: int = 0) -> list[SFTRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt, total = addition_prompt(rng)
        out.append(SFTRecord(prompt=prompt, completion=str(total), id=f"sft-{i}"))
    return out


def rm_records(n: int, k: int = 4, seed: int = 0) -> list[RMRecord]:
    """K distinct candidate sums per prompt, ranked by |candidate - sum| (1 = correct)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt, total = addition_prompt(rng)
        candidates = {total}
        while len(candidates) < k:
            candidates.add(rng.randint(0, 18))
        completion = list(candidates)
        rng.shuffle(completion)
        errors = [abs(c - total) for c in completion]
        levels = sorted(set(errors))
        ranking = [levels.index(e) + 1 for e in errors]
        out.append(RMRecord(prompt=prompt, completion=[str(c) for c in completion], ranking=ranking, id=f"rm-{i}"))
    return out


def rl_records(n: int, seed: int = 0) -> list[RLRecord]:
    rng = random.Random(seed)
    return [RLRecord(prompt=addition_prompt(rng)[0], id=f"rl-{i}") for i in range(n)]


def text_records(n: int, seed: int = 0, min_len: int = 16, max_len: int = 200) -> list[SFTRecord]:
    """Prompts and completions of varied length (for throughput benchmarks)."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz     "

    def text(lo: int, hi: int) -> str:
        return "".join(rng.choice(letters) for _ in range(rng.randint(lo, hi))).strip() or "x"

    return [SFTRecord(prompt=text(min_len, max_len // 2), completion=text(min_len, max_len)) for _ in range(n)]
