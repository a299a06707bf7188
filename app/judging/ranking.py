"""Pure functions over rankings: validation, presentation orders, aggregation, Kendall tau."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from trainer.formats import FormatError
from trainer.formats import validate_ranks as validate_ranking_rule


class InvalidJudgeReply(ValueError):
    """A judge reply that is not a usable ranking; the message says why."""


def validate_ranks(ranks: Sequence[object], k: int, *, allow_ties: bool) -> list[int]:
    """The reply's ranks as integers, valid by trainer.formats' rule for rankings: a permutation of
    1..k, or with ties a standard competition ranking (1, 1, 3, 4)."""
    if not isinstance(ranks, (list, tuple)):
        raise InvalidJudgeReply(f"ranks is not a list: {ranks!r:.80}")
    if len(ranks) != k:
        raise InvalidJudgeReply(f"{len(ranks)} ranks for {k} candidates")
    out = []
    for r in ranks:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or int(r) != r:
            raise InvalidJudgeReply(f"rank {r!r:.20} is not an integer")
        out.append(int(r))
    try:
        validate_ranking_rule(out, k, ties="competition" if allow_ties else "none")
    except FormatError as exc:
        raise InvalidJudgeReply(exc.message) from None
    return out


def competition_ranks(scores: Sequence[float], *, higher_is_better: bool, eps: float = 1e-9) -> list[int]:
    """1 + the number of items strictly better; equal scores share a rank."""
    sign = -1 if higher_is_better else 1
    keyed = [sign * s for s in scores]
    return [1 + sum(1 for o in keyed if o < v - eps) for v in keyed]


def presentation_orders(k: int, p: int, salt: int) -> list[list[int]]:
    """Order 0 as given, order 1 reversed, further orders seeded shuffles (distinct if possible)."""
    orders = [list(range(k))]
    if p > 1:
        orders.append(list(reversed(range(k))))
    rng = random.Random(salt)
    tries = 0
    while len(orders) < p:
        perm = list(range(k))
        rng.shuffle(perm)
        tries += 1
        if perm not in orders or tries > 50:
            orders.append(perm)
    return orders


def to_original(order: Sequence[int], presented_ranks: Sequence[int]) -> list[int]:
    """Ranks given to candidates as presented -> ranks of the candidates in their original order."""
    out = [0] * len(order)
    for position, original in enumerate(order):
        out[original] = presented_ranks[position]
    return out


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall tau-b between two rankings of the same items (1 = same order, -1 = reversed)."""
    concordant = discordant = ties_a = ties_b = 0
    n = len(a)
    for i in range(n):
        for j in range(i + 1, n):
            da, db = (a[i] > a[j]) - (a[i] < a[j]), (b[i] > b[j]) - (b[i] < b[j])
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif da == db:
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    return (concordant - discordant) / denom if denom else 1.0


def mean_consistency(rankings: Sequence[Sequence[float]]) -> float | None:
    """Mean Kendall tau over every pair of rankings; None with fewer than two."""
    pairs = [(i, j) for i in range(len(rankings)) for j in range(i + 1, len(rankings))]
    if not pairs:
        return None
    return sum(kendall_tau(rankings[i], rankings[j]) for i, j in pairs) / len(pairs)


def aggregate(rankings: Sequence[Sequence[int]]) -> tuple[list[int], list[float]]:
    """Mean rank per candidate over the orders, and the final competition ranks from it."""
    k = len(rankings[0])
    means = [sum(r[i] for r in rankings) / len(rankings) for i in range(k)]
    return competition_ranks(means, higher_is_better=False), means


def review_flags(
    final: Sequence[int], consistency: float | None, min_consistency: float, mean_ranks: Sequence[float] | None = None
) -> dict[str, str]:
    """Why a judge ranking needs a human look: {flag code (FlagReason): the detail}."""
    flags: dict[str, str] = {}
    if consistency is not None and consistency < min_consistency:
        flags["judge_inconsistent"] = f"judge orders disagree: Kendall tau {consistency:.2f} < {min_consistency:.2f}"
    top = [i + 1 for i, r in enumerate(final) if r == 1]
    if len(top) > 1:
        flags["top_tie"] = f"tie for first place between candidates {top}"
    elif mean_ranks is not None and len(mean_ranks) > 1:
        best, second = sorted(mean_ranks)[:2]
        if second - best < 1:
            flags["low_margin"] = f"the best candidate leads by {second - best:.2f} mean rank"
    return flags
