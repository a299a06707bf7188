"""Round trip: export a version, import its files into a new dataset, export again; the
prompt / completion / ranking content is the same (ids aside), for every format that carries
completions or rankings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.app.exports.conftest import wait_for_export

FORMATS = ["sft", "rm", "pairs", "sft_chat", "pairs_chat"]


async def _source(seed):
    """Reviewed data with ties, an edited SFT target, a human ranking and awkward text."""
    ds = await seed.dataset("source")
    for i in range(24):
        texts = [f"answer {i}.{k} «ü» ✓\nsecond line\t\"quoted\"\u2028" for k in range(3)]
        ranks = [[1, 2, 3], [2, 1, 2], [3, 1, 2], [1, 1, 2]][i % 4]
        p, cs, _ = await seed.ranked(ds, f"prompt {i}:  spaced\u00a0out  ", texts, ranks)
        if i == 5:
            cs[2].edited_text = "a reviewer's better answer"
        if i == 6:
            await seed.ranking(p, cs, [3, 2, 1], ranker_kind="human", reviewer="ana", review_status="pending")
    p = await seed.prompt(ds, "four answers")
    cs = [await seed.completion(p, f"four {k}") for k in range(4)]
    await seed.ranking(p, cs, [1, 3, 3, 2])
    await seed.commit()
    return ds


def export(http, ds_id: int, tmp: Path, **options) -> tuple[Path, dict]:
    """Freeze a version and download its files (the API never says where they lie on the server)."""
    r = http.post(f"/api/v1/datasets/{ds_id}/exports", json={"formats": FORMATS, "split": {"seed": 3}, **options})
    assert r.status_code == 202, r.text
    version = r.json()["version"]
    done = wait_for_export(http, ds_id, version)
    assert done["status"] == "succeeded", done
    out = tmp / f"{ds_id}-v{version}"
    out.mkdir(parents=True)
    for name in done["manifest"]["files"]:
        got = http.get(f"/api/v1/datasets/{ds_id}/exports/{version}/files/{name}")
        assert got.status_code == 200, got.text
        (out / name).write_bytes(got.content)
    return out, done["manifest"]


def content(out: Path, manifest: dict, fmt: str) -> list[dict]:
    """Every record of `fmt` over all splits, without ids, in a stable order."""
    rows = []
    for name, info in manifest["files"].items():
        if info["kind"] == fmt:
            for line in (out / name).read_text(encoding="utf-8").split("\n")[:-1]:  # not at U+2028
                rows.append({k: v for k, v in json.loads(line).items() if k != "id"})
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))


@pytest.mark.parametrize(("fmt", "pairs_mode"), [*[(f, "all") for f in FORMATS], ("pairs", "best_vs_rest")])
async def test_export_import_export_keeps_the_content(http, seed, fmt, pairs_mode, tmp_path):
    src = await _source(seed)
    out, manifest = export(http, src.id, tmp_path, pairs_mode=pairs_mode)
    before = content(out, manifest, fmt)
    assert len(before) >= 25

    copy = http.post("/api/v1/datasets", json={"name": f"copy-{fmt}"}).json()["id"]
    splits = {}
    for name, info in sorted(manifest["files"].items()):
        if info["kind"] != fmt:
            continue
        with (out / name).open("rb") as fh:
            r = http.post(f"/api/v1/datasets/{copy}/import", files={"file": (name, fh, "application/x-ndjson")})
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["invalid"] == 0 and report["total"] == info["rows"] and report["format"] == fmt
        assert report["split"] == info["split"] and report["file"] == name
        splits[info["split"]] = splits.get(info["split"], 0) + report["prompts_created"]

    out2, manifest2 = export(http, copy, tmp_path, pairs_mode=pairs_mode)
    assert content(out2, manifest2, fmt) == before
    # each prompt got the split of the file it came from
    for split, n in splits.items():
        listed = http.get(f"/api/v1/datasets/{copy}/prompts", params={"split": split, "limit": 1000}).json()["data"]
        assert len(listed) == n
