"""`rlhf-forge synth | generate | judge --dataset NAME --wait`: the whole chain from the command
line, worked on in the CLI's own process, against the fake LLM."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from app import config
from app.cli import cli

from .conftest import add_prompts, rows


@pytest.fixture
def env(monkeypatch, database_url, db_url, fake, tmp_path):
    for key, value in {
        "DATABASE_URL": database_url, "FORGE_DATA_DIR": str(tmp_path), "FORGE_LLM_BASE_URL": fake.url,
        "FORGE_RUN_STATUS_POLL_S": "0.2", "FORGE_LLM_PRICES": '{"default": {"prompt": 1, "completion": 1}}',
    }.items():
        monkeypatch.setenv(key, value)
    config.get_settings.cache_clear()
    yield
    config.get_settings.cache_clear()


def test_synth_generate_judge_from_the_command_line(env, sql):
    with sql.begin() as conn:
        dataset_id = conn.exec_driver_sql("INSERT INTO dataset (name) VALUES ('cli') RETURNING id").scalar_one()
    add_prompts(sql, dataset_id, ["Explain tides to a child.", "Write a haiku about rain.", "What is a prime number?"])
    runner = CliRunner()
    for args in (
        ["synth", "--dataset", "cli", "--num", "4", "--per-call", "4", "--topic", "weather", "--wait", "--budget", "100"],
        ["generate", "--dataset", "cli", "--k", "4", "--wait", "--budget", "100"],
        ["judge", "--dataset", "cli", "--wait", "--budget", "100"],
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, (args, result.output)
        assert '"status": "succeeded"' in result.output
    prompts = rows(sql, "SELECT id, source FROM prompt")
    assert len(prompts) == 5 and sum(p["source"] == "synthetic" for p in prompts) == 2
    per_prompt = rows(sql, "SELECT prompt_id, count(*) AS n FROM completion GROUP BY prompt_id")
    assert sorted(p["n"] for p in per_prompt) == [4] * 5
    assert rows(sql, "SELECT count(*) AS n FROM ranking")[0]["n"] == 5
    missing = runner.invoke(cli, ["generate", "--dataset", "nope", "--wait"])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_runs_group_dry_run_and_prompt_filters(env, sql):
    with sql.begin() as conn:
        dataset_id = conn.exec_driver_sql("INSERT INTO dataset (name) VALUES ('cli') RETURNING id").scalar_one()
    ids = add_prompts(sql, dataset_id, ["Explain tides to a child.", "Write a haiku about rain.", "What is a prime number?"])
    runner = CliRunner()
    dry = runner.invoke(cli, ["generate", "-d", "cli", "--k", "2", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert '"prompts": 3' in dry.output and '"requests": 6' in dry.output
    assert rows(sql, "SELECT count(*) AS n FROM run")[0]["n"] == 0
    gen = runner.invoke(cli, ["generate", "-d", "cli", "--k", "2", "--prompt-id", str(ids[0]), "--prompt-id", str(ids[1]), "--wait",
                              "--budget", "100"])
    assert gen.exit_code == 0, gen.output
    judged = runner.invoke(cli, ["judge", "-d", "cli", "--prompt-id", str(ids[0]), "--wait", "--budget", "100"])
    assert judged.exit_code == 0 and rows(sql, "SELECT prompt_id FROM ranking") == [{"prompt_id": ids[0]}]
    [gen_id, judge_id] = [r["id"] for r in rows(sql, "SELECT id FROM run ORDER BY id")]
    listed = runner.invoke(cli, ["runs", "list", "-d", "cli"])
    assert listed.exit_code == 0 and f"{gen_id}" in listed.output and "judge" in listed.output
    shown = runner.invoke(cli, ["runs", "show", str(gen_id)])
    assert shown.exit_code == 0 and '"status": "succeeded"' in shown.output and '"total": 2' in shown.output
    assert runner.invoke(cli, ["runs", "watch", str(judge_id)]).exit_code == 0
    again = runner.invoke(cli, ["runs", "cancel", str(gen_id)])
    assert again.exit_code == 2 and "already succeeded" in again.output
    queued = runner.invoke(cli, ["generate", "-d", "cli", "--k", "1", "--seed", "5", "--budget", "1"])  # no worker: stays queued
    assert queued.exit_code == 0
    new_id = rows(sql, "SELECT max(id) AS id FROM run")[0]["id"]
    cancelled = runner.invoke(cli, ["runs", "cancel", str(new_id)])
    assert cancelled.exit_code == 0 and '"status": "cancelled"' in cancelled.output
    resumed = runner.invoke(cli, ["runs", "resume", str(new_id), "--budget", "5"])
    assert resumed.exit_code == 0 and '"status": "queued"' in resumed.output
    assert runner.invoke(cli, ["runs", "show", "999999"]).exit_code == 2
