"""The command line, run as a user would: a subprocess with DATABASE_URL."""

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest


def run_cli(*args, database_url, tmp_path):
    env = {**os.environ, "DATABASE_URL": database_url, "FORGE_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True, timeout=120)


def test_import_then_list(clean_db, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(json.dumps(x) for x in ["one", "two", {"prompt": ""}, "one"]) + "\n")
    r = run_cli("import", str(f), "--dataset", "cli-ds", database_url=clean_db, tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "2 inserted, 1 duplicate, 1 invalid of 4 rows" in r.stdout
    assert "line 3:" in r.stdout
    r = run_cli("datasets", database_url=clean_db, tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if "cli-ds" in line)
    assert row.split("│")[3].strip() == "2"


def test_all_or_nothing_fails_with_the_line(clean_db, tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("prompt,tags\nfine,\n,x\n")
    r = run_cli("import", str(f), "-d", "strict", "--all-or-nothing", database_url=clean_db, tmp_path=tmp_path)
    assert r.returncode == 1
    assert "nothing was imported" in r.stderr


@pytest.mark.parametrize("name, fragment", [("p.txt", "cannot tell the format"), ("p.jsonl", "--format must be")])
def test_bad_format(clean_db, tmp_path, name, fragment):
    f = tmp_path / name
    f.write_text('"x"\n')
    extra = ["--format", "xml"] if name.endswith(".jsonl") else []
    r = run_cli("import", str(f), "-d", "x", *extra, database_url=clean_db, tmp_path=tmp_path)
    assert r.returncode != 0 and fragment in r.stderr


def test_outdated_schema_says_what_to_run(pg_server_url, tmp_path):
    # the server's maintenance database has no migrations applied
    r = run_cli("datasets", database_url=pg_server_url, tmp_path=tmp_path)
    assert r.returncode == 1
    assert "rlhf-forge db upgrade" in r.stderr


def test_one_command_line(pg_server_url, tmp_path):
    """Every command in one `rlhf-forge`, `worker` next to `serve`; a typo gets a suggestion; `train`
    reaches the trainer's own command line without app importing the trainer."""
    r = run_cli("--help", database_url=pg_server_url, tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    commands = [line.split()[1] for line in r.stdout.splitlines() if line.startswith("│ ") and not line.startswith("│ --")]
    assert commands[:4] == ["db", "serve", "worker", "demo"]
    assert {"import", "datasets", "export", "synth", "generate", "judge", "review", "train"} <= set(commands)
    r = run_cli("worker", "--help", database_url=pg_server_url, tmp_path=tmp_path)
    assert r.returncode == 0 and "--concurrency" in r.stdout
    r = run_cli("sevre", database_url=pg_server_url, tmp_path=tmp_path)
    assert r.returncode == 2 and "Did you mean 'serve'" in r.stderr
    r = run_cli("train", "sft", "--help", database_url=pg_server_url, tmp_path=tmp_path)
    assert r.returncode == 0 and "--group-by-length" in r.stdout
    code = "import sys, app.cli, app.main; print(sorted(m for m in sys.modules if m.startswith('trainer')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "['trainer', 'trainer.formats']", out.stderr
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts") if ep.name.startswith("rlhf-forge")}
    assert scripts == {"rlhf-forge": "app.cli:main", "rlhf-forge-train": "trainer.cli:main"}


def test_keys_create_list_revoke(clean_db, factory, tmp_path):
    import hashlib

    factory.dataset("reviewed")
    r = run_cli("keys", "create", "--role", "annotator", "--name", "ann", "--dataset", "reviewed", "--expires-in", "30",
                database_url=clean_db, tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    key = r.stdout.splitlines()[-1]
    assert key.startswith("rf_") and " " not in key and "not shown again" in r.stdout
    stored = factory.rows("SELECT id, name, role, key_hash, created_by, expires_at > now() + interval '29 days' FROM api_key")
    assert len(stored) == 1 and stored[0][1:4] == ("ann", "annotator", hashlib.sha256(key.encode()).hexdigest())
    assert stored[0][4].startswith("cli") and stored[0][5] is True
    r = run_cli("keys", "list", database_url=clean_db, tmp_path=tmp_path)
    assert r.returncode == 0 and "ann" in r.stdout and key[:10] in r.stdout and key not in r.stdout and "reviewed" in r.stdout
    r = run_cli("keys", "revoke", str(stored[0][0]), database_url=clean_db, tmp_path=tmp_path)
    assert r.returncode == 0 and "revoked" in r.stdout
    assert factory.scalar("SELECT revoked_at IS NOT NULL FROM api_key") is True
    for args, fragment in (
        (["--role", "viewer", "--name", "v", "--dataset", "nope"], "dataset 'nope' does not exist"),
        (["--role", "admin", "--name", "a", "--dataset", "reviewed"], "admin keys see every dataset"),
        (["--role", "owner", "--name", "a"], "owner"),
    ):
        r = run_cli("keys", "create", *args, database_url=clean_db, tmp_path=tmp_path)
        assert r.returncode != 0 and fragment in r.stderr, (args, r.stderr)
    assert run_cli("keys", "revoke", "999", database_url=clean_db, tmp_path=tmp_path).returncode == 1


def test_serve_without_keys_refuses_any_address_but_loopback(clean_db, factory, tmp_path):
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    r = run_cli("serve", "--host", "0.0.0.0", "--port", port, "--no-worker", database_url=clean_db, tmp_path=tmp_path)
    assert r.returncode == 1 and "no API key is configured" in r.stderr and "keys create" in r.stderr
    # with a key it starts, and answers only the Host names it knows
    run_cli("keys", "create", "--role", "admin", "--name", "root", database_url=clean_db, tmp_path=tmp_path)
    env = {**os.environ, "DATABASE_URL": clean_db, "FORGE_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--host", "0.0.0.0", "--port", port, "--no-worker"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else "timeout"
                time.sleep(0.2)
        assert r.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/datasets", timeout=5).status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"host": "rebound.example"}, timeout=5).status_code == 400
    finally:
        proc.terminate()
        _, errout = proc.communicate(timeout=30)
    assert "FORGE_ALLOWED_HOSTS" in errout


def _options(command, path=()):
    """(command path, option) for every option of every command, recursively."""
    from typer.core import TyperOption

    name = (*path, command.name)
    for param in command.params:
        if isinstance(param, TyperOption) and not param.hidden and param.name not in ("help", "install_completion", "show_completion"):
            yield " ".join(name), param
    for sub in getattr(command, "commands", {}).values():
        yield from _options(sub, name)


def test_every_option_has_help_and_the_version_prints():
    import typer

    from app.cli import cli as app_cli
    from typer.testing import CliRunner

    from trainer.cli import cli as train_cli

    seen = 0
    for tree in (app_cli, train_cli):
        for where, option in _options(typer.main.get_command(tree)):
            seen += 1
            assert option.help and option.help.strip(), f"{where} {option.opts[0]} has no help text"
    assert seen > 80
    result = CliRunner().invoke(app_cli, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("rlhf-forge ")
    ppo = CliRunner().invoke(train_cli, ["ppo", "--help"], terminal_width=200)
    assert "--val-fraction" not in ppo.output and "Unused" not in ppo.output and "--kl-coef" in ppo.output
