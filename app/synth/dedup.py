"""Exact and near-duplicate filters for new prompts (Self-Instruct keeps a prompt only if it is
not too similar to any existing one): MinHash over word unigrams and bigrams, LSH to find
candidates, the estimated Jaccard against the threshold to decide."""

from __future__ import annotations

import re

from datasketch import MinHash, MinHashLSH

from app.prompts.hashing import content_hash

NUM_PERM = 128
_TOKEN = re.compile(r"\w+", re.UNICODE)


def shingles(text: str) -> set[bytes]:
    words = _TOKEN.findall(text.lower())
    grams = set(words) | {f"{a} {b}" for a, b in zip(words, words[1:])}
    return {g.encode() for g in grams} or {text.encode()}


def minhash(text: str) -> MinHash:
    m = MinHash(num_perm=NUM_PERM)
    m.update_batch(list(shingles(text)))
    return m


class NearDupIndex:
    """The committed prompts of one dataset, added in id order (`last_id` is the newest seen)."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.last_id = 0
        self._lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
        self._minhashes: dict[int, MinHash] = {}
        self._hashes: set[bytes] = set()

    def add(self, prompt_id: int, text: str) -> None:
        m = minhash(text)
        self._hashes.add(content_hash(text))
        self._minhashes[prompt_id] = m
        self._lsh.insert(prompt_id, m)
        self.last_id = max(self.last_id, prompt_id)

    def _near(self, m: MinHash) -> bool:
        return any(self._minhashes[key].jaccard(m) >= self.threshold for key in self._lsh.query(m))

    def filter_new(self, texts: list[str]) -> tuple[list[str], int, int]:
        """(kept, exact duplicates, near duplicates) against the index and each other; the index
        itself is not changed (it learns rows once they are committed)."""
        kept: list[str] = []
        kept_hashes: set[bytes] = set()
        kept_minhashes: list[MinHash] = []
        exact = near = 0
        for text in texts:
            text = text.strip()
            if not text:
                continue
            h = content_hash(text)
            if h in self._hashes or h in kept_hashes:
                exact += 1
                continue
            m = minhash(text)
            if self._near(m) or any(o.jaccard(m) >= self.threshold for o in kept_minhashes):
                near += 1
                continue
            kept.append(text)
            kept_hashes.add(h)
            kept_minhashes.append(m)
        return kept, exact, near
