"""`rlhf-forge demo --quick`: the whole chain (import -> synth -> generate -> judge -> approve ->
export -> sft -> rm -> ppo -> RM judge) with the tiny in-code model behind the same local server,
run as a user runs it, to the end; a second run resumes instead of starting over."""

import json
import os
import subprocess
import sys
import time

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import free_port, truncate_all


def _demo(env: dict, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "app.cli", "demo", "--quick", "--port", env["DEMO_PORT"]],
                          capture_output=True, text=True, timeout=timeout, env=env, check=False)
    return done, time.monotonic() - t0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_demo_runs_the_whole_chain_and_resumes(database_url, tmp_path):
    truncate_all(database_url)
    env = {
        **os.environ, "DATABASE_URL": database_url, "FORGE_DATA_DIR": str(tmp_path), "DEMO_PORT": str(free_port()),
        "FORGE_LLM_BASE_URL": f"http://127.0.0.1:{free_port()}/v1", "COLUMNS": "200", "OMP_NUM_THREADS": "1",
    }
    try:
        first, seconds = _demo(env, 840)
        print(f"demo --quick: {seconds:.0f} s\n{first.stdout[-6000:]}")
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
        assert "every step succeeded" in first.stdout
        state = json.loads((tmp_path / "demo-quick" / "state.json").read_text())
        assert state["done"] == ["import", "synth", "generate", "judge", "approve", "export", "sft", "rm", "ppo", "rm_judge"]
        for method in ("sft", "rm", "ppo"):
            assert (tmp_path / "demo-quick" / "checkpoints" / method / "trainer_state.json").exists()
        assert (tmp_path / "demo-quick" / "checkpoints" / "ppo" / "metrics.jsonl").exists()
        assert "before PPO" in first.stdout and "after PPO" in first.stdout and "sha256" in first.stdout
        assert " GET /api" not in first.stdout + first.stderr  # no access log lines
        # the local model's endpoint is declared free: the summary adds up $0, not "unknown"
        assert "$0.0000" in first.stdout and "unknown" not in first.stdout
        assert set(state["seconds"]) == set(state["done"])  # each step's wall time, for the wall-time table in docs/guide.md

        engine = create_engine(database_url)
        with engine.connect() as conn:
            judged = conn.execute(text("SELECT review_status, flag_reasons, judge_model, details FROM ranking WHERE run_id = :r"),
                                  {"r": state["judge_run"]}).all()
            rm_judged = conn.execute(text("SELECT details FROM ranking WHERE run_id = :r"), {"r": state["rm_judge_run"]}).all()
            runs = conn.execute(text("SELECT kind, status FROM run ORDER BY id")).all()
        engine.dispose()
        # the random tiny model's judge replies were all valid (constrained decoding): no judge_invalid
        assert judged and all("judge_invalid" not in r.flag_reasons for r in judged)
        assert any(r.review_status == "approved" for r in judged) and all(r.judge_model == "tiny" for r in judged)
        assert rm_judged and all(r.details["mode"] == "reward_model" and r.details["manifest_sha256"] for r in rm_judged)
        assert all(status == "succeeded" for _, status in runs)

        again, _ = _demo(env, 300)
        assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
        assert again.stdout.count("done in an earlier run") == 10
        assert json.loads((tmp_path / "demo-quick" / "state.json").read_text())["judge_run"] == state["judge_run"]
    finally:
        truncate_all(database_url)
