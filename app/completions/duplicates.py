"""Duplicate completions of one prompt.

- Exact duplicate: the same text as a completion the prompt already has. It is not stored
  again: generation records it in its run item's result (`duplicates`: the sample, the
  completion it repeats, and what it cost), a person adding it gets a 409 naming the first.
- Near-identical: the same text up to case, whitespace and Unicode form, or a word-shingle
  Jaccard index of at least NEAR_IDENTICAL (app/prompts/dedup.py's measure). It is stored,
  flagged `near_duplicate`, with meta.flag_details naming the completion it resembles.

Answers to one prompt share its words, so "near-identical" is set higher than the threshold for
prompts: two different answers of similar length often reach 0.7, rarely 0.9.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.models import FlagReason
from app.prompts.dedup import jaccard, shingle_sets

NEAR_IDENTICAL = 0.9


@dataclass(frozen=True, slots=True)
class Duplicate:
    of: int  # the completion id it duplicates
    exact: bool
    similarity: float

    def flag_details(self) -> dict:
        return {"completion_id": self.of, "similarity": round(self.similarity, 4)}


def find(text: str, existing: Sequence[tuple[int, str]], shingles: dict[str, set[int]] | None = None) -> Duplicate | None:
    """The completion (id, text) `text` repeats exactly (the first), else the one it nearly
    repeats (the most similar), else None. `shingles`: text -> its shingle set, filled in here
    (`remember` fills it for many texts at once)."""
    for cid, other in existing:
        if other == text:
            return Duplicate(cid, True, 1.0)
    if not existing:
        return None
    memo = remember(shingles if shingles is not None else {}, [text, *(t for _, t in existing)])
    mine = memo[text]
    best, neg_id = max((jaccard(mine, memo[t]), -cid) for cid, t in existing)
    return Duplicate(-neg_id, False, best) if best >= NEAR_IDENTICAL else None


def remember(shingles: dict[str, set[int]], texts: Sequence[str]) -> dict[str, set[int]]:
    """`shingles` with the shingle sets of `texts` it lacks, computed in one pass."""
    missing = list(dict.fromkeys(t for t in texts if t not in shingles))
    if missing:
        shingles.update(zip(missing, shingle_sets(missing), strict=True))
    return shingles


def flag(meta: dict | None, flags: list[str] | None, dup: Duplicate) -> tuple[dict, list[str]]:
    """meta and flag_reasons of a near-identical completion."""
    meta = dict(meta or {})
    meta["flag_details"] = {**meta.get("flag_details", {}), "near_duplicate": dup.flag_details()}
    flags = list(flags or [])
    if FlagReason.near_duplicate.value not in flags:
        flags.append(FlagReason.near_duplicate.value)
    return meta, flags
