"""Rows made straight through the ORM (the way the LLM pipeline writes them), for review tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from app.models import Completion, Dataset, Prompt, Ranking
from app.prompts.hashing import content_hash
from tests.app.ui import browser, reviewers  # noqa: F401  (the console's browser fixtures)


class Factory:
    def __init__(self, url: str):
        self.engine = create_engine(url)

    def _add(self, row: Any) -> int:
        with Session(self.engine) as s, s.begin():
            s.add(row)
            s.flush()
            return row.id

    def dataset(self, name: str = "ds", **settings: Any) -> int:
        return self._add(Dataset(name=name, settings=settings))

    def prompt(self, dataset_id: int, text_: str, **kw: Any) -> int:
        return self._add(Prompt(dataset_id=dataset_id, text=text_, content_hash=content_hash(text_), **kw))

    def completion(self, prompt_id: int, text_: str, **kw: Any) -> int:
        kw.setdefault("source", "model")
        kw.setdefault("model", "gen-small")
        return self._add(Completion(dataset_id=self.dataset_of(prompt_id), prompt_id=prompt_id, text=text_, **kw))

    def judge_ranking(self, prompt_id: int, completion_ids: list[int], ranks: list[int], **kw: Any) -> int:
        kw.setdefault("judge_model", "judge-a")
        kw.setdefault("template_version", "v1")
        kw.setdefault("rationale", "the first is clearer")
        kw.setdefault("consistency", 1.0)
        return self._add(
            Ranking(dataset_id=self.dataset_of(prompt_id), prompt_id=prompt_id, completion_ids=completion_ids,
                    ranks=ranks, ranker_kind="judge", **kw)
        )

    def judged_item(self, dataset_id: int, prompt_text: str, answers: list[str], ranks: list[int] | None = None,
                    prompt_kw: dict | None = None, **ranking_kw: Any) -> tuple[int, list[int], int]:
        """A prompt with K model answers and a judge ranking (ranks default to 1..K in order)."""
        pid = self.prompt(dataset_id, prompt_text, **(prompt_kw or {}))
        cids = [self.completion(pid, a, sample_index=i) for i, a in enumerate(answers)]
        rid = self.judge_ranking(pid, cids, ranks or list(range(1, len(cids) + 1)), **ranking_kw)
        return pid, cids, rid

    def dataset_of(self, prompt_id: int) -> int:
        return self.scalar("SELECT dataset_id FROM prompt WHERE id = :id", id=prompt_id)

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as c:
            return c.execute(text(sql), params).scalar()

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as c:
            c.execute(text(sql), params)

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as c:
            return list(c.execute(text(sql), params))


@pytest.fixture
def factory(clean_db: str) -> Iterator[Factory]:
    f = Factory(clean_db)
    yield f
    f.engine.dispose()
