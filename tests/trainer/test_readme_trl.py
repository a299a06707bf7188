"""The TRL snippets of README.md ("With TRL") run as they are written there, on a real export.

The data goes in through the API (an RM file imported: prompts, answers, rankings), a version is
frozen and its files downloaded, as a user would. The README's setup block runs too; only its
two names change: `export_dir` points at the downloaded version and `model_name` at a tiny
random Llama saved to a folder (built in code: this machine is offline). Each snippet must
consume every row of its file, take optimizer steps, and end with a finite loss."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

from trainer import formats
from trainer.models import build_tiny_causal_lm, build_tiny_tokenizer

README = Path(__file__).resolve().parents[2] / "README.md"
SNIPPET = re.compile(r"<!-- trl-snippet: (\w+) -->\n```python\n(.*?)```", re.S)
K = 3
QUESTIONS = [(2, 3), (4, 4), (7, 1), (5, 6), (9, 2), (3, 8)]


def snippets() -> dict[str, str]:
    return dict(SNIPPET.findall(README.read_text(encoding="utf-8")))


def test_readme_marks_a_setup_block_and_one_snippet_per_export():
    assert list(snippets()) == ["setup", "sft", "rm", "rl"]


def _export(http, out: Path) -> formats.Manifest:
    """Prompts with K ranked answers imported, approved, frozen as a version (everything in
    train), its files and manifest downloaded into `out`."""
    ds = http.post("/api/v1/datasets", json={"name": "readme-trl"}).json()["id"]
    lines = [
        {
            "prompt": f"What is {a} + {b}?",
            "completion": [f"{a + b}", f"{a + b + 1}", f"I am not sure about {a}."],
            "ranking": [1, 2, 3],
        }
        for a, b in QUESTIONS
    ]
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    r = http.post(
        f"/api/v1/datasets/{ds}/import", params={"format": "rm"}, content=body, headers={"content-type": "application/x-ndjson"}
    )
    assert r.status_code == 200 and r.json()["inserted"] == len(QUESTIONS), r.text
    for p in http.get(f"/api/v1/datasets/{ds}/prompts", params={"limit": 100}).json()["data"]:
        # RL takes approved prompts
        assert http.patch(f"/api/v1/prompts/{p['id']}", json={"review_status": "approved"}).status_code == 200
    r = http.post(
        f"/api/v1/datasets/{ds}/exports",
        json={"formats": ["sft", "pairs", "rl"], "split": {"train": 1.0, "validation": 0.0, "test": 0.0}},
    )
    assert r.status_code == 202, r.text
    version = r.json()["version"]
    deadline = time.monotonic() + 120
    while (exp := http.get(f"/api/v1/datasets/{ds}/exports/{version}").json())["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, exp
        time.sleep(0.2)
    assert exp["status"] == "succeeded", exp
    out.mkdir()
    for name in [*exp["manifest"]["files"], "manifest.json"]:
        (out / name).write_bytes(http.get(f"/api/v1/datasets/{ds}/exports/{version}/files/{name}").content)
    manifest = formats.Manifest.load(out / "manifest.json")
    assert manifest.verify(out) == []
    return manifest


def _rows(manifest: formats.Manifest, name: str) -> int:
    return manifest.files[name]["rows"]


def _finished(trainer) -> dict:
    """The trainer's closing log line, after checking that it took steps and its loss is finite."""
    assert trainer.state.global_step >= 1
    last = trainer.state.log_history[-1]
    assert math.isfinite(last["train_loss"]), last
    return last


def test_readme_trl_snippets_train_on_an_export(http, tmp_path, monkeypatch):
    manifest = _export(http, tmp_path / "export")
    # every pair of each ranking (C(K,2), no ties), one SFT target and one RL prompt per prompt
    assert (_rows(manifest, "sft.train.jsonl"), _rows(manifest, "pairs.train.jsonl"), _rows(manifest, "rl.train.jsonl")) == (
        len(QUESTIONS), len(QUESTIONS) * K * (K - 1) // 2, len(QUESTIONS)
    )

    tokenizer = build_tiny_tokenizer()
    model_dir = tmp_path / "tiny-model"
    build_tiny_causal_lm(tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    monkeypatch.chdir(tmp_path)  # the snippets write under runs/
    code = snippets()
    ns: dict = {}
    exec(code["setup"], ns)  # noqa: S102 - the README's own code, the point of this test
    assert {"export_dir", "model_name", "load_dataset", "torch"} <= ns.keys()
    ns.update(export_dir=str(tmp_path / "export"), model_name=str(model_dir))

    exec(code["sft"], ns)  # noqa: S102
    assert len(ns["trainer"].train_dataset) == _rows(manifest, "sft.train.jsonl")
    _finished(ns["trainer"])
    assert (tmp_path / "runs" / "trl-sft" / "config.json").exists()

    exec(code["rm"], ns)  # noqa: S102
    assert len(ns["trainer"].train_dataset) == _rows(manifest, "pairs.train.jsonl")
    assert "accuracy" in _finished(ns["trainer"])  # chosen scored against rejected
    assert (tmp_path / "runs" / "trl-rm" / "config.json").exists()

    exec(code["rl"], ns)  # noqa: S102
    assert len(ns["trainer"].train_dataset) == _rows(manifest, "rl.train.jsonl")
    last = _finished(ns["trainer"])
    assert math.isfinite(last["rewards/trl-rm/mean"])  # the reward model above scored the completions
    assert (tmp_path / "runs" / "trl-grpo" / "config.json").exists()

