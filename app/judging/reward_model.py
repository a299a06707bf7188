"""Judge mode `reward_model`: a reward model trained by `rlhf-forge train rm` ranks a prompt's
completions by score, so that after people have reviewed a few hundred rankings, the RM trained
on them ranks the rest and people see only the rankings it is unsure about.

app never imports torch: the scores come over HTTP from the local server (`rlhf-forge train
serve ... --reward-root DIR`, `POST {base_url}/rewards`), the same server and endpoint settings
as the LLM judge. That keeps the model in one warm process (a worker would otherwise load it
per chunk), lets the RM live on another machine (a GPU box) than the workers, and works with
any server that speaks the same small JSON route.

Scores within `epsilon` of each other tie (grouped from the best down: a new rank starts where
the gap to the score above exceeds epsilon); a ranking whose best two groups are closer than
`min_margin` is flagged `low_margin`, one whose best place is shared `top_tie`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from app.errors import InvalidInput
from app.judging.ranking import InvalidJudgeReply
from app.judging.templates import JudgeTemplate
from app.llm import Endpoint

# no prompt is rendered: the version names the scoring rule rankings record
TEMPLATE = JudgeTemplate("reward-model-v1", "", "")


def rank_scores(scores: Sequence[float], epsilon: float) -> list[int]:
    """Competition ranks (1 = best) of scores, higher is better; scores within `epsilon` of the
    next one up share its rank: [3.0, 2.95, 1.0] with epsilon 0.1 gives [1, 1, 3]."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    ranks = [0] * len(scores)
    for position, i in enumerate(order):
        above = order[position - 1] if position else None
        tied = above is not None and scores[above] - scores[i] <= epsilon
        ranks[i] = ranks[above] if tied else position + 1
    return ranks


def score_flags(ranks: Sequence[int], scores: Sequence[float], min_margin: float) -> dict[str, str]:
    """Why an RM ranking needs a human look: {flag code (FlagReason): the detail}."""
    top = [i + 1 for i, r in enumerate(ranks) if r == 1]
    if len(top) > 1:
        return {"top_tie": f"reward model ties candidates {top} for first place"}
    best = max(scores)
    runner_up = max(s for i, s in enumerate(scores) if ranks[i] != 1)
    if best - runner_up < min_margin:
        return {"low_margin": f"the best candidate leads by {best - runner_up:.3f} reward (< {min_margin})"}
    return {}


def rewards_url(endpoint: Endpoint) -> str:
    return endpoint.base_url.rstrip("/") + "/rewards"


async def fetch_scores(endpoint: Endpoint, model: str, prompt: str, completions: Sequence[str], timeout: float) -> dict[str, Any]:
    """POST /rewards: {"scores": [...], "provenance": {...}}, or InvalidJudgeReply saying why not."""
    body = {"model": model, "input": [{"prompt": prompt, "completion": c} for c in completions]}
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            r = await client.post(rewards_url(endpoint), json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise InvalidJudgeReply(f"the reward server at {rewards_url(endpoint)} did not answer: {type(exc).__name__}") from None
    try:
        reply = r.json()
    except ValueError:
        reply = None
    if r.status_code != 200 or not isinstance(reply, dict):
        message = (reply or {}).get("error", {}).get("message") if isinstance(reply, dict) else None
        raise InvalidJudgeReply(f"the reward server answered {r.status_code}: {message or r.text[:300]}")
    data = reply.get("data")
    try:
        scores = [float(d["score"]) for d in sorted(data, key=lambda d: d["index"])]
    except (KeyError, TypeError, ValueError):
        raise InvalidJudgeReply("the reward server's reply lacks data[].score") from None
    if len(scores) != len(completions):
        raise InvalidJudgeReply(f"the reward server gave {len(scores)} scores for {len(completions)} completions")
    return {"scores": scores, "provenance": reply.get("provenance") or {}}


async def check_model(endpoint: Endpoint, model: str | None, timeout: float) -> None:
    """Refuse a run whose reward model the server cannot load, at creation, not in the job."""
    if not model:
        raise InvalidInput("mode 'reward_model' needs 'model': the folder `rlhf-forge train rm` wrote", details={"field": "model"})
    try:
        await fetch_scores(endpoint, model, "", ["probe"], timeout)
    except InvalidJudgeReply as exc:
        raise InvalidInput(f"reward model {model!r} cannot be used: {exc}", details={"field": "model"}) from None


async def rank(endpoint: Endpoint, model: str, prompt: str, completions: Sequence[str], *, epsilon: float,
               min_margin: float, timeout: float) -> dict[str, Any]:
    """One prompt's ranking row (ranks, flags, details with scores and provenance)."""
    got = await fetch_scores(endpoint, model, prompt, completions, timeout)
    scores, provenance = got["scores"], got["provenance"]
    ranks = rank_scores(scores, epsilon)
    return {
        "ranks": ranks, "consistency": None, "rationale": "",
        "flags": score_flags(ranks, scores, min_margin),
        "details": {
            "mode": "reward_model", "scores": scores, "reward_model": model, "epsilon": epsilon, "min_margin": min_margin,
            "manifest_sha256": provenance.get("manifest_sha256"), "provenance": provenance,
        },
    }
