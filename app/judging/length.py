"""Length bias: do longer answers win? Figures over rankings, the matched-length view of the
candidates, and the flag for a winner much longer than the rest."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from scipy.stats import rankdata, spearmanr

TRUNCATED = " [truncated]"


def length_rank_spearman(rankings: Iterable[tuple[Sequence[int], Sequence[int]]]) -> dict[str, float | int | None]:
    """Spearman correlation between the judge's rank and the length rank (1 = longest) within
    each ranking, pooled over the rankings: +1 = the longest answer always wins, 0 = no length
    preference, -1 = the shortest always wins. Lengths are ranked within their ranking so that
    prompts drawing long answers weigh no more than others. Input: (ranks, lengths) per ranking."""
    xs: list[float] = []
    ys: list[float] = []
    n = 0
    for ranks, lengths in rankings:
        if len(ranks) < 2:
            continue
        n += 1
        xs.extend(float(r) for r in ranks)
        ys.extend(float(r) for r in rankdata([-x for x in lengths]))
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return {"spearman": None, "p_value": None, "rankings": n}
    rho, p = spearmanr(xs, ys)
    rho, p = float(rho), float(p)
    return {"spearman": None if math.isnan(rho) else rho, "p_value": None if math.isnan(p) else p, "rankings": n}


def matched(texts: Sequence[str]) -> tuple[list[str], int, bool]:
    """Every text cut to the shortest one's length (a cut text ends with TRUNCATED): (texts, length, any cut)."""
    shortest = min(len(t) for t in texts)
    out = [t if len(t) <= shortest else t[:shortest] + TRUNCATED for t in texts]
    return out, shortest, any(len(t) > shortest for t in texts)


def matched_note(length: int) -> str:
    return (
        f"To compare quality rather than length, every candidate was cut to {length} characters (the shortest "
        f"candidate's length); a cut candidate ends with '{TRUNCATED.strip()}'. Judge what is shown; do not "
        "penalise a candidate for being cut."
    )


def winner_much_longer(ranks: Sequence[int], lengths: Sequence[int], ratio: float) -> str | None:
    """The length_bias detail when the single winner is at least `ratio` times longer than every other candidate."""
    top = [i for i, r in enumerate(ranks) if r == 1]
    if len(top) != 1 or len(ranks) < 2:
        return None
    w = top[0]
    longest_other = max(n for i, n in enumerate(lengths) if i != w)
    if lengths[w] >= ratio * max(longest_other, 1):
        return f"the winner (candidate {w + 1}) has {lengths[w]} characters, ≥ {ratio:g}× every other (longest other {longest_other})"
    return None
