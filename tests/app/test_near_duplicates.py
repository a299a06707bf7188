"""Near-duplicate prompts (app/prompts/dedup.py): the normal form, the batch MinHash against
datasketch's, and detection on import, single add and the dataset-wide pass, over real HTTP."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from datasketch import MinHash

from app.prompts import dedup

ORIGINAL = "Explain how photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen in green plants, step by step."
NEAR = ORIGINAL.replace("step by step.", "step by step, please.")  # similarity 0.946
SHOUTED = "EXPLAIN how   photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen in green plants, step by step."
FULLWIDTH = ORIGINAL.replace("Explain", "Ｅｘｐｌａｉｎ")  # the same under NFKC
OTHER = "Write a haiku about the sea at night."


def test_the_normal_form_ignores_case_whitespace_and_unicode_form():
    assert dedup.normalize(" Ｈｅｌｌｏ\tWORLD\n ß ") == "hello world ss"
    for variant in (SHOUTED, FULLWIDTH):
        assert dedup.similarity(ORIGINAL, variant) == 1.0
        assert (dedup.lsh_keys([ORIGINAL], 1) == dedup.lsh_keys([variant], 1)).all()
    assert dedup.similarity(ORIGINAL, NEAR) == pytest.approx(0.946, abs=0.001)
    assert dedup.similarity(ORIGINAL, OTHER) == 0.0
    # keys are per dataset: the same text in another dataset shares none
    assert not np.intersect1d(dedup.lsh_keys([ORIGINAL], 1), dedup.lsh_keys([ORIGINAL], 2)).size


def test_batch_minhash_equals_datasketch():
    texts = [ORIGINAL, NEAR, OTHER, "x", "???", "naïve café, ΑΒΓ δ", "a\nb\tc  d"]
    sigs = dedup.signatures(texts)
    for text, sig in zip(texts, sigs, strict=True):
        m = MinHash(num_perm=dedup.NUM_PERM, seed=1, hashfunc=lambda v: v)
        m.update_batch(list(dedup.shingle_sets([text])[0]))
        assert (m.hashvalues == sig).all(), text
    # a text's signature does not depend on the batch it is computed in
    assert (dedup.signatures([OTHER])[0] == sigs[2]).all()


def test_batch_pair_similarities_equal_the_jaccard_of_the_shingle_sets():
    rng = np.random.default_rng(7)
    words = "a b c the sea at night light café naïve ΑΒΓ ??? x y z".split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(0, 14)))) for _ in range(400)] + [ORIGINAL, NEAR, SHOUTED, OTHER, "", "???"]
    pairs = rng.integers(0, len(texts), size=(5000, 2))
    sets = dedup.shingle_sets(texts)
    assert dedup.pair_similarities(texts, pairs).tolist() == [dedup.jaccard(sets[a], sets[b]) for a, b in pairs.tolist()]
    got = dedup.best_pairs([(1, 2), (2, 3), (4, 1)], {1: ORIGINAL, 2: NEAR, 3: OTHER, 4: SHOUTED}, 0.7)
    assert got == [(2, 1, dedup.similarity(ORIGINAL, NEAR)), (4, 1, 1.0)]


@pytest.fixture
def ds(http):
    return http.post("/api/v1/datasets", json={"name": "near"}).json()


def _add(http, ds, text, **params):
    return http.post(f"/api/v1/datasets/{ds['id']}/prompts", json={"text": text}, params=params)


def _import(http, ds, texts, **params):
    body = "\n".join(json.dumps(t) for t in texts)
    r = http.post(f"/api/v1/datasets/{ds['id']}/prompts/import", content=body,
                  headers={"content-type": "application/x-ndjson"}, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def _prompts(http, ds):
    return http.get(f"/api/v1/datasets/{ds['id']}/prompts", params={"limit": 100}).json()["data"]


def test_single_add_flags_by_default_skips_or_keeps_on_request(http, ds):
    first = _add(http, ds, ORIGINAL).json()
    assert first["flag_reasons"] == [] and first["review_status"] == "pending"
    flagged = _add(http, ds, NEAR)
    assert flagged.status_code == 201, flagged.text
    body = flagged.json()
    assert body["flag_reasons"] == ["near_duplicate"] and body["review_status"] == "needs_review"
    assert body["meta"]["flag_details"]["near_duplicate"] == {"prompt_id": first["id"], "similarity": 0.9459}
    skipped = _add(http, ds, SHOUTED, near_duplicates="skip")
    assert skipped.status_code == 409
    assert skipped.json()["error"]["details"]["near_duplicate"]["prompt_id"] == first["id"]
    assert "nearly duplicates prompt" in skipped.json()["error"]["message"]
    kept = _add(http, ds, FULLWIDTH, near_duplicates="keep").json()
    assert kept["flag_reasons"] == [] and "flag_details" not in kept["meta"]
    assert _add(http, ds, OTHER).json()["flag_reasons"] == []
    assert _add(http, ds, "x", near_duplicates="maybe").status_code == 422


@pytest.mark.parametrize("mode", ["skip", "flag", "keep"])
def test_import_checks_against_the_stored_prompts(http, ds, mode):
    stored = _add(http, ds, ORIGINAL).json()
    rep = _import(http, ds, [OTHER, NEAR, SHOUTED, ORIGINAL], near_duplicates=mode)
    assert rep["near_duplicate_mode"] == mode and rep["near_duplicates"] == 2
    assert [(m["line"], m["prompt_id"]) for m in rep["near_duplicate_matches"]] == [(2, stored["id"]), (3, stored["id"])]
    assert rep["duplicates"] == 1 and rep["duplicate_lines"] == [4]  # the exact text is a duplicate, as before
    by_text = {p["text"]: p for p in _prompts(http, ds)}
    if mode == "skip":
        assert rep["inserted"] == 1 and set(by_text) == {ORIGINAL, OTHER}
        return
    assert rep["inserted"] == 3 and set(by_text) == {ORIGINAL, OTHER, NEAR, SHOUTED}
    for text in (NEAR, SHOUTED):
        p = by_text[text]
        if mode == "flag":
            assert p["flag_reasons"] == ["near_duplicate"] and p["review_status"] == "needs_review"
            assert p["meta"]["flag_details"]["near_duplicate"]["prompt_id"] == stored["id"]
        else:
            assert p["flag_reasons"] == [] and p["review_status"] == "pending"
    assert by_text[OTHER]["flag_reasons"] == []


def test_imported_prompts_get_band_keys_that_later_adds_are_checked_against(http, ds):
    _import(http, ds, [ORIGINAL, OTHER])
    r = _add(http, ds, NEAR).json()
    assert r["flag_reasons"] == ["near_duplicate"]
    assert r["meta"]["flag_details"]["near_duplicate"]["prompt_id"] == _prompts(http, ds)[0]["id"]


def test_the_dataset_wide_pass_clusters_what_is_stored(http, ds, settings, database_url):
    # stored without any check (keep), and one row written straight into the table without keys
    _import(http, ds, [ORIGINAL, OTHER, NEAR, SHOUTED], near_duplicates="keep")
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.begin() as c:
        c.execute(text("INSERT INTO prompt (dataset_id, text, content_hash) VALUES (:d, :t, :h)"),
                  {"d": ds["id"], "t": FULLWIDTH, "h": b"\x01" * 32})
    engine.dispose()
    ids = {p["text"]: p["id"] for p in _prompts(http, ds)}
    r = http.post(f"/api/v1/datasets/{ds['id']}/prompts/dedup")
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["keyed_now"] == 1 and rep["prompts"] == 5 and rep["flagged"] == 0
    assert rep["clusters"] == 1 and rep["clustered_prompts"] == 4
    (cluster,) = rep["found"]
    assert cluster["root"] == ids[ORIGINAL]
    assert cluster["members"] == sorted(ids[t] for t in (ORIGINAL, NEAR, SHOUTED, FULLWIDTH))
    assert all(b == ids[ORIGINAL] for _, b, _ in cluster["pairs"])
    # with flag: every later member is flagged as a near-duplicate of the oldest
    assert http.post(f"/api/v1/datasets/{ds['id']}/prompts/dedup", params={"flag": "true"}).json()["flagged"] == 3
    flagged = {p["text"] for p in _prompts(http, ds) if "near_duplicate" in p["flag_reasons"]}
    assert flagged == {NEAR, SHOUTED, FULLWIDTH}
    # the command line runs the same pass
    env = {**os.environ, "DATABASE_URL": database_url, "FORGE_DATA_DIR": str(settings.data_dir)}
    out = subprocess.run([sys.executable, "-m", "app.cli", "dedup", "--dataset", "near", "--json"],
                         env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["clustered_prompts"] == 4
    missing = subprocess.run([sys.executable, "-m", "app.cli", "dedup", "--dataset", "nope"],
                             env=env, capture_output=True, text=True, timeout=120, check=False)
    assert missing.returncode != 0 and "nope" in missing.stderr + missing.stdout


def test_the_migration_keys_the_prompts_stored_before_it(pg_server_url):
    """Prompts written before band keys existed get them when the schema is upgraded."""
    import uuid
    from pathlib import Path

    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from app import db

    script = ScriptDirectory.from_config(db.alembic_config("postgresql+psycopg://x/x"))
    (mine,) = [r for r in script.walk_revisions() if Path(r.path).name.endswith("_integrity.py")]
    name = f"forge_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    try:
        db.upgrade(url, mine.down_revision)
        engine = create_engine(url)
        with engine.begin() as c:
            ds = c.execute(text("INSERT INTO dataset (name) VALUES ('old') RETURNING id")).scalar()
            for i, body in enumerate([ORIGINAL, OTHER]):
                c.execute(text("INSERT INTO prompt (dataset_id, text, content_hash) VALUES (:d, :t, :h)"),
                          {"d": ds, "t": body, "h": bytes([i]) * 32})
        db.upgrade(url, mine.revision)
        with engine.connect() as c:
            keys = [list(r[0]) for r in c.execute(text("SELECT lsh_keys FROM prompt ORDER BY id"))]
        engine.dispose()
        assert keys == dedup.lsh_keys([ORIGINAL, OTHER], ds).tolist()
        db.downgrade(url, mine.down_revision)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def test_a_large_import_finds_its_near_duplicates_with_the_set_based_join(http, ds):
    """Over SMALL_BATCH rows the stage is checked with one pass over the dataset's keys."""
    from app.prompts.repository import SMALL_BATCH

    stored = _add(http, ds, ORIGINAL).json()["id"]
    _import(http, ds, [f"Question {i}: explain idea #{i * 7919 % 100003} in the field of math." for i in range(300)])
    rows = [f"Question {i}: explain idea #{i * 7919 % 100003} in the field of code." for i in range(5000, 5000 + SMALL_BATCH)] + [NEAR]
    rep = _import(http, ds, rows)
    assert rep["inserted"] == SMALL_BATCH + 1
    assert [(m["line"], m["prompt_id"]) for m in rep["near_duplicate_matches"]] == [(SMALL_BATCH + 1, stored)]


async def test_the_batch_api_finds_near_duplicates_both_ways(session):
    """find_near_duplicates, the helper other importers call, for a few texts and for many."""
    from app.models import Dataset, Prompt
    from app.prompts.hashing import content_hash
    from app.prompts.repository import SMALL_BATCH

    ds = Dataset(name="batch")
    session.add(ds)
    await session.flush()
    original = Prompt(dataset_id=ds.id, text=ORIGINAL, content_hash=content_hash(ORIGINAL), lsh_keys=dedup.lsh_keys([ORIGINAL], ds.id)[0].tolist())
    session.add(original)
    await session.flush()
    for texts in ([OTHER, NEAR], [f"Filler prompt number {i} about rivers" for i in range(SMALL_BATCH)] + [OTHER, NEAR]):
        matches, keys = await dedup.find_near_duplicates(session, ds.id, texts, 0.7)
        assert keys.shape == (len(texts), dedup.BANDS)
        assert [(m.index, m.prompt_id) for m in matches if m] == [(len(texts) - 1, original.id)]
        assert matches[-1].similarity == pytest.approx(0.946, abs=0.001)
    matches, _ = await dedup.find_near_duplicates(session, ds.id, [NEAR], 0.7, exclude_ids=[original.id])
    assert matches == [None]


def test_prompts_made_by_the_records_import_are_keyed_and_checked_against(http, ds):
    body = json.dumps({"prompt": ORIGINAL, "completion": "Light, water and CO2 become sugar and oxygen."})
    r = http.post(f"/api/v1/datasets/{ds['id']}/import", params={"format": "sft"}, content=body,
                  headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    (stored,) = _prompts(http, ds)
    flagged = _add(http, ds, NEAR).json()
    assert flagged["meta"]["flag_details"]["near_duplicate"]["prompt_id"] == stored["id"]


def test_band_keys_of_texts_that_normalise_to_nothing():
    """The fuzzer found it: a batch whose texts have no code point left after NFKC + casefold
    (an empty text) made the vectorised hashing index an empty array (a 500 on import)."""
    from app.prompts import dedup

    keys = dedup.lsh_keys(["", "a b", " "], 1)
    assert keys.shape == (3, 3)
    assert (dedup.lsh_keys([""], 1) == keys[0]).all()
