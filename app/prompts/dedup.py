"""Near-duplicate rules, shared by every path that stores a prompt (import, single add, synth,
the data import) and by the dataset-wide pass and the export's split groups.

- Normal form: Unicode NFKC, case-folded, runs of whitespace as one space (`normalize`).
- Similarity: the Jaccard index of the word unigrams and bigrams of the normal forms (the
  shingles synth's filter always used), compared exactly against
  `settings.synth_near_dup_threshold`. Texts with the same normal form have similarity 1.
- Candidates: MinHash LSH. Every prompt stores BANDS band keys in `prompt.lsh_keys` (GIN
  index): each a hash of the dataset id, the band number and ROWS MinHash values (datasketch's
  affine32 permutations). Two texts are candidates when they share a key, so a batch is checked
  against the stored prompts with one indexed join and only the candidates are compared.
  BANDS x ROWS = 3 x 4 finds a pair of similarity 0.8 in 79% of cases, 0.9 in 97%, 1.0 always;
  few keys keep imports fast (each key is one GIN entry).
- Clusters (the dataset-wide pass, export split groups): every prompt is compared with the
  oldest prompt sharing each of its keys, and verified pairs are joined with union-find. A
  bucket of many mutually dissimilar texts (templated prompts) thus costs one comparison per
  member, not one per pair; the price is that two near-duplicates meeting only in such a bucket,
  neither of them its oldest member, are not paired there.

The MinHash of a batch is computed with numpy for all its texts at once (`signatures`); a test
holds it equal to datasketch's `MinHash.update_batch` over the same shingles.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from datasketch import MinHash
from sqlalchemy.ext.asyncio import AsyncSession

from app.prompts import repository as repo

BANDS, ROWS = 3, 4
NUM_PERM = BANDS * ROWS
_PERM_A, _PERM_B = (p.astype(np.uint32) for p in MinHash(num_perm=NUM_PERM, seed=1, scheme="affine32").permutations)
_WS = re.compile(r"\s+")
_ASCII_WORD = np.array([chr(c).isalnum() or chr(c) == "_" for c in range(128)], dtype=bool)
_P = np.uint32(0x01000193)
_P_INV = np.uint32(pow(0x01000193, -1, 1 << 32))
_GOLDEN = np.uint32(0x9E3779B1)
_CHUNK = 8192  # shingles per numpy step: the (NUM_PERM, chunk) block stays in cache
# stored prompts looked at per key of a text, when a batch is small (repository.SMALL_BATCH)
CANDIDATES_PER_KEY = 4


def normalize(text: str) -> str:
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finalizer (datasketch's affine32 pre-mix)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _powers(base: np.uint32, n: int) -> np.ndarray:
    out = np.full(n, base, dtype=np.uint32)
    if n:  # a batch whose texts all normalise to nothing has no code points
        out[0] = 1
    return np.cumprod(out, dtype=np.uint32)


def _is_word(cp: np.ndarray) -> np.ndarray:
    """What `\\w` matches in Python's re (str.isalnum() or "_"), per code point."""
    word = _ASCII_WORD[np.minimum(cp, 127)]
    high = cp > 127
    if high.any():
        chars = np.unique(cp[high])
        alnum = np.array([chr(c).isalnum() for c in chars.tolist()], dtype=bool)
        word[high] = alnum[np.searchsorted(chars, cp[high])]
    return word


def _tokens(cp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token hashes, and the index of each token's text, from the code points of a batch (0
    separates texts). A token's hash is polynomial over its code points, from prefix sums."""
    text_break = cp == 0
    sep = ~_is_word(cp)
    n = len(cp)
    starts = np.flatnonzero(~sep & np.concatenate([[True], sep[:-1]]))
    ends = np.flatnonzero(~sep & np.concatenate([sep[1:], [True]])) + 1
    prefix = np.zeros(n + 1, dtype=np.uint32)
    np.cumsum(cp * _powers(_P, n), dtype=np.uint32, out=prefix[1:])
    tokens = (prefix[ends] - prefix[starts]) * _powers(_P_INV, n)[starts]
    return _fmix32(tokens ^ (ends - starts).astype(np.uint32)), np.cumsum(text_break)[starts]


def _shingle_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every text's shingles (uint32 hashes of its word unigrams and bigrams, maybe repeated),
    grouped by text: (hashes, how many per text).

    The batch is normalised as one string, NUL (which no stored text holds) between texts, with
    no Python loop per text or token. A text without a word character stands for one token made
    of its normal form."""
    cp = np.frombuffer(unicodedata.normalize("NFKC", "\x00".join(texts)).casefold().encode("utf-32-le"), dtype=np.uint32)
    tokens, text_of = _tokens(cp)
    counts = np.bincount(text_of, minlength=len(texts))
    if not counts.all():  # rare: stand-ins of word characters for texts without any
        return _shingle_hashes([t if c else "x" + normalize(t).encode().hex() for t, c in zip(texts, counts, strict=True)])
    same_text = text_of[:-1] == text_of[1:]
    bigrams = tokens[:-1][same_text] * _GOLDEN + tokens[1:][same_text]
    owner = np.concatenate([text_of, text_of[:-1][same_text]])
    order = np.argsort(owner, kind="stable")
    return np.concatenate([tokens, bigrams])[order], 2 * counts - 1


def shingle_sets(texts: Sequence[str]) -> list[set[int]]:
    if not texts:
        return []
    flat, sizes = _shingle_hashes(texts)
    bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    values = flat.tolist()
    return [set(values[a:b]) for a, b in itertools.pairwise(bounds)]


def jaccard(a: set[int], b: set[int]) -> float:
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter) if a or b else 1.0


def similarity(a: str, b: str) -> float:
    x, y = shingle_sets([a, b])
    return jaccard(x, y)


def signatures(texts: Sequence[str]) -> np.ndarray:
    """(len(texts), NUM_PERM) uint32 MinHash values: row i equals datasketch's
    MinHash(num_perm=NUM_PERM, seed=1).update_batch over the shingles of texts[i] (with the
    identity as hash function: the shingles are hashes already)."""
    n = len(texts)
    raw, sizes = _shingle_hashes(texts)
    hashed = _fmix32(raw)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    sig = np.empty((NUM_PERM, n), dtype=np.uint32)
    lo = 0
    while lo < n:  # whole texts per step
        hi = max(int(np.searchsorted(starts, starts[lo] + _CHUNK, side="right")), lo + 1)
        a, b = starts[lo], (starts[hi] if hi < n else len(hashed))
        block = _PERM_A[:, None] * hashed[None, a:b]
        block += _PERM_B[:, None]
        sig[:, lo:hi] = np.minimum.reduceat(block, starts[lo:hi] - a, axis=1)
        lo = hi
    return sig.T


def lsh_keys(texts: Sequence[str], dataset_id: int) -> np.ndarray:
    """(len(texts), BANDS) int64: the band keys stored in `prompt.lsh_keys`."""
    sigs = signatures(texts).astype(np.uint64)
    out = np.empty((len(texts), BANDS), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for band in range(BANDS):
            k = np.full(len(texts), (dataset_id * 0x9E3779B97F4A7C15 + (band + 1) * 0xBF58476D1CE4E5B9) % (1 << 64), dtype=np.uint64)
            for column in sigs[:, band * ROWS : (band + 1) * ROWS].T:
                k = (k ^ column) * np.uint64(0x100000001B3)
            k ^= k >> np.uint64(33)
            k *= np.uint64(0xFF51AFD7ED558CCD)
            k ^= k >> np.uint64(33)
            out[:, band] = k
    return out.view(np.int64)


@dataclass(frozen=True, slots=True)
class Match:
    """Text `index` of a batch nearly duplicates stored prompt `prompt_id`, or (`earlier` set)
    the text at index `earlier` of the same batch, whose prompt id is known once it is stored."""

    index: int
    prompt_id: int | None
    similarity: float
    earlier: int | None = None

    def details(self, prompt_id: int | None = None) -> dict:
        return {"prompt_id": self.prompt_id if prompt_id is None else prompt_id, "similarity": round(self.similarity, 4)}


def best_matches(pairs: Iterable[tuple[int, int, str, str]], threshold: float) -> dict[int, Match]:
    """From candidate pairs (index, prompt id, text, stored text): each index's most similar
    prompt at or above the threshold (ties: the oldest)."""
    pairs = list(pairs)
    sets = shingle_sets([t for _, _, a, b in pairs for t in (a, b)])
    best: dict[int, Match] = {}
    for n, (index, prompt_id, _, _) in enumerate(pairs):
        s = jaccard(sets[2 * n], sets[2 * n + 1])
        if s >= threshold:
            old = best.get(index)
            if old is None or (s, -prompt_id) > (old.similarity, -old.prompt_id):
                best[index] = Match(index, prompt_id, s)
    return best


def first_come(stored: dict[int, Match], within: Iterable[tuple[int, int, float]], *, skip: bool) -> list[Match]:
    """Each text's match, in batch order: its stored near-duplicate (`stored`, from best_matches)
    or an earlier text of the batch it nearly duplicates (`within`: verified pairs (index, earlier
    index, similarity)), the most similar (ties: the stored prompt, then the earliest text). With
    `skip`, a text left out is nobody's match: later texts count against what is stored."""
    earlier: dict[int, list[tuple[int, float]]] = {}
    for index, before, s in within:
        earlier.setdefault(index, []).append((before, s))
    out: list[Match] = []
    dropped: set[int] = set()
    for index in sorted(stored.keys() | earlier.keys()):
        options = [stored[index]] if index in stored else []
        options += [Match(index, None, s, before) for before, s in earlier.get(index, ()) if before not in dropped]
        if options:
            out.append(max(options, key=lambda m: (m.similarity, m.earlier is None, -(m.earlier or 0))))
            if skip:
                dropped.add(index)
    return out


async def find_near_duplicates(
    session: AsyncSession, dataset_id: int, texts: Sequence[str], threshold: float, *, exclude_ids: Sequence[int] = ()
) -> tuple[list[Match | None], np.ndarray]:
    """Each text's near-duplicate among the dataset's stored prompts (None: none), and the texts'
    band keys (to store with them). One indexed query for the whole batch."""
    keys = lsh_keys(texts, dataset_id)
    rows = await repo.lsh_candidates(session, dataset_id, keys, CANDIDATES_PER_KEY, exclude_ids)
    best = best_matches(((i, pid, texts[i], stored) for i, pid, stored in rows), threshold)
    return [best.get(i) for i in range(len(texts))], keys


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        root = x
        while (up := self.parent.get(root, root)) != root:
            root = up
        while (up := self.parent.get(x, x)) != root:
            self.parent[x] = root
            x = up
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # the smaller id is the root: a group's root is its oldest member
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class Clusters:
    """Near-duplicate pairs (a, b, similarity), a > b, and the groups they form (root = min id)."""

    pairs: list[tuple[int, int, float]] = field(default_factory=list)
    groups: dict[int, list[int]] = field(default_factory=dict)
    unkeyed: int = 0


def group(edges: Iterable[tuple[int, int]]) -> dict[int, list[int]]:
    """Connected components of the edges: {root (min id): sorted members}, singletons left out."""
    uf = _UnionFind()
    for a, b in edges:
        uf.union(a, b)
    out: dict[int, list[int]] = {}
    for x in uf.parent:
        out.setdefault(uf.find(x), []).append(x)
    for root, members in out.items():
        if root not in members:
            members.append(root)
        members.sort()
    return out


VERIFY_BATCH = 20_000


async def cluster(session: AsyncSession, dataset_id: int, threshold: float, *, count_unkeyed: bool = True) -> Clusters:
    """The dataset's near-duplicate pairs and clusters, from the stored band keys (and how many
    prompts have none, with `count_unkeyed`)."""
    candidates = await repo.lsh_star_pairs(session, dataset_id)
    pairs: list[tuple[int, int, float]] = []
    for lo in range(0, len(candidates), VERIFY_BATCH):
        chunk = candidates[lo : lo + VERIFY_BATCH]
        texts = await repo.texts_of(session, {i for pair in chunk for i in pair})
        found = best_pairs(chunk, texts, threshold)
        pairs.extend(found)
    unkeyed = await repo.count_unkeyed(session, dataset_id) if count_unkeyed else 0
    return Clusters(pairs=pairs, groups=group((a, b) for a, b, _ in pairs), unkeyed=unkeyed)


def pair_similarities(texts: Sequence[str], pairs: np.ndarray) -> np.ndarray:
    """`jaccard` of the shingle sets of texts[a] and texts[b] for each row (a, b) of `pairs`, for
    all of them at once: every (text, shingle) once in one sorted array, and each shingle of a
    looked up under b by binary search."""
    if not len(pairs):
        return np.zeros(0)
    flat, sizes = _shingle_hashes(texts)
    keys = np.sort(np.repeat(np.arange(len(texts), dtype=np.uint64) << np.uint64(32), sizes) | flat.astype(np.uint64))
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
    owner = (keys >> np.uint64(32)).astype(np.int64)
    counts = np.bincount(owner, minlength=len(texts))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    a, b = pairs[:, 0], pairs[:, 1]
    n = counts[a]
    pos = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n) + np.repeat(starts[a], n)
    wanted = np.repeat(b.astype(np.uint64) << np.uint64(32), n) | (keys[pos] & np.uint64(0xFFFFFFFF))
    found = keys[np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)] == wanted
    inter = np.bincount(np.repeat(np.arange(len(pairs)), n)[found], minlength=len(pairs))
    union = counts[a] + counts[b] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def best_pairs(candidates: Sequence[tuple[int, int]], texts: dict[int, str], threshold: float) -> list[tuple[int, int, float]]:
    """The candidate pairs at or above the threshold, as (later id, earlier id, similarity)."""
    if not candidates:
        return []
    ids = sorted({i for pair in candidates for i in pair})
    index = {i: n for n, i in enumerate(ids)}
    sims = pair_similarities([texts[i] for i in ids], np.array([(index[a], index[b]) for a, b in candidates], dtype=np.int64))
    return [(max(a, b), min(a, b), s) for (a, b), s in zip(candidates, sims.tolist(), strict=True) if s >= threshold]


KEY_BATCH = 5000


async def ensure_keys(session: AsyncSession, dataset_id: int, after_id: int = 0) -> int:
    """Band keys for the dataset's prompts that have none (written before migration 0008 kept
    them, or straight into the table); the number keyed."""
    done, after = 0, after_id
    while rows := await repo.unkeyed_page(session, dataset_id, after, KEY_BATCH):
        await repo.set_lsh_keys(session, [i for i, _ in rows], lsh_keys([t for _, t in rows], dataset_id))
        done += len(rows)
        after = rows[-1][0]
    return done
