"""Bulk exports: a job that freezes a version and writes files + manifest + archive; versions
render byte-identically later; the files load in `datasets`; the CLI does the same."""

from __future__ import annotations

import shutil

import asyncio
import hashlib
import io
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from trainer import formats as F

from .conftest import wait_for_export


async def _reviewed(seed, n: int = 40):
    ds = await seed.dataset("helpful-v1")
    for i in range(n):
        texts = [f"answer {i}.{k} ✓\nwith a second line" for k in range(3)]
        ranks = [[1, 2, 3], [2, 1, 2], [3, 1, 2], [1, 1, 2]][i % 4]
        await seed.ranked(ds, f"prompt {i}: «unicode» \"quoted\"", texts, ranks)
    for i in range(5):
        await seed.prompt(ds, f"rl only {i}")
    await seed.commit()
    return ds


def _post(http, ds_id: int, **body) -> dict:
    r = http.post(f"/api/v1/datasets/{ds_id}/exports", json=body)
    assert r.status_code == 202, r.text
    return r.json()


async def test_bulk_export_writes_files_manifest_and_archive(http, seed, tmp_path, base_settings):
    ds = await _reviewed(seed)
    created = _post(http, ds.id, formats=["sft", "rm", "rl", "pairs", "sft_chat", "pairs_chat"], margin=True,
                    split={"seed": 1, "train": 0.5, "validation": 0.25, "test": 0.25})
    assert created["version"] == 1 and created["status"] in ("queued", "running", "succeeded")
    done = wait_for_export(http, ds.id, 1)
    assert done["status"] == "succeeded", done
    assert done["progress"]["total"] == done["progress"]["done"] > 0
    manifest = F.Manifest(**done["manifest"])
    assert "path" not in done  # where the files lie on the server is not said
    out = base_settings.data_dir / "exports" / str(ds.id) / "v1"
    assert F.Manifest.load(out / "manifest.json") == manifest
    assert manifest.verify(out) == []  # every sha256 matches the file on disk
    assert manifest.format_version == F.FORMAT_VERSION and manifest.dataset == "helpful-v1"
    assert manifest.dataset_version == 1 and manifest.split["seed"] == 1 and manifest.split["train"] == 0.5
    assert manifest.filters["status"] == ["approved"]
    assert manifest.created_at.endswith("Z")
    # counts: 40 SFT/RM prompts and 45 RL prompts over the splits; pairs = C(3,2) minus ties
    assert sum(manifest.counts["sft"].values()) == 40 and sum(manifest.counts["rl"].values()) == 45
    assert sum(manifest.counts["pairs"].values()) == 10 * 3 + 10 * 2 + 10 * 3 + 10 * 2
    seen: dict[str, set[str]] = {}
    for name, info in manifest.files.items():
        recs = F.read_jsonl(out / name, info["kind"])
        assert len(recs) == info["rows"] > 0
        if info["kind"] == "rm":
            assert info["pairs"] == sum(len(r.pairs()) for r in recs)
        if info["kind"] in ("sft", "rm", "rl"):
            ids = {r.id for r in recs}
            for split, other in seen.items():  # no prompt in two splits
                if split != info["split"]:
                    assert not ids & other
            seen.setdefault(info["split"], set()).update(ids)

    # downloads: one file, the manifest, the archive
    r = http.get(f"/api/v1/datasets/{ds.id}/exports/1/files/sft.train.jsonl")
    assert r.status_code == 200 and r.content == (out / "sft.train.jsonl").read_bytes()
    assert http.get(f"/api/v1/datasets/{ds.id}/exports/1/files/manifest.json").json()["files"] == manifest.files
    r = http.get(f"/api/v1/datasets/{ds.id}/exports/1/files/sft/%2E%2E/%2E%2E/%2E%2E/pyproject.toml")
    assert r.status_code == 404
    r = http.get(done["archive_url"])
    assert r.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
        names = {m.name for m in tar.getmembers()}
        assert names == {f"v1/{n}" for n in [*manifest.files, "manifest.json", "README.md"]}
        data = tar.extractfile("v1/rm.train.jsonl").read()
        assert hashlib.sha256(data).hexdigest() == manifest.files["rm.train.jsonl"]["sha256"]
    listed = http.get(f"/api/v1/datasets/{ds.id}/exports").json()
    assert len(listed["data"]) == 1 and listed["next_cursor"] is None and listed["data"][0]["version"] == 1


async def test_files_load_with_datasets(http, seed, base_settings):
    import datasets

    ds = await _reviewed(seed, n=12)
    _post(http, ds.id, formats=["sft", "rm", "rl", "pairs", "sft_chat", "pairs_chat"], margin=True,
          split={"train": 1, "validation": 0, "test": 0})
    done = wait_for_export(http, ds.id, 1)
    out = base_settings.data_dir / "exports" / str(ds.id) / "v1"
    sft = datasets.load_dataset("json", data_files={"train": str(out / "sft.train.jsonl")})["train"]
    assert sft.num_rows == 12 and set(sft.column_names) == {"prompt", "completion", "id"}
    rm = datasets.load_dataset("json", data_files=str(out / "rm.train.jsonl"))["train"]
    assert len(rm[0]["completion"]) == len(rm[0]["ranking"]) == 3
    pairs = datasets.load_dataset("json", data_files=str(out / "pairs.train.jsonl"))["train"]
    assert {"prompt", "chosen", "rejected", "margin"} <= set(pairs.column_names)
    assert pairs.num_rows == done["manifest"]["counts"]["pairs"]["train"]
    chat = datasets.load_dataset("json", data_files=str(out / "sft_chat.train.jsonl"))["train"]
    assert [m["role"] for m in chat[0]["messages"]] == ["user", "assistant"]
    chat_pairs = datasets.load_dataset("json", data_files=str(out / "pairs_chat.train.jsonl"))["train"]
    assert chat_pairs[0]["chosen"][0]["role"] == "assistant" and chat_pairs[0]["prompt"][0]["role"] == "user"
    rl = datasets.load_dataset("json", data_files=str(out / "rl.train.jsonl"))["train"]
    assert rl.num_rows == 17


async def test_a_version_renders_byte_identically_after_new_reviews(http, seed, session):
    ds = await _reviewed(seed, n=20)
    _post(http, ds.id, margin=True)
    v1 = wait_for_export(http, ds.id, 1)
    assert v1["status"] == "succeeded"

    def frozen(fmt: str, split: str, **params) -> bytes:
        r = http.get(f"/api/v1/datasets/{ds.id}/exports/{fmt}.jsonl", params={"version": 1, "split": split, **params})
        assert r.status_code == 200, r.text
        return r.content

    # new reviews: an edit, a human re-rank, a rejection, a new prompt, a deleted prompt
    from sqlalchemy import text as sql

    await session.execute(sql("UPDATE completion SET edited_text = 'EDITED' WHERE id = 1"))
    await session.execute(sql("UPDATE completion SET review_status = 'rejected' WHERE id = 5"))
    await session.execute(sql(
        "INSERT INTO ranking (dataset_id, prompt_id, completion_ids, ranks, ranker_kind, review_status) "
        "SELECT dataset_id, prompt_id, ARRAY[7, 8, 9], ARRAY[3, 2, 1], 'human', 'approved' FROM completion WHERE id = 7"
    ))
    await session.execute(sql("DELETE FROM prompt WHERE text LIKE 'prompt 19:%'"))
    await seed.prompt(ds, "brand new")
    await seed.commit()

    for name, info in v1["manifest"]["files"].items():
        fmt, split = name.removesuffix(".jsonl").split(".")
        body = frozen(fmt, split)  # rendered with the version's own options (margin)
        assert hashlib.sha256(body).hexdigest() == info["sha256"], name
    # live rows moved on, and a new version sees them
    live = http.get(f"/api/v1/datasets/{ds.id}/exports/sft.jsonl").text
    assert "EDITED" in live and b"EDITED" not in frozen("sft", "train") + frozen("sft", "validation") + frozen("sft", "test")
    _post(http, ds.id, margin=True)
    v2 = wait_for_export(http, ds.id, 2)
    assert v2["status"] == "succeeded"
    assert v2["manifest"]["files"] != v1["manifest"]["files"]
    assert sum(v2["manifest"]["counts"]["rl"].values()) == sum(v1["manifest"]["counts"]["rl"].values())  # -1 +1


async def test_cli_export_and_rerender(seed, database_url, tmp_path, monkeypatch):
    from app.config import get_settings

    ds = await _reviewed(seed, n=10)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("FORGE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    try:
        runner = CliRunner()  # each run in a thread: the CLI starts its own event loop
        out = tmp_path / "out"
        result = await asyncio.to_thread(runner.invoke, cli, ["export", "--dataset", ds.name, "--out", str(out), "--margin", "--seed", "3", "--archive"])
        assert result.exit_code == 0, result.output
        manifest = F.Manifest.load(out / "manifest.json")
        assert manifest.verify(out) == [] and manifest.dataset_version == 1 and manifest.split["seed"] == 3
        assert (tmp_path / "out.tar.gz").is_file()
        assert "sft.train.jsonl" in result.output
        again = tmp_path / "again"
        result = await asyncio.to_thread(runner.invoke, cli, ["export", "--dataset", ds.name, "--out", str(again), "--version", "1"])
        assert result.exit_code == 0, result.output
        assert F.Manifest.load(again / "manifest.json").files == manifest.files
        assert manifest.verify(again) == []
        result = await asyncio.to_thread(runner.invoke, cli, ["export", "--dataset", "nope", "--out", str(again)])
        assert result.exit_code == 1 and "does not exist" in result.output
        result = await asyncio.to_thread(runner.invoke, cli, ["export", "--dataset", ds.name, "--out", str(again), "--train", "0.5"])
        assert result.exit_code == 2 and "sum to 1" in result.output
    finally:
        get_settings.cache_clear()


async def test_bad_bulk_requests(http, seed):
    ds = await seed.dataset()
    await seed.commit()
    cases = [
        ({"formats": ["xml"]}, "formats"),
        ({"formats": []}, "formats"),
        ({"split": {"train": 0.7, "validation": 0.7, "test": 0}}, "sum to 1"),
        ({"filters": {"status": []}}, "status"),
        ({"filters": {"unknown": 1}}, "unknown"),
    ]
    for body, word in cases:
        r = http.post(f"/api/v1/datasets/{ds.id}/exports", json=body)
        assert r.status_code == 422 and word in r.json()["error"]["message"], (body, r.text)
    assert http.get(f"/api/v1/datasets/{ds.id}/exports").json()["data"] == []
    r = http.get(f"/api/v1/datasets/{ds.id}/exports/1/archive")
    assert r.status_code == 404


async def test_the_job_is_safe_to_run_twice_and_records_failures(seed, session, engine, base_settings, tmp_path):
    from sqlalchemy import text as sql

    from app import db
    from app.exports import service, tasks
    from app.exports.schemas import ExportCreate

    ds = await _reviewed(seed, n=6)
    export = await service.create(session, ds, ExportCreate(), actor="test")
    await session.commit()
    sessions = db.session_factory(engine)
    settings = base_settings.model_copy(update={"data_dir": tmp_path})
    first = await tasks.run_export(export.id, sessions=sessions, settings=settings)
    await session.execute(sql("UPDATE completion SET edited_text = 'later edit'"))
    await session.commit()
    second = await tasks.run_export(export.id, sessions=sessions, settings=settings)  # a repeated job
    assert second.status == "succeeded" and second.frozen_at == first.frozen_at  # not frozen again
    assert second.manifest["files"] == first.manifest["files"]
    items = (await session.execute(sql("SELECT count(*) FROM export_item WHERE export_id = :e"), {"e": export.id})).scalar()
    assert items == 6 + 5  # ranked prompts and RL-only prompts

    (tmp_path / "blocker").write_text("a file where the export directory should go")
    broken = base_settings.model_copy(update={"data_dir": tmp_path / "blocker"})
    export2 = await service.create(session, ds, ExportCreate(), actor="test")
    await session.commit()
    with pytest.raises(OSError):
        await tasks.run_export(export2.id, sessions=sessions, settings=broken)
    (public,) = await service.public(session, [await session.get(type(export2), export2.id, populate_existing=True)])
    assert public.status == "failed" and public.error and public.finished_at is not None
    assert str(tmp_path) not in public.error  # the reason, without this machine's paths


async def test_one_pass_files_and_archive_are_the_same_each_time(seed, session, engine, base_settings, tmp_path):
    """The job freezes and renders every format in one pass, compressing the archive as it writes;
    rendering the frozen version again gives the same files and the same archive, byte for byte."""
    import gzip

    from sqlalchemy import text as sql

    from app import db
    from app.exports import service, tasks
    from app.exports.schemas import ExportCreate, ExportFormat

    ds = await _reviewed(seed, n=12)
    export = await service.create(session, ds, ExportCreate(formats=list(ExportFormat), margin=True), actor="test")
    await session.commit()
    sessions = db.session_factory(engine)
    settings = base_settings.model_copy(update={"data_dir": tmp_path / "data"})
    done = await tasks.run_export(export.id, sessions=sessions, settings=settings)
    archive = service.archive_path(done)
    assert done.status == "succeeded" and archive is not None
    assert set(done.manifest["counts"]) == {f.value for f in ExportFormat}

    again = tmp_path / "again"

    async def same_card(_manifest) -> list[str]:  # the job's extras: the dataset card, written after the manifest
        shutil.copyfile(Path(done.path) / "README.md", again / "README.md")
        return ["README.md"]

    manifest = await service.write_files(
        sessions, done, ds.name, again, archive=(tmp_path / "again.tar.gz", "v1"), track=False, extras=same_card
    )
    assert manifest.files == done.manifest["files"] and manifest.verify(again) == []
    assert (tmp_path / "again.tar.gz").read_bytes() == archive.read_bytes()
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [f"v1/{n}" for n in [*manifest.files, "manifest.json", "README.md"]]
        for m in members:
            assert tar.extractfile(m).read() == (again / m.name.removeprefix("v1/")).read_bytes()
    # a series of gzip members is one stream to a plain gzip reader, ending as a tar ends
    assert gzip.decompress(archive.read_bytes()).endswith(b"\0" * 1024)

    # deleting the dataset (its exports) deletes the frozen rows
    count = "SELECT count(*) FROM export_item WHERE export_id = :e"
    assert (await session.execute(sql(count), {"e": export.id})).scalar() == 12 + 5
    await session.execute(sql("DELETE FROM dataset WHERE id = :d"), {"d": ds.id})
    await session.commit()
    assert (await session.execute(sql(count), {"e": export.id})).scalar() == 0



async def test_a_freeze_whose_rows_come_back_out_of_prompt_order_fails():
    """The freeze's rows come from INSERT ... RETURNING, whose order SQL does not promise: the
    job fails rather than write files that a later render (ordered by prompt) would not equal."""
    from app.exports.schemas import ExportFormat
    from app.exports.service import _Pass

    async def rows(*lists: tuple[int, ...]):  # as repo.copy_rows hands them over: lists of rows
        for ids in lists:
            yield [memoryview(b"%d\x02train\x020\x02{\"id\":\"%d\"}\n" % (i, i)) for i in ids]

    ordered = _Pass([ExportFormat.sft], check_order=True)
    batches = [b async for b in ordered.batches(rows((1, 2), (10,)))]
    assert batches == [([("sft.train.jsonl", b'{"id":"1"}\n{"id":"2"}\n{"id":"10"}\n')], 3)]
    with pytest.raises(RuntimeError, match="out of prompt order: 2 after 10"):
        [b async for b in _Pass([ExportFormat.sft], check_order=True).batches(rows((1, 10), (2,)))]
    with pytest.raises(RuntimeError, match="out of prompt order: 2 after 10"):  # within one list too
        [b async for b in _Pass([ExportFormat.sft], check_order=True).batches(rows((1, 10, 2)))]
    assert len([b async for b in _Pass([ExportFormat.sft]).batches(rows((1, 10), (2,)))]) == 1  # a read of the frozen rows


async def test_copy_rows_hands_over_every_row_and_what_postgres_raises(engine):
    """The job's COPY reader (lists of the rows that arrived, read off libpq directly): every row
    once and in order, the statement's error raised after the rows before it, and the connection
    usable after an error and after a reader that stopped halfway."""
    import psycopg
    from sqlalchemy import text as sql

    from app.exports import repository as repo

    n = 3 * repo.COPY_BATCH + 7
    query = "SELECT g, repeat('x', 1 + mod(g, 300)) FROM generate_series(1, %(n)s) g"
    async with engine.connect() as conn:
        await conn.execute(sql("SELECT 1"))  # a transaction, as the job's session has
        lists = [rows async for rows in repo.copy_rows(conn, query, {"n": n})]
        got = [bytes(r) for rows in lists for r in rows]
        assert got == [b"%d\x02%s\n" % (g, b"x" * (1 + g % 300)) for g in range(1, n + 1)]
        assert max(len(rows) for rows in lists) <= repo.COPY_BATCH and len(lists) >= 4
        await conn.rollback()

        await conn.execute(sql("SELECT 1"))
        seen = 0
        failing = "SELECT CASE WHEN g <= %(n)s THEN g ELSE g / (g - g) END FROM generate_series(1, 100000) g"
        with pytest.raises(psycopg.errors.DivisionByZero):
            async for rows in repo.copy_rows(conn, failing, {"n": n}):
                seen += len(rows)
        assert seen <= n
        await conn.rollback()
        assert (await conn.execute(sql("SELECT 42"))).scalar() == 42

        reader = repo.copy_rows(conn, query, {"n": 100_000})  # in the transaction SELECT 42 began
        assert len(await anext(reader)) >= 1
        await reader.aclose()  # psycopg cancels the rest of the COPY
        await conn.rollback()
        assert (await conn.execute(sql("SELECT 43"))).scalar() == 43
