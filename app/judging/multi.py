"""Several judges, one ranking: each judge's final ranks are combined by mean rank or Borda
count, and how far the judges agree (mean pairwise Kendall tau) is the ranking's consistency."""

from __future__ import annotations

from collections.abc import Sequence

from app.judging.ranking import competition_ranks, mean_consistency


def combine(per_judge: Sequence[Sequence[int]], method: str) -> tuple[list[int], list[float]]:
    """(final competition ranks, the per-candidate score they come from).

    mean: the mean of the judges' ranks (lower is better); borda: each judge gives a candidate
    one point per candidate it ranked strictly below it (ties share, so 1, 1, 3 gives 2, 2, 0),
    summed over judges (higher is better)."""
    k = len(per_judge[0])
    if method == "borda":
        points = [float(sum(sum(1 for r in ranks if r > ranks[i]) for ranks in per_judge)) for i in range(k)]
        return competition_ranks(points, higher_is_better=True), points
    if method != "mean":
        raise ValueError(f"unknown aggregation {method!r}")
    means = [sum(ranks[i] for ranks in per_judge) / len(per_judge) for i in range(k)]
    return competition_ranks(means, higher_is_better=False), means


def agreement(per_judge: Sequence[Sequence[int]]) -> float | None:
    """Mean Kendall tau over every pair of judges (1 = all agree, -1 = two judges reversed)."""
    return mean_consistency(per_judge)
