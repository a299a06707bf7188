"""A job that exhausts its retries (issue 10, finding 5) fails its items, and the run says why
instead of staying `running`; a resume then finishes it. Its own module: the only worker on the
database must be the one whose jobs give up after two attempts."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text

from .conftest import LiveServer, llm_settings, make_dataset, rows, start, wait_run

K = 2


@pytest.fixture(scope="module")
def few_retries(base_settings, fake) -> Iterator[LiveServer]:
    """A worker whose jobs give up after two attempts, quickly."""
    with LiveServer(llm_settings(base_settings, fake, job_max_attempts=2, job_retry_wait_s=0.1)) as server:
        yield server


def test_a_job_that_exhausts_its_retries_fails_its_items_and_the_run_says_why(few_retries, db_url, sql, fake):
    with httpx.Client(base_url=few_retries.url + "/api/v1", timeout=30) as api:
        dataset_id, prompt_ids = make_dataset(api, sql, n_prompts=8)
        # a fault no item is to blame for: Postgres refuses every completion of one prompt
        with sql.begin() as conn:
            conn.execute(text(f"""
                CREATE FUNCTION refuse_completion() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.prompt_id = {prompt_ids[5]} THEN RAISE EXCEPTION 'the disk is on fire'; END IF;
                    RETURN NEW;
                END $$;
                CREATE TRIGGER refuse_completion BEFORE INSERT ON completion
                    FOR EACH ROW EXECUTE FUNCTION refuse_completion();
            """))
        try:
            run = wait_run(api, start(api, dataset_id, {"kind": "generate", "k": K})["id"], timeout=60)
        finally:
            with sql.begin() as conn:
                conn.execute(text("DROP TRIGGER refuse_completion ON completion; DROP FUNCTION refuse_completion()"))
        # chunks of 4: the second chunk's job failed twice, then its pending items failed
        assert run["status"] == "failed", run
        assert "gave up after 2 attempt(s)" in run["error"] and "the disk is on fire" in run["error"], run["error"]
        assert run["done"] + run["failed"] == run["total"] == 8 and run["failed"] >= 1
        failed = api.get(f"/runs/{run['id']}/items", params={"status": "failed"}).json()["data"]
        assert prompt_ids[5] in [i["prompt_id"] for i in failed]
        assert all("gave up" in i["error"] for i in failed)

        # the fault gone, a resume finishes the job: exactly K completions per prompt
        run = wait_run(api, api.post(f"/runs/{run['id']}/resume").json()["id"], timeout=60)
        assert (run["status"], run["done"], run["failed"], run["error"]) == ("succeeded", 8, 0, None), run
        got = rows(sql, "SELECT prompt_id, count(*) AS n FROM completion GROUP BY 1 ORDER BY 1")
        assert [(r["prompt_id"], r["n"]) for r in got] == [(p, K) for p in prompt_ids]


