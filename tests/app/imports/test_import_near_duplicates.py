"""Both bulk imports follow the duplicate rules of a single add (issue 11): a new prompt nearly
duplicating a stored prompt, or an earlier row of the same input, is skipped, flagged (with the
matching prompt id) or kept; the exact rule (same text: the same prompt) still holds. Over HTTP."""

from __future__ import annotations

import json

import pytest

from tests.app.imports.test_record_import import jsonl, post
from tests.app.test_cli import run_cli

ORIGINAL = "Explain how photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen in green plants, step by step."
NEAR = ORIGINAL.replace("step by step.", "step by step, please.")  # similarity 0.9459
SHOUTED = "EXPLAIN how   photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen in green plants, step by step."
OTHER = "Write a haiku about the sea at night."


@pytest.fixture
def ds(http) -> int:
    return http.post("/api/v1/datasets", json={"name": "near-imports"}).json()["id"]


def prompts(http, ds: int) -> dict[str, dict]:
    return {p["text"]: p for p in http.get(f"/api/v1/datasets/{ds}/prompts", params={"limit": 100}).json()["data"]}


def rm(prompt: str, *answers: str) -> dict:
    return {"prompt": prompt, "completion": list(answers), "ranking": list(range(1, len(answers) + 1))}


def assert_flagged(p: dict, prompt_id: int, similarity: float) -> None:
    assert p["flag_reasons"] == ["near_duplicate"] and p["review_status"] == "needs_review"
    assert p["meta"]["flag_details"]["near_duplicate"] == {"prompt_id": prompt_id, "similarity": similarity}


def assert_plain(p: dict) -> None:
    assert p["flag_reasons"] == [] and p["review_status"] == "pending" and "flag_details" not in p["meta"]


@pytest.mark.parametrize("mode", ["skip", "flag", "keep"])
def test_record_import_checks_new_prompts_against_the_stored_ones(http, ds, factory, mode):
    stored = http.post(f"/api/v1/datasets/{ds}/prompts", json={"text": ORIGINAL}).json()
    body = jsonl(
        rm(NEAR, "Light makes sugar.", "No idea."),  # a near-duplicate of the stored prompt
        rm(OTHER, "Waves under moonlight", "The sea."),
        rm(ORIGINAL, "Chlorophyll absorbs light.", "Plants eat."),  # the exact text: the stored prompt, reused
        rm(NEAR, "Sugar from light.", "Hmm."),  # the same new prompt again, other answers
    )
    r = post(http, ds, body, "rm", near_duplicates=mode)
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["near_duplicate_mode"] == mode and rep["near_duplicates"] == 1
    assert rep["near_duplicate_matches"] == [{"line": 1, "prompt_id": stored["id"], "similarity": 0.9459, "matched_line": None}]
    assert rep["prompts_reused"] == 1 and rep["duplicates"] == 0 and rep["invalid"] == 0
    by_text = prompts(http, ds)
    assert_plain(by_text[OTHER])
    assert by_text[ORIGINAL]["id"] == stored["id"]
    answers = {t for (t,) in factory.rows("SELECT text FROM completion")}
    if mode == "skip":  # both lines of the near-duplicate store nothing: no prompt, no answers, no rankings
        assert (rep["inserted"], rep["prompts_created"], rep["completions_created"], rep["rankings_created"]) == (2, 1, 4, 2)
        assert set(by_text) == {ORIGINAL, OTHER}
        assert not answers & {"Light makes sugar.", "No idea.", "Sugar from light.", "Hmm."}
        return
    assert (rep["inserted"], rep["prompts_created"], rep["completions_created"], rep["rankings_created"]) == (4, 2, 8, 4)
    assert set(by_text) == {ORIGINAL, OTHER, NEAR}
    assert {"Light makes sugar.", "Sugar from light."} <= answers
    if mode == "flag":
        assert_flagged(by_text[NEAR], stored["id"], 0.9459)
    else:
        assert_plain(by_text[NEAR])
    # its provenance and band keys are an imported prompt's: a later add is checked against it
    assert by_text[NEAR]["source"] == "imported" and by_text[NEAR]["provenance"]["import"]["line"] == 1
    later = http.post(f"/api/v1/datasets/{ds}/prompts", json={"text": NEAR + " Thanks"}, params={"near_duplicates": "skip"})
    assert later.status_code == 409


@pytest.mark.parametrize("mode", ["skip", "flag", "keep"])
def test_prompt_import_compares_the_rows_of_one_input_with_each_other(http, ds, mode):
    body = "\n".join(json.dumps(t) for t in [ORIGINAL, OTHER, NEAR, SHOUTED, ORIGINAL, NEAR])
    r = http.post(f"/api/v1/datasets/{ds}/prompts/import", content=body, params={"near_duplicates": mode},
                  headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["duplicates"] == 2 and rep["duplicate_lines"] == [5, 6]  # the exact rule: line 5 is line 1, 6 is 3
    assert rep["near_duplicates"] == 2
    by_text = prompts(http, ds)
    first = by_text[ORIGINAL]["id"]
    # the later row is the near-duplicate of the earlier one; SHOUTED is ORIGINAL up to case and spaces
    assert [(m["line"], m["matched_line"], m["prompt_id"], m["similarity"]) for m in rep["near_duplicate_matches"]] == [
        (3, 1, first, 0.9459), (4, 1, first, 1.0),
    ]
    assert_plain(by_text[ORIGINAL])
    assert_plain(by_text[OTHER])
    if mode == "skip":
        assert rep["inserted"] == 2 and set(by_text) == {ORIGINAL, OTHER}
        return
    assert rep["inserted"] == 4 and set(by_text) == {ORIGINAL, OTHER, NEAR, SHOUTED}
    for text, sim in ((NEAR, 0.9459), (SHOUTED, 1.0)):
        if mode == "flag":
            assert_flagged(by_text[text], first, sim)
        else:
            assert_plain(by_text[text])


@pytest.mark.parametrize("mode", ["skip", "flag", "keep"])
def test_record_import_compares_the_lines_of_one_file_with_each_other(http, ds, factory, mode):
    body = jsonl(
        rm(ORIGINAL, "Chlorophyll absorbs light.", "Plants eat."),
        rm(OTHER, "Waves under moonlight", "The sea."),
        rm(NEAR, "Light makes sugar.", "No idea."),
        rm(ORIGINAL, "Plants eat.", "Chlorophyll absorbs light."),  # the same prompt (exact rule), another ranking
    )
    rep = post(http, ds, body, "rm", near_duplicates=mode).json()
    assert rep["near_duplicates"] == 1
    by_text = prompts(http, ds)
    first = by_text[ORIGINAL]["id"]
    assert rep["near_duplicate_matches"] == [{"line": 3, "prompt_id": first, "similarity": 0.9459, "matched_line": 1}]
    assert_plain(by_text[ORIGINAL])
    assert factory.scalar("SELECT count(*) FROM ranking r JOIN prompt p ON p.id = r.prompt_id WHERE p.text = :t", t=ORIGINAL) == 2
    if mode == "skip":
        assert (rep["inserted"], rep["prompts_created"], rep["completions_created"], rep["rankings_created"]) == (3, 2, 4, 3)
        assert set(by_text) == {ORIGINAL, OTHER}
        assert factory.scalar("SELECT count(*) FROM completion WHERE text = 'Light makes sugar.'") == 0
        return
    assert (rep["inserted"], rep["prompts_created"], rep["completions_created"], rep["rankings_created"]) == (4, 3, 6, 4)
    if mode == "flag":
        assert_flagged(by_text[NEAR], first, 0.9459)
    else:
        assert_plain(by_text[NEAR])


def test_pairs_import_skips_every_pair_of_a_near_duplicate_prompt(http, ds, factory):
    body = jsonl(
        {"prompt": ORIGINAL, "chosen": "a", "rejected": "b"},
        {"prompt": NEAR, "chosen": "a", "rejected": "b"},
        {"prompt": NEAR, "chosen": "b", "rejected": "c"},
        {"prompt": ORIGINAL, "chosen": "b", "rejected": "c"},
    )
    rep = post(http, ds, body, "pairs", near_duplicates="skip").json()
    assert (rep["near_duplicates"], rep["inserted"], rep["duplicates"], rep["prompts_created"]) == (1, 2, 0, 1)
    assert [p for (p,) in factory.rows("SELECT text FROM prompt")] == [ORIGINAL]
    assert factory.scalar("SELECT count(*) FROM ranking r JOIN prompt p ON p.id = r.prompt_id WHERE p.text = :t", t=ORIGINAL) == 2
    assert factory.scalar("SELECT count(*) FROM ranking") == 2 and rep["rankings_created"] == 2


def test_cli_record_import_takes_the_near_duplicate_mode(clean_db, tmp_path, factory):
    f = tmp_path / "data.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in [rm(ORIGINAL, "a", "b"), rm(NEAR, "a", "b"), rm(OTHER, "a", "b")]))
    r = run_cli("import", str(f), "-d", "cli-near", "--format", "rm", "--near-duplicates", "skip", database_url=clean_db, tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "2 inserted, 0 duplicate" in r.stdout and "1 near-duplicate prompt(s) (skip)" in r.stdout
    assert sorted(t for (t,) in factory.rows("SELECT text FROM prompt")) == sorted([ORIGINAL, OTHER])
    f.write_text(json.dumps(rm(SHOUTED, "c", "d")) + "\n")
    r = run_cli("import", str(f), "-d", "cli-near", "--format", "rm", database_url=clean_db, tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "1 near-duplicate prompt(s) (flag)" in r.stdout
    [(flags, detail)] = factory.rows("SELECT flag_reasons, meta->'flag_details'->'near_duplicate' FROM prompt WHERE text = :t", t=SHOUTED)
    assert flags == ["near_duplicate"] and detail["similarity"] == 1.0
    assert detail["prompt_id"] == factory.scalar("SELECT id FROM prompt WHERE text = :t", t=ORIGINAL)


@pytest.mark.parametrize("fmt", ["prompts", "rm"])
def test_an_input_over_the_bound_is_compared_with_the_stored_prompts_only(clean_db, tmp_path, factory, monkeypatch, fmt):
    """Comparing the rows of a huge input with each other costs more than the import: over
    FORGE_IMPORT_WITHIN_INPUT_MAX_ROWS new prompts only the stored ones are compared, and the
    report says so."""
    monkeypatch.setenv("FORGE_IMPORT_WITHIN_INPUT_MAX_ROWS", "2")
    f = tmp_path / "data.jsonl"

    def rows(*texts: str) -> str:
        return "".join(json.dumps(t if fmt == "prompts" else rm(t, "a", "b")) + "\n" for t in texts)

    args = ("--format", "rm") if fmt == "rm" else ()
    f.write_text(rows(ORIGINAL, NEAR, OTHER))  # 3 new prompts > 2: not compared with each other
    r = run_cli("import", str(f), "-d", "bound", *args, database_url=clean_db, tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "3 inserted" in r.stdout and "near-duplicate prompt(s)" not in r.stdout
    assert "compared with the stored ones only" in r.stdout
    assert factory.scalar("SELECT count(*) FROM prompt WHERE flag_reasons <> '{}'") == 0
    f.write_text(rows(SHOUTED, "Name three rivers of Asia."))  # 2 new prompts: within the bound again
    r = run_cli("import", str(f), "-d", "bound", *args, database_url=clean_db, tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "1 near-duplicate prompt(s) (flag)" in r.stdout and "stored ones only" not in r.stdout
    [(flags,)] = factory.rows("SELECT flag_reasons FROM prompt WHERE text = :t", t=SHOUTED)
    assert flags == ["near_duplicate"]
