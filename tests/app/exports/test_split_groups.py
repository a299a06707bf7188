"""Splits that never leak: a prompt's own split wins, near-duplicates and evol lineages share
their group's split, and every version's manifest reports the groups and a leakage check."""

import json

import pytest

from app.exports import service
from app.exports.repository import split_of
from app.exports.schemas import ExportCreate, SplitSpec
from app.models import Dataset
from tests.app.exports.conftest import wait_for_export

API = "/api/v1"
ORIGINAL = "Explain how photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen in green plants, step by step."
NEAR = ORIGINAL.replace("step by step.", "step by step, please.")
CHILD = "Explain photosynthesis to a ten-year-old, then give the chemical equation and name every input and output."
SPEC = {"train": 0.34, "validation": 0.33, "test": 0.33}


def _split(seed: int, pid: int) -> str:
    return split_of(seed, pid, SplitSpec(seed=seed, **SPEC))


def _ds(http, name="splits"):
    return http.post(f"{API}/datasets", json={"name": name}).json()["id"]


def _add(http, ds, text, **params):
    r = http.post(f"{API}/datasets/{ds}/prompts", json={"text": text}, params=params)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _approve_all(factory, ds):
    with factory.engine.begin() as c:
        from sqlalchemy import text

        c.execute(text("UPDATE prompt SET review_status = 'approved' WHERE dataset_id = :d"), {"d": ds})


def _rl(http, ds, seed, **params):
    r = http.get(f"{API}/datasets/{ds}/exports/rl.jsonl", params={"seed": seed, **SPEC, **params})
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines()]


def _version(http, ds, seed):
    r = http.post(f"{API}/datasets/{ds}/exports", json={"formats": ["rl"], "split": {"seed": seed, **SPEC}})
    assert r.status_code == 202, r.text
    body = wait_for_export(http, ds, r.json()["version"])
    assert body["status"] == "succeeded", body
    return body


def _splits_of(export, factory):
    return dict(factory.rows("SELECT prompt_id, split FROM export_item WHERE export_id = :e", e=export["id"]))


def test_a_prompts_own_split_wins_from_import_patch_and_the_api(http, factory):
    ds = _ds(http)
    lines = [{"prompt": f"Question number {i} about a different topic entirely"} for i in range(30)]
    lines[3]["split"] = "test"
    body = "\n".join(json.dumps(x) for x in lines)
    http.post(f"{API}/datasets/{ds}/prompts/import", content=body, headers={"content-type": "application/x-ndjson"})
    pids = [r[0] for r in factory.rows("SELECT id FROM prompt WHERE dataset_id = :d ORDER BY id", d=ds)]
    imported, patched = pids[3], pids[5]
    posted = http.post(f"{API}/datasets/{ds}/prompts", json={"text": "A held-out validation prompt", "split": "validation"}).json()["id"]
    assert http.patch(f"{API}/prompts/{patched}", json={"split": "test"}).status_code == 200
    _approve_all(factory, ds)
    # a seed under which none of the three would land where it was put by its hash alone
    seed = next(s for s in range(200) if _split(s, imported) != "test" and _split(s, patched) != "test" and _split(s, posted) != "validation")
    test_ids = {int(x["id"]) for x in _rl(http, ds, seed, split="test")}
    assert {imported, patched} <= test_ids
    assert posted in {int(x["id"]) for x in _rl(http, ds, seed, split="validation")}
    frozen = _splits_of(_version(http, ds, seed), factory)
    assert (frozen[imported], frozen[patched], frozen[posted]) == ("test", "test", "validation")
    # prompts without a split keep the seeded hash
    assert all(frozen[p] == _split(seed, p) for p in pids if p not in (imported, patched))


@pytest.fixture
def family(http, factory):
    """An original, its near-duplicate (stored as is) and an evol child, all approved."""
    ds = _ds(http)
    original = _add(http, ds, ORIGINAL)
    near = _add(http, ds, NEAR, near_duplicates="keep")
    child = factory.prompt(ds, CHILD, source="synthetic", provenance={"parent_prompt_id": original, "operation": "deepen"})
    others = [_add(http, ds, f"Unrelated prompt {i}: name a river in country number {i}") for i in range(6)]
    _approve_all(factory, ds)
    # a seed that puts the original in train and both relatives elsewhere by their own hash
    seed = next(s for s in range(500) if _split(s, original) == "train" and _split(s, near) != "train" and _split(s, child) != "train")
    return ds, original, near, child, others, seed


def test_an_evol_child_and_a_near_duplicate_follow_their_original(http, factory, family):
    ds, original, near, child, others, seed = family
    train = {int(x["id"]) for x in _rl(http, ds, seed, split="train")}
    assert {original, near, child} <= train
    export = _version(http, ds, seed)
    frozen = _splits_of(export, factory)
    assert frozen[original] == frozen[near] == frozen[child] == "train"
    assert dict(factory.rows("SELECT prompt_id, split_group FROM export_item WHERE export_id = :e AND split_group IS NOT NULL",
                             e=export["id"])) == {original: original, near: original, child: original}
    split = export["manifest"]["split"]
    groups = split["groups"]
    assert (groups["groups"], groups["grouped_prompts"], groups["near_duplicate_pairs"], groups["lineage_links"]) == (1, 3, 1, 1)
    assert groups["list"] == [{"root": original, "split": "train", "members": sorted([original, near, child])}]
    assert split["leakage"]["near_duplicate_pairs_across_splits"] == 0
    assert split["leakage"]["lineage_links_across_splits"] == 0
    assert export["integrity"] == {k: split[k] for k in ("groups", "leakage")}


async def test_bypassing_the_groups_makes_the_leakage_check_non_zero(http, factory, family, session):
    ds, original, near, child, others, seed = family
    dataset = await session.get(Dataset, ds)
    export = await service.create(session, dataset, ExportCreate(formats=["rl"], split={"seed": seed, **SPEC}), "test")
    await service.freeze(session, export, threshold=0.7, use_groups=False)
    await session.commit()
    await session.refresh(export)
    leakage = export.integrity["leakage"]
    assert leakage["near_duplicate_pairs_across_splits"] == 1 and leakage["lineage_links_across_splits"] == 1
    assert sorted(map(tuple, leakage["examples"])) == sorted([(near, original), (child, original)])


def test_conflicting_explicit_splits_go_to_the_most_held_out(http, factory):
    ds = _ds(http)
    original = http.post(f"{API}/datasets/{ds}/prompts", json={"text": ORIGINAL, "split": "train"}).json()["id"]
    near = http.post(f"{API}/datasets/{ds}/prompts", json={"text": NEAR, "split": "test"}, params={"near_duplicates": "keep"}).json()["id"]
    _approve_all(factory, ds)
    export = _version(http, ds, 0)
    assert _splits_of(export, factory) == {original: "test", near: "test"}
    (conflict,) = export["manifest"]["split"]["groups"]["conflicts"]
    assert conflict == {"root": original, "split": "test", "explicit": {str(original): "train", str(near): "test"},
                        "overridden": [original]}
    assert export["manifest"]["split"]["leakage"]["near_duplicate_pairs_across_splits"] == 0
