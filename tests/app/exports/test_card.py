"""A version's folder is a Hugging Face dataset repository: `load_dataset(folder, format)` loads
each format with its splits through the card's `configs:`; the card says what is inside; pairs
never hold chosen == rejected; Parquet beside the JSONL on request."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import datasets
import pytest
import yaml

from trainer import formats as F

from .conftest import wait_for_export

FORMATS = ["sft", "rm", "rl", "pairs", "sft_chat", "pairs_chat"]


async def _dataset(seed, n: int = 24):
    ds = await seed.dataset("card-v1")
    for i in range(n):
        texts = [f"answer {i}.{k}" for k in range(3)]
        if i % 3 == 0:
            texts[2] = texts[0]  # two equal texts ranked apart: a pair that must not be written
        await seed.ranked(ds, f"prompt {i}", texts, [1, 2, 3], judge_model="judge-x", template_version="listwise-v1")
    await seed.commit()
    return ds


def _export(http, ds_id: int, **body) -> dict:
    r = http.post(f"/api/v1/datasets/{ds_id}/exports", json=body)
    assert r.status_code == 202, r.text
    done = wait_for_export(http, ds_id, r.json()["version"])
    assert done["status"] == "succeeded", done
    return done


def _folder(settings, done: dict) -> Path:
    """Where the version lies on the server (the API does not say)."""
    return settings.data_dir / "exports" / str(done["dataset_id"]) / f"v{done['version']}"


@pytest.mark.parametrize("parquet", [False, True])
async def test_each_format_loads_by_name_with_its_splits(http, seed, parquet, base_settings):
    ds = await _dataset(seed)
    done = _export(http, ds.id, formats=FORMATS, parquet=parquet, license="cc-by-4.0",
                   split={"seed": 3, "train": 0.6, "validation": 0.2, "test": 0.2})
    out, counts = _folder(base_settings, done), done["manifest"]["counts"]
    for fmt in FORMATS:
        loaded = datasets.load_dataset(str(out), fmt)
        expected = {split: n for split, n in counts[fmt].items() if n}
        assert {split: loaded[split].num_rows for split in loaded} == expected, fmt
    pairs = datasets.load_dataset(str(out), "pairs")
    assert all(row["chosen"] != row["rejected"] for split in pairs for row in pairs[split])
    # 8 of 24 prompts hold two equal texts ranked apart: the RM row keeps the better-ranked copy,
    # so those give 1 pair, not 3 (and never one with chosen == rejected)
    assert sum(counts["pairs"].values()) == 16 * 3 + 8 * 1
    for name, info in done["manifest"]["files"].items():
        recs = F.read_jsonl(out / name, info["kind"])
        if info["kind"] == "rm":
            assert info["pairs"] == sum(len(r.pairs()) for r in recs)
    assert (out / "sft.train.parquet").exists() == parquet

    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["license"] == "cc-by-4.0"
    assert [c["config_name"] for c in header["configs"]] == sorted(FORMATS)
    assert hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest() in card
    assert "`judge-x` with template `listwise-v1`: 24 rankings" in card
    assert "prompts: approved 24" in card
    assert f"huggingface-cli upload <user>/<name> {out} . --repo-type dataset" in card
    assert f"| `sft` | {counts['sft']['train']} | {counts['sft']['validation']} | {counts['sft']['test']} |" in card


async def test_a_card_without_licence_says_so(http, seed, base_settings):
    ds = await _dataset(seed, n=3)
    done = _export(http, ds.id, formats=["sft"], split={"train": 1, "validation": 0, "test": 0})
    card = (_folder(base_settings, done) / "README.md").read_text()
    assert yaml.safe_load(card.split("---")[1])["license"] == "other" and "Not set" in card
    assert json.loads((_folder(base_settings, done) / "manifest.json").read_text())["options"]["license"] is None
    r = http.post(f"/api/v1/datasets/{ds.id}/exports", json={"license": "not a licence!"})
    assert r.status_code == 422 and "license" in r.text
