"""A tolerant reader of judge replies: strict JSON first, then JSON buried in prose or code
fences, then a 'best > ... > worst' line. Whatever it finds is validated before use."""

from __future__ import annotations

import re
from typing import Any

from app.judging.ranking import InvalidJudgeReply, validate_ranks
from app.llm.replies import InvalidReply, extract_json

_CHAIN = re.compile(r"\[?\[?(\d+)\]?\]?(?:\s*[>≻]\s*\[?\[?(\d+)\]?\]?)+")


def _json(text: str) -> Any:
    try:
        return extract_json(text)
    except InvalidReply as exc:
        raise InvalidJudgeReply(str(exc)) from None


def _order_to_ranks(order: list[Any], k: int) -> list[int]:
    ids = [int(x) for x in order]
    if sorted(ids) != list(range(1, k + 1)):
        raise InvalidJudgeReply(f"order {ids} does not list candidates 1..{k} once each")
    ranks = [0] * k
    for position, cid in enumerate(ids, 1):
        ranks[cid - 1] = position
    return ranks


def parse_listwise(text: str, k: int, *, allow_ties: bool) -> tuple[list[int], str]:
    """(ranks of candidates 1..k, rationale) from a judge reply, or InvalidJudgeReply."""
    try:
        obj = _json(text)
    except InvalidJudgeReply:
        chain = _CHAIN.search(text)
        if chain is None:
            raise
        order = re.findall(r"\d+", chain.group(0))
        return _order_to_ranks(order, k), text.strip()[:2000]
    rationale = ""
    if isinstance(obj, dict):
        rationale = str(obj.get("rationale") or obj.get("reason") or obj.get("explanation") or "")
        if "ranks" in obj:
            ranks = obj["ranks"]
        elif isinstance(obj.get("order") or obj.get("ranking"), list):
            return _order_to_ranks(obj.get("order") or obj.get("ranking"), k), rationale[:2000]
        else:
            raise InvalidJudgeReply(f"the reply has no 'ranks': keys {sorted(obj)[:8]}")
    else:
        ranks = obj
    return validate_ranks(ranks, k, allow_ties=allow_ties), rationale[:2000]


def parse_object(text: str, required: list[str]) -> dict[str, Any]:
    obj = _json(text)
    if not isinstance(obj, dict):
        raise InvalidJudgeReply("the reply is not a JSON object")
    missing = [key for key in required if key not in obj]
    if missing:
        raise InvalidJudgeReply(f"the reply lacks {missing}")
    return obj
