"""Import throughput: prompts through our API and CLI paths against a bare Postgres COPY of the
same rows, and RM records (prompt, 3 completions, a ranking) through the API.

    python bench/import.py            # 1,000,000 RM lines, then 1,000,000 prompts
    python bench/import.py --quick    # 100,000 of each

- api: one POST of the JSONL file to /api/v1/datasets/{id}/prompts/import on a live uvicorn
  server (parse, validate, hash, COPY into a staging table, de-duplicate, insert), one transaction.
- cli: the same service the `rlhf-forge import` command runs, without HTTP.
- copy: `COPY prompt (...) FROM STDIN (FORMAT BINARY)` of the same rows, already parsed and
  hashed in memory: the floor any import into this table can reach.

- rm: one POST of a JSONL file of RM records to /api/v1/datasets/{id}/import?format=rm (stage with
  COPY, then prompts, completions and rankings in SQL, one transaction), on a live uvicorn server in
  this process, run first (before anything else has grown the process). It runs at N/10 lines and
  then at N lines; `rm_rss_growth` = the process's peak RSS during the N-line import / its peak
  during the N/10-line import (sampled every 20 ms; ~1.0 is flat memory, as in bench/export.py).

The last line is one JSON object: rows/s of each, `ratio` = api / copy, and the RM figures.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import psycopg  # noqa: E402

from app import db  # noqa: E402
from app.config import Settings  # noqa: E402
from app.prompts.hashing import content_hash  # noqa: E402
from bench._pg import bench_database, psycopg_conninfo, rows_from_args  # noqa: E402


def make_file(n: int, path: Path) -> None:
    topics = ["math", "code", "history", "science", "writing", "advice"]
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"prompt": f"Question {i}: explain idea #{i * 7919 % 100003} in the field of {topics[i % 6]}.", "tags": [topics[i % 6]]}))
            fh.write("\n")


def make_rm_file(n: int, path: Path) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            record = {
                "prompt": f"Question {i}: compare approach #{i * 7919 % 100003} with the usual one.",
                "completion": [f"Answer {k} to {i}: it depends on the data; here is why, in short." for k in range(3)],
                "ranking": [1 + (i + k) % 3 for k in range(3)],
            }
            fh.write(json.dumps(record))
            fh.write("\n")


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """The highest resident memory of this process while the block runs, sampled every 20 ms."""

    def __enter__(self) -> PeakRSS:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def create_dataset(conninfo: str, name: str) -> int:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return conn.execute("INSERT INTO dataset (name) VALUES (%s) RETURNING id", (name,)).fetchone()[0]


def bench_copy(conninfo: str, path: Path) -> float:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            obj = json.loads(line)
            rows.append((obj["prompt"], content_hash(obj["prompt"]), obj["tags"]))
    ds = create_dataset(conninfo, "copy")
    with psycopg.connect(conninfo) as conn:
        t = time.perf_counter()
        with conn.cursor() as cur:
            with cur.copy("COPY prompt (dataset_id, text, content_hash, tags) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "text", "bytea", "text[]"])
                for text, digest, tags in rows:
                    copy.write_row((ds, text, digest, tags))
        conn.commit()
        return time.perf_counter() - t


def bench_cli(url: str, path: Path) -> float:
    from app.datasets import service as datasets
    from app.prompts import service as prompts
    from app.prompts.schemas import ImportFormat

    async def run() -> float:
        settings = Settings(database_url=url)
        async with db.open_database(settings) as database, database.sessions() as session:
            ds = await datasets.get_or_create(session, "cli")
            await session.commit()
            t = time.perf_counter()
            with path.open("rb") as fh:
                report = await prompts.import_file(session, ds, fh, ImportFormat.jsonl, max_chars=settings.max_text_chars)
            await session.commit()
            elapsed = time.perf_counter() - t
        assert report.invalid == 0 and report.duplicates == 0, report
        return elapsed

    return asyncio.run(run())


class LiveApp:
    """The app served by uvicorn in a thread of this process (so its memory is ours to measure)."""

    def __init__(self, url: str, data_dir: str):
        import uvicorn

        from app.main import create_app

        settings = Settings(database_url=url, data_dir=data_dir, worker_in_process=False)
        self.server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> httpx.Client:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=3600)
        return self.client

    def __exit__(self, *exc) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join()


def bench_api(url: str, path: Path, data_dir: str) -> float:
    with LiveApp(url, data_dir) as client:
        ds = client.post("/api/v1/datasets", json={"name": "api"}).json()["id"]
        t = time.perf_counter()
        with path.open("rb") as fh:
            r = client.post(f"/api/v1/datasets/{ds}/prompts/import", content=fh, headers={"content-type": "application/x-ndjson"})
        elapsed = time.perf_counter() - t
        r.raise_for_status()
        assert r.json()["inserted"] == sum(1 for _ in path.open()), r.json()
        return elapsed


def bench_rm(url: str, path: Path, n: int, data_dir: str) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one RM import of the first n lines of path through the API."""
    with LiveApp(url, data_dir) as client:
        ds = client.post("/api/v1/datasets", json={"name": f"rm-{n}"}).json()["id"]
        with PeakRSS() as rss, path.open("rb") as fh:
            body = itertools.islice(fh, n)
            t = time.perf_counter()
            r = client.post(f"/api/v1/datasets/{ds}/import", params={"format": "rm"}, content=body,
                            headers={"content-type": "application/x-ndjson"})
            elapsed = time.perf_counter() - t
        r.raise_for_status()
        report = r.json()
        assert report["inserted"] == n and report["rankings_created"] == n and report["completions_created"] == 3 * n, report
        return elapsed, rss.peak


def main() -> None:
    n = rows_from_args(__doc__, quick=100_000, full=1_000_000)

    with tempfile.TemporaryDirectory() as tmp, bench_database() as url:
        rm_path = Path(tmp) / "rm.jsonl"
        make_rm_file(n, rm_path)
        print(f"{n} RM lines (3 completions each), {os.path.getsize(rm_path) / 1e6:.1f} MB of JSONL", flush=True)
        _, rss_10 = bench_rm(url, rm_path, n // 10, tmp)
        rm_s, rss_n = bench_rm(url, rm_path, n, tmp)
        print(f"rm:   {n / rm_s:,.0f} lines/s ({rm_s:.1f} s); peak RSS {rss_10:.0f} MB at {n // 10:,} lines, "
              f"{rss_n:.0f} MB at {n:,} lines", flush=True)
        rm_path.unlink()
        path = Path(tmp) / "prompts.jsonl"
        make_file(n, path)
        mb = os.path.getsize(path) / 1e6
        print(f"{n} prompts, {mb:.1f} MB of JSONL", flush=True)
        conninfo = psycopg_conninfo(url)
        copy_s = bench_copy(conninfo, path)
        print(f"copy: {n / copy_s:,.0f} rows/s ({copy_s:.1f} s)", flush=True)
        cli_s = bench_cli(url, path)
        print(f"cli:  {n / cli_s:,.0f} rows/s ({cli_s:.1f} s)", flush=True)
        api_s = bench_api(url, path, tmp)
        print(f"api:  {n / api_s:,.0f} rows/s ({api_s:.1f} s)", flush=True)
    result = {
        "rows": n,
        "api_rows_per_s": round(n / api_s),
        "cli_rows_per_s": round(n / cli_s),
        "copy_rows_per_s": round(n / copy_s),
        "ratio": round(copy_s / api_s, 3),
        "cli_ratio": round(copy_s / cli_s, 3),
        "rm_rows_per_s": round(n / rm_s),
        "rm_rss_mb_at_10pct": round(rss_10, 1),
        "rm_rss_mb_at_end": round(rss_n, 1),
        "rm_rss_growth": round(rss_n / rss_10, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
