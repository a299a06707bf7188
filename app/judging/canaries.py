"""Canaries: known-answer control items (a prompt, a certainly better answer, a certainly worse
one) judged before a run's own items. The judge's accuracy on them goes to the run's result; a
judge below the run's `min_accuracy` stops the run before it ranks anything. Canary rankings are
never stored as rankings of the dataset.

The first chunk of a run to get here judges the canaries while holding a lock on the run (a
Postgres advisory lock), the others wait and read its report; a resumed run asks again."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from app.judging import repository as repo
from app.judging.ranking import InvalidJudgeReply
from app.judging.schemas import Canaries, CanaryPair
from app.llm import LLMCallFailed
from app.llm import cache as llm_cache
from app.runs.protocol import Item, ItemOutcome

# answers of like length and form, one of them plainly wrong
BUILTIN = [
    CanaryPair(prompt="What is 17 + 25?", better="17 + 25 = 42.", worse="17 + 25 = 52."),
    CanaryPair(prompt="What is the capital of France?", better="The capital of France is Paris.",
               worse="The capital of France is Lyon."),
    CanaryPair(prompt="How many days are there in a leap year?", better="A leap year has 366 days.",
               worse="A leap year has 365 days."),
    CanaryPair(prompt="What is the chemical symbol for gold?", better="The chemical symbol for gold is Au.",
               worse="The chemical symbol for gold is Ag."),
    CanaryPair(prompt="Which planet is closest to the Sun?", better="Mercury is the planet closest to the Sun.",
               worse="Venus is the planet closest to the Sun."),
    CanaryPair(prompt="What is 9 times 8?", better="9 times 8 is 72.", worse="9 times 8 is 81."),
]

# (item, [(id, text), ...], outcome) -> the judge's row for those candidates
Judge = Callable[[Item, list[tuple[int, str]], ItemOutcome], Awaitable[dict[str, Any]]]


def pairs(spec: Canaries) -> list[CanaryPair]:
    return (BUILTIN if spec.builtin else []) + list(spec.items)


async def evaluate(spec: Canaries, judge: Judge) -> tuple[dict[str, Any], ItemOutcome]:
    """Judge every canary (the better answer shown first in every other one) and score the judge."""
    outcome = ItemOutcome()
    items = []
    per_judge: dict[str, list[bool]] = {}
    for n, pair in enumerate(pairs(spec)):
        cands = [(1, pair.better), (2, pair.worse)] if n % 2 == 0 else [(2, pair.worse), (1, pair.better)]
        entry: dict[str, Any] = {"prompt": pair.prompt[:200]}
        try:
            row = await judge(Item(index=-1 - n, prompt_id=n + 1, prompt_text=pair.prompt), cands, outcome)
            by_id = dict(zip((c for c, _ in cands), row["ranks"], strict=True))
            entry.update(correct=by_id[1] < by_id[2], better_rank=by_id[1], worse_rank=by_id[2])
            for j in row["details"].get("judges", []):  # several judges: each one's own answer
                mine = dict(zip((c for c, _ in cands), j["ranks"], strict=True))
                per_judge.setdefault(j["model"], []).append(mine[1] < mine[2])
        except (InvalidJudgeReply, LLMCallFailed) as exc:
            entry.update(correct=False, error=str(getattr(exc, "reason", None) or exc)[:300])
        items.append(entry)
    correct = sum(e["correct"] for e in items)
    accuracy = correct / len(items) if items else None
    by_judge = {model: sum(right) / len(right) for model, right in per_judge.items()}
    # the panel, and every judge on it, must reach the accuracy
    passed = all(a >= spec.min_accuracy for a in [accuracy if accuracy is not None else 1.0, *by_judge.values()])
    report = {
        "total": len(items), "correct": correct, "accuracy": accuracy, "min_accuracy": spec.min_accuracy,
        "passed": passed, "by_judge": by_judge, "items": items,
        "prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens, "cost": str(outcome.cost),
    }
    return report, outcome


def failure(report: dict[str, Any]) -> str:
    low = [f"{m} {a:.2f}" for m, a in report.get("by_judge", {}).items() if a < report["min_accuracy"]]
    judges = f"; below it: {', '.join(low)}" if low else ""
    return (
        f"canaries: the judge ranked {report['correct']} of {report['total']} known-answer pairs right "
        f"(accuracy {report['accuracy']:.2f}, at least {report['min_accuracy']:.2f} needed{judges}); "
        "the run stopped before ranking"
    )


async def gate(rt, run_id: int, spec: Canaries, judge: Judge) -> tuple[str | None, ItemOutcome | None]:
    """(None when the judge passed the canaries, else why the run stopped; the usage of the
    canaries when this call judged them, for one of the run's items to carry, so that the run's
    cost and budget count them)."""
    outcome = None
    async with rt.sessions() as session, session.begin():
        status, error, result = await repo.lock_run_for_gate(session, run_id)
        report = result.get("canaries")
        if status != "running":
            return error or f"run {run_id} is {status}", None
        if report is None or not report["passed"]:  # not asked yet, or a resumed run asks again
            report, outcome = await evaluate(spec, judge)
            await repo.set_run_result(session, run_id, "canaries", report)
            await llm_cache.store(session, outcome.cache_rows)
            if not report["passed"]:
                await repo.stop_run(session, run_id, failure(report))
    return (None if report["passed"] else failure(report)), outcome
