"""The command line: SFT -> RM -> PPO on exports with the tiny model, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from trainer.cli import cli
from trainer.formats import sha256_file
from trainer.loop import CURVES_FILE, METRICS_FILE, STATE_FILE

runner = CliRunner()


def run(*args: str) -> str:
    result = runner.invoke(cli, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_sft_rm_ppo_pipeline(exports, tmp_path):
    sft, rm, ppo = tmp_path / "sft", tmp_path / "rm", tmp_path / "ppo"
    out = run("sft", "--data", str(exports["sft"]), "--model", "tiny", "--out", str(sft), "--max-steps", "20",
              "--lr", "3e-3", "--batch-size", "16")
    assert "sft done: step 20" in out
    out = run("rm", "--data", str(exports["rm"]), "--model", str(sft), "--out", str(rm), "--max-steps", "10",
              "--batch-size", "8", "--margin-scale", "0.1")
    assert "rm done: step 10" in out and "val_accuracy" in out
    out = run("ppo", "--data", str(exports["rl"]), "--model", str(sft), "--reward-model", str(rm), "--out", str(ppo),
              "--max-steps", "3", "--batch-size", "8", "--mini-batch-size", "4", "--max-new-tokens", "4")
    assert "ppo done: step 3" in out and "reward" in out

    for folder in (sft, rm, ppo):
        assert (folder / "config.json").exists() and (folder / CURVES_FILE).exists()
        state = json.loads((folder / STATE_FILE).read_text())
        assert state["manifest_sha256"] == sha256_file(exports["manifest"])
    rows = [json.loads(line) for line in (ppo / METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert {"reward", "kl", "kl_coef", "entropy", "clipfrac", "vf_loss", "pg_loss"} <= rows[0].keys()
    assert json.loads((rm / "trainer_config.json").read_text())["margin_scale"] == 0.1

    # --resume on a finished run continues from its last checkpoint and has nothing left to do
    out = run("sft", "--data", str(exports["sft"]), "--model", "tiny", "--out", str(sft), "--max-steps", "20",
              "--lr", "3e-3", "--batch-size", "16", "--resume")
    assert "sft done: step 20" in out


def test_explicit_manifest_is_recorded(exports, tmp_path):
    manifest = tmp_path / "other-manifest.json"
    manifest.write_text('{"format_version": 1, "dataset": "x", "dataset_version": 9}\n')
    run("sft", "--data", str(exports["sft"]), "--model", "tiny", "--out", str(tmp_path / "o"), "--max-steps", "1",
        "--manifest", str(manifest))
    assert json.loads((tmp_path / "o" / STATE_FILE).read_text())["manifest_sha256"] == sha256_file(manifest)


def test_bad_record_is_reported_with_file_and_line(tmp_path):
    data = tmp_path / "bad.sft.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n')
    result = runner.invoke(cli, ["sft", "--data", str(data), "--out", str(tmp_path / "o"), "--no-progress"])
    assert result.exit_code == 2
    assert f"{data}:2: missing key 'completion'" in result.output


def test_python_m_trainer_help_without_torch():
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-m", "trainer", "sft", "--help"], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0 and "--group-by-length" in out.stdout and "--resume" in out.stdout
    code = "import sys, trainer, trainer.cli, trainer.formats, trainer.config; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"

