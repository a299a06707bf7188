"""Rows for export tests, written through the ORM (the import and review APIs live elsewhere)."""

from __future__ import annotations

import time

import httpx
import pytest

from app.models import Completion, Dataset, Prompt, Ranking
from app.prompts.hashing import content_hash


class Seeder:
    def __init__(self, session):
        self.session = session

    async def dataset(self, name: str = "ds") -> Dataset:
        ds = Dataset(name=name)
        self.session.add(ds)
        await self.session.flush()
        return ds

    async def prompt(self, ds: Dataset, text: str, **kw) -> Prompt:
        kw.setdefault("review_status", "approved")
        p = Prompt(dataset_id=ds.id, text=text, content_hash=content_hash(text), **kw)
        self.session.add(p)
        await self.session.flush()
        return p

    async def completion(self, p: Prompt, text: str, **kw) -> Completion:
        kw.setdefault("review_status", "approved")
        kw.setdefault("source", "model")
        kw.setdefault("model", "gen-a")
        c = Completion(dataset_id=p.dataset_id, prompt_id=p.id, text=text, **kw)
        self.session.add(c)
        await self.session.flush()
        return c

    async def ranking(self, p: Prompt, completions: list[Completion], ranks: list[int], **kw) -> Ranking:
        kw.setdefault("review_status", "approved")
        kw.setdefault("ranker_kind", "judge")
        r = Ranking(dataset_id=p.dataset_id, prompt_id=p.id, completion_ids=[c.id for c in completions], ranks=ranks, **kw)
        self.session.add(r)
        await self.session.flush()
        return r

    async def ranked(self, ds: Dataset, prompt: str, texts: list[str], ranks: list[int], **kw):
        """A prompt with K completions and a judge ranking of them."""
        p = await self.prompt(ds, prompt)
        cs = [await self.completion(p, t) for t in texts]
        r = await self.ranking(p, cs, ranks, **kw)
        return p, cs, r

    async def commit(self) -> None:
        await self.session.commit()


@pytest.fixture
def seed(session) -> Seeder:
    return Seeder(session)


def wait_for_export(http: httpx.Client, dataset_id: int, version: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = http.get(f"/api/v1/datasets/{dataset_id}/exports/{version}")
        assert r.status_code == 200, r.text
        body = r.json()
        if body["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return body
        time.sleep(0.05)
