"""`rlhf-forge import FILE --dataset NAME --format rm|pairs|...`, run as a user would."""

import json

from tests.app.test_cli import run_cli


def test_cli_imports_records_with_split_from_the_name_and_reports_lines(clean_db, tmp_path, factory):
    f = tmp_path / "rm.test.jsonl"
    lines = [
        {"prompt": "p1", "completion": ["a", "b"], "ranking": [1, 2]},
        {"prompt": "p1", "completion": ["b", "a"], "ranking": [2, 1]},
        {"prompt": "p2", "completion": ["a"], "ranking": [1]},
    ]
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    r = run_cli("import", str(f), "--dataset", "cli-rm", "--format", "rm", database_url=clean_db, tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "1 inserted, 1 duplicate, 1 invalid of 3 rows" in r.stdout
    assert "line 3: an RM record needs at least 2 completions" in r.stdout
    assert "rankings 1 new" in r.stdout
    assert factory.rows("SELECT text, split, provenance->'import'->>'by' FROM prompt") == [("p1", "test", "cli")]

    r = run_cli("import", str(f), "-d", "cli-rm", "--format", "rm", "--all-or-nothing", database_url=clean_db, tmp_path=tmp_path)
    assert r.returncode == 1 and "line 3:" in r.stderr and "nothing was imported" in r.stderr

    r = run_cli("import", str(f), "-d", "cli-rm", "--format", "rm", "--split", "dev", database_url=clean_db, tmp_path=tmp_path)
    assert r.returncode == 1 and "--split must be" in r.stderr
