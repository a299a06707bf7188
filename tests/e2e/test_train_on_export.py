"""The service's exports feed the bundled trainer: data made through the API, exported over
HTTP (streamed and as a bulk export with a manifest), trained on with SFT -> RM -> PPO."""

import json
import subprocess
import sys
import time

from trainer import formats

PROMPTS = [f"What is {a} + {b}?" for a, b in [(2, 3), (4, 4), (7, 1), (5, 6), (9, 2), (3, 8), (6, 6), (1, 1), (8, 5), (2, 9)]]


def _answers(question: str) -> list[str]:
    a, b = [int(x) for x in question.removeprefix("What is ").removesuffix("?").split(" + ")]
    return [f"{a + b}", f"{a + b + 1}", f"I am not sure about {a}."]


def _trainer(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "trainer", *args, "--no-progress"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_reviewed_data_exports_and_trains(http, tmp_path):
    ds = http.post("/api/v1/datasets", json={"name": "arith"}).json()
    rep = http.post(f"/api/v1/datasets/{ds['id']}/prompts/import", json=PROMPTS).json()
    assert rep["inserted"] == len(PROMPTS)
    prompts = http.get(f"/api/v1/datasets/{ds['id']}/prompts", params={"limit": 100}).json()["data"]
    for p in prompts:
        ids = []
        for text in _answers(p["text"]):
            r = http.post(f"/api/v1/prompts/{p['id']}/completions", json={"text": text}, headers={"x-actor": "ann"})
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        # the correct sum is best; ranks listed in a shuffled order of completions
        r = http.post(f"/api/v1/prompts/{p['id']}/rankings", json={"completion_ids": ids[::-1], "ranks": [3, 2, 1]}, headers={"x-actor": "ann"})
        assert r.status_code == 201, r.text
        # RL takes approved prompts
        assert http.patch(f"/api/v1/prompts/{p['id']}", json={"review_status": "approved"}).status_code == 200

    # streamed exports validate against the trainer's own reader
    for kind in ("sft", "rm", "rl", "pairs"):
        r = http.get(f"/api/v1/datasets/{ds['id']}/exports/{kind}.jsonl")
        assert r.status_code == 200, r.text
        path = tmp_path / f"{kind}.jsonl"
        path.write_bytes(r.content)
        records = formats.read_jsonl(path, kind)
        if kind == "sft":
            assert {(rec.prompt, rec.completion) for rec in records} == {(q, _answers(q)[0]) for q in PROMPTS}
        elif kind == "rm":
            for rec in records:
                assert rec.completion[rec.ranking.index(1)] == _answers(rec.prompt)[0]
        elif kind == "pairs":
            assert len(records) == 3 * len(PROMPTS)  # C(3,2) per prompt, no ties
        else:
            assert {rec.prompt for rec in records} == set(PROMPTS)

    # a bulk export writes files + manifest; the trainer records the manifest it trained on
    body = {"split": {"train": 1.0, "validation": 0.0, "test": 0.0}, "formats": ["sft", "rm", "rl"]}
    r = http.post(f"/api/v1/datasets/{ds['id']}/exports", json=body)
    assert r.status_code == 202, r.text
    version = r.json()["version"]
    deadline = time.monotonic() + 60
    while (exp := http.get(f"/api/v1/datasets/{ds['id']}/exports/{version}").json())["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, exp
        time.sleep(0.1)
    assert exp["status"] == "succeeded", exp
    out = tmp_path / "export"
    out.mkdir()
    for name in [*exp["manifest"]["files"], "manifest.json"]:
        (out / name).write_bytes(http.get(f"/api/v1/datasets/{ds['id']}/exports/{version}/files/{name}").content)
    manifest = formats.Manifest.load(out / "manifest.json")
    assert manifest.verify(out) == []

    sft, rm, ppo = tmp_path / "sft", tmp_path / "rm", tmp_path / "ppo"
    assert "sft done: step 4" in _trainer("sft", "--data", str(out / "sft.train.jsonl"), "--model", "tiny", "--out", str(sft), "--max-steps", "4", "--batch-size", "4")
    assert "rm done: step 3" in _trainer("rm", "--data", str(out / "rm.train.jsonl"), "--model", str(sft), "--out", str(rm), "--max-steps", "3", "--batch-size", "4")
    assert "ppo done: step 2" in _trainer(
        "ppo", "--data", str(out / "rl.train.jsonl"), "--model", str(sft), "--reward-model", str(rm), "--out", str(ppo),
        "--max-steps", "2", "--batch-size", "4", "--mini-batch-size", "2", "--max-new-tokens", "4",
    )
    state = json.loads((ppo / "trainer_state.json").read_text())
    assert state["manifest_sha256"] == formats.sha256_file(out / "manifest.json")
