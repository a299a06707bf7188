"""Agreement figures: judge vs human, and between humans where items were reviewed more than once.

Judge vs human compares, for every approval, the judge's ranking the reviewer was shown with
the ranking they endorsed (their own re-rank, or the judge's when they approved it as is), on
the completions both rank:

- confirmed_unchanged: share of approvals whose endorsed ranks equal the judge's exactly;
- top1_agreement: share where the set of completions ranked first is the same;
- mean_kendall_tau: mean Kendall tau-b (ties handled) where it is defined.

Length bias per judge model and template, over all its rankings of the dataset (reviewed or
not): `length_rank_spearman` (app.judging.length), +1 when the longest answer always wins.

Between humans (items with two or more approving reviewers): Krippendorff's alpha (ordinal; the
units are the item's completions, the values their ranks) and the mean of Kendall's W per item.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

import krippendorff
import numpy as np
from scipy.stats import kendalltau, rankdata

from app.judging.length import length_rank_spearman
from app.review.repository import VerdictPair

JudgeLengths = tuple[str | None, str | None, list[int], list[int]]  # model, template, ranks, lengths


def aligned(ids_a: Sequence[int], ranks_a: Sequence[int], ids_b: Sequence[int], ranks_b: Sequence[int]) -> tuple[list[int], list[int]]:
    """The two rankings' ranks over the completions both contain, in completion-id order."""
    a, b = dict(zip(ids_a, ranks_a)), dict(zip(ids_b, ranks_b))
    common = sorted(a.keys() & b.keys())
    return [a[i] for i in common], [b[i] for i in common]


def top_set(ranks: Sequence[int]) -> set[int]:
    best = min(ranks)
    return {i for i, r in enumerate(ranks) if r == best}


def tau(a: Sequence[int], b: Sequence[int]) -> float | None:
    if len(a) < 2:
        return None
    value = kendalltau(a, b).statistic
    return None if math.isnan(value) else float(value)


def kendalls_w(rankings: Sequence[Sequence[int]]) -> float | None:
    """Kendall's coefficient of concordance for m raters over the same n objects, with the tie
    correction; None when undefined (n < 2, m < 2, or every rater tied everything)."""
    m, n = len(rankings), len(rankings[0]) if rankings else 0
    if m < 2 or n < 2:
        return None
    r = np.array([rankdata(row) for row in rankings])  # ties -> average ranks
    totals = r.sum(axis=0)
    s = float(((totals - totals.mean()) ** 2).sum())
    ties = sum(float((c**3 - c).sum()) for c in (np.unique(row, return_counts=True)[1] for row in r))
    denominator = m**2 * (n**3 - n) - m * ties
    return None if denominator == 0 else 12 * s / denominator


def _mean(values: Iterable[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def judge_figures(pairs: Sequence[VerdictPair]) -> dict:
    compared = [p for p in pairs if p.judge_ids is not None and p.human_ids is not None]
    unchanged, top1, taus = [], [], []
    for p in compared:
        j, h = aligned(p.judge_ids, p.judge_ranks, p.human_ids, p.human_ranks)
        unchanged.append(set(p.judge_ids) == set(p.human_ids) and j == h)
        top1.append(bool(j) and top_set(j) == top_set(h))
        taus.append(tau(j, h))
    n = len(compared)
    return {
        "reviewed": n,
        "confirmed_unchanged": sum(unchanged) / n if n else None,
        "top1_agreement": sum(top1) / n if n else None,
        "mean_kendall_tau": _mean(taus),
    }


def by_judge(pairs: Sequence[VerdictPair], lengths: Sequence[JudgeLengths] = ()) -> list[dict]:
    groups: dict[tuple[str | None, str | None], list[VerdictPair]] = defaultdict(list)
    for p in pairs:
        if p.judge_ids is not None:
            groups[(p.judge_model, p.template_version)].append(p)
    by_length: dict[tuple[str | None, str | None], list[tuple[list[int], list[int]]]] = defaultdict(list)
    for model, version, ranks, lens in lengths:
        by_length[(model, version)].append((ranks, lens))
        groups.setdefault((model, version), [])
    out = []
    for (model, version), group in sorted(groups.items(), key=lambda kv: (kv[0][0] or "", kv[0][1] or "")):
        bias = length_rank_spearman(by_length.get((model, version), []))
        out.append({"judge_model": model, "template_version": version, **judge_figures(group),
                    "rankings": bias["rankings"], "length_rank_spearman": bias["spearman"]})
    return out


def inter_annotator(pairs: Sequence[VerdictPair]) -> dict:
    per_item: dict[int, dict[str, dict[int, int]]] = defaultdict(dict)
    for p in pairs:
        if p.human_ids is not None:
            per_item[p.prompt_id][p.reviewer] = dict(zip(p.human_ids, p.human_ranks))
    items = {pid: by_reviewer for pid, by_reviewer in per_item.items() if len(by_reviewer) >= 2}
    reviewers = sorted({r for by_reviewer in items.values() for r in by_reviewer})
    units: list[tuple[int, int]] = []
    ws = []
    for pid, by_reviewer in sorted(items.items()):
        common = sorted(set.intersection(*(set(m) for m in by_reviewer.values())))
        units += [(pid, cid) for cid in common]
        ws.append(kendalls_w([[m[c] for c in common] for m in by_reviewer.values()]) if len(common) >= 2 else None)
    alpha = None
    if units:
        data = np.full((len(reviewers), len(units)), np.nan)
        for col, (pid, cid) in enumerate(units):
            for row, reviewer in enumerate(reviewers):
                rank = items[pid].get(reviewer, {}).get(cid)
                if rank is not None:
                    data[row, col] = rank
        try:
            alpha = float(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal"))
        except ValueError:  # one value only: agreement is undefined
            alpha = None
        if alpha is not None and math.isnan(alpha):
            alpha = None
    return {"items": len(items), "reviewers": len(reviewers), "krippendorff_alpha": alpha, "mean_kendall_w": _mean(ws)}


def report(dataset_id: int, pairs: Sequence[VerdictPair], lengths: Sequence[JudgeLengths] = ()) -> dict:
    return {
        "dataset_id": dataset_id,
        "overall": judge_figures([p for p in pairs if p.judge_ids is not None]),
        "by_judge": by_judge(pairs, lengths),
        "inter_annotator": inter_annotator(pairs),
    }
