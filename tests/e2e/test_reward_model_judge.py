"""The reward-model judge closes the loop: rankings people made are exported, `rlhf-forge train
rm` learns from them, and a judge run `mode: "reward_model"` ranks fresh completions with that
checkpoint (scored by the local server's /v1/rewards), on the addition task whose answers are
known."""

import itertools
import os
import random
import subprocess
import sys
import threading
import time

import pytest

from app.judging.ranking import competition_ranks
from app.judging.reward_model import rank_scores, score_flags
from trainer import formats

K_TRAIN, K_FRESH = 8, 4


def _candidates(total: int, k: int, rng: random.Random) -> list[int]:
    out = {total}
    while len(out) < k:
        out.add(rng.randint(0, 18))
    return rng.sample(sorted(out), k)


def _sum(prompt: str) -> int:
    a, b = prompt.removesuffix("=").split("+")
    return int(a) + int(b)


def _dataset(api, name: str, prompts: list[str]) -> tuple[int, dict[str, int]]:
    ds = api.post("/datasets", json={"name": name}).json()
    assert api.post(f"/datasets/{ds['id']}/prompts/import", json=prompts).json()["inserted"] == len(prompts)
    listed = api.get(f"/datasets/{ds['id']}/prompts", params={"limit": 500}).json()["data"]
    return ds["id"], {p["text"]: p["id"] for p in listed}


def _add(api, prompt_id: int, texts: list[str]) -> list[int]:
    ids = []
    for text in texts:
        r = api.post(f"/prompts/{prompt_id}/completions", json={"text": text})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


@pytest.fixture(scope="module")
def reward_server(tmp_path_factory):
    """The local server (tiny chat model) allowed to load reward models from one folder."""
    from trainer.serve import ChatModel, make_server

    root = tmp_path_factory.mktemp("rm-root")
    srv = make_server(ChatModel("tiny"), "127.0.0.1", 0, reward_roots=[root])
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}/v1", root
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def forge_settings(base_settings, fake, reward_server):
    """The service as the other pipeline tests have it, plus the reward server as a named
    endpoint (datasets and runs choose endpoints by name; a local model costs nothing)."""
    from app.config import EndpointConfig, ModelPrice
    from tests.app.llm.conftest import llm_settings

    rewards = EndpointConfig(base_url=reward_server[0], prices={"*": ModelPrice()})
    return llm_settings(base_settings, fake, llm_endpoints={"rewards": rewards})


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_rm_trained_on_exported_rankings_ranks_fresh_completions(api, sql, reward_server, tmp_path):
    url, root = reward_server
    rng = random.Random(0)
    prompts = [f"{a}+{b}=" for a in range(10) for b in range(10)]
    rng.shuffle(prompts)
    reviewed = prompts[:70]

    # people ranked 8 answers to each of 70 prompts (the closer to the sum, the better) and approved them
    dataset_id, ids = _dataset(api, "addition", reviewed)
    for p in reviewed:
        answers = _candidates(_sum(p), K_TRAIN, rng)
        completion_ids = _add(api, ids[p], [str(x) for x in answers])
        ranks = competition_ranks([abs(x - _sum(p)) for x in answers], higher_is_better=False)
        assert api.post(f"/prompts/{ids[p]}/rankings", json={"completion_ids": completion_ids, "ranks": ranks}).status_code == 201
        assert api.patch(f"/prompts/{ids[p]}", json={"review_status": "approved"}).status_code == 200

    r = api.post(f"/datasets/{dataset_id}/exports", json={"split": {"train": 1.0, "validation": 0.0, "test": 0.0}, "formats": ["rm"]})
    assert r.status_code == 202, r.text
    version, deadline = r.json()["version"], time.monotonic() + 60
    while (exp := api.get(f"/datasets/{dataset_id}/exports/{version}").json())["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, exp
        time.sleep(0.1)
    export = tmp_path / "export"
    export.mkdir()
    for name in [*exp["manifest"]["files"], "manifest.json"]:
        (export / name).write_bytes(api.get(f"/datasets/{dataset_id}/exports/{version}/files/{name}").content)

    rm_dir = root / "rm"
    trained = subprocess.run(
        [sys.executable, "-m", "trainer", "rm", "--data", str(export / "rm.train.jsonl"), "--model", "tiny", "--out", str(rm_dir),
         "--max-steps", "400", "--lr", "3e-3", "--batch-size", "16", "--val-fraction", "0", "--eval-every", "0", "--no-progress"],
        capture_output=True, text=True, timeout=600, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"},  # tiny model: threads only contend
    )
    print(f"trained the RM: {trained.stdout.strip().splitlines()[-2]}")
    assert trained.returncode == 0, trained.stderr[-3000:]

    # fresh answers to 30 of those prompts, in a dataset of their own, ranked by the RM
    fresh_prompts = reviewed[:30]
    fresh_id, fresh_ids = _dataset(api, "addition-fresh", fresh_prompts)
    for p in fresh_prompts:
        _add(api, fresh_ids[p], [str(x) for x in _candidates(_sum(p), K_FRESH, rng)])
    llm = {"judge": {"endpoint": "rewards"}}
    for bad, fragment in (({}, "needs 'model'"), ({"model": "/etc"}, "--reward-root"), ({"model": str(root)}, "not a reward-model")):
        r = api.post(f"/datasets/{fresh_id}/runs", json={"kind": "judge", "mode": "reward_model", "llm": llm, **bad})
        assert r.status_code == 422 and fragment in r.text, r.text
    r = api.post(f"/datasets/{fresh_id}/runs", json={"kind": "judge", "mode": "reward_model", "model": str(rm_dir), "llm": llm})
    assert r.status_code == 201, r.text
    run_id, deadline = r.json()["id"], time.monotonic() + 120
    while (run := api.get(f"/runs/{run_id}").json())["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, run
        time.sleep(0.2)
    assert run["status"] == "succeeded" and run["done"] == 30, run

    rankings = api.get(f"/datasets/{fresh_id}/rankings", params={"limit": 100}).json()["data"]
    assert len(rankings) == 30
    texts = {c["id"]: (c["text"], p) for p in fresh_prompts for c in api.get(f"/prompts/{fresh_ids[p]}/completions").json()["data"]}
    right = total = 0
    manifest_sha = formats.sha256_file(export / "manifest.json")
    for ranking in rankings:
        d = ranking["details"]
        assert d["mode"] == "reward_model" and d["manifest_sha256"] == manifest_sha and len(d["scores"]) == K_FRESH
        assert ranking["judge_model"] == str(rm_dir) and ranking["template_version"] == "reward-model-v1"
        assert ranking["ranks"] == rank_scores(d["scores"], d["epsilon"])
        assert (ranking["review_status"] == "needs_review") == bool(ranking["flag_reasons"])
        errors = [abs(int(texts[c][0]) - _sum(texts[c][1])) for c in ranking["completion_ids"]]
        for i, j in itertools.combinations(range(K_FRESH), 2):
            if errors[i] != errors[j]:
                total += 1
                right += (ranking["ranks"][i] < ranking["ranks"][j]) == (errors[i] < errors[j])
    accuracy = right / total
    print(f"RM judge pair accuracy on fresh completions: {accuracy:.3f} ({right}/{total})")
    assert accuracy >= 0.90


def test_rank_scores_ties_within_epsilon_and_flags():
    assert rank_scores([1.0, 3.0, 2.0], 0.0) == [3, 1, 2]
    assert rank_scores([3.0, 2.95, 1.0], 0.1) == [1, 1, 3]
    assert rank_scores([3.0, 2.95, 2.9, 0.0], 0.06) == [1, 1, 1, 4]  # grouped from the best down
    assert score_flags([1, 1, 3], [3.0, 2.95, 1.0], 0.5) == {"top_tie": "reward model ties candidates [1, 2] for first place"}
    assert "low_margin" in score_flags([1, 2], [3.0, 2.8], 0.5)
    assert score_flags([1, 2], [3.0, 1.0], 0.5) == {}
