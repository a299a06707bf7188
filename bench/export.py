"""SFT export throughput and memory: our streamed GET against a bare Postgres COPY of the same rows.

    python bench/export.py            # 1,000,000 SFT rows
    python bench/export.py --quick    # 100,000 SFT rows

- seed: N approved prompts with one approved completion each, written with generate_series.
- copy: `COPY (SELECT json_build_object('prompt', p.text, 'completion', c.text) FROM prompt p
  JOIN completion c ... ORDER BY p.id) TO STDOUT` read by psycopg: the floor for these rows.
- api: `GET /api/v1/datasets/{id}/exports/sft.jsonl` from a live uvicorn server in this process,
  read by httpx: the full path (filters, SFT target rule, split hash, JSON, HTTP).
  Each is run twice, alternately; the faster run counts.
- bulk: `POST /api/v1/datasets/{id}/exports` (SFT, with its archive) polled to the end: the job
  works out the split groups, freezes the version into export_item and writes sft.{split}.jsonl
  with their sha256 (one statement: the rows inserted come back rendered), the manifest, the
  dataset card (its review figures join the frozen items with `prompt`) and the .tar.gz;
  `bulk_ratio` = its rows/s / the api stream's rows/s.
- RSS: this process's peak resident set (VmHWM, server and client together) when the
  api stream has delivered 10% of the rows and when it has delivered all of them; for the bulk
  job, its resident set sampled every 50 ms while it runs, against the resident set before it.

The last line is one JSON object: rows/s of each, `ratio` = api / copy rows/s, `bulk_ratio`,
`rss_growth` = peak RSS at N rows / peak RSS at N/10 rows, `bulk_rss_growth_mb` (the most the
bulk job added to the resident set) and the load average at the start and the end (the machine
is shared: the ratios, measured in one run, are the figures).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import psycopg  # noqa: E402

from app.config import Settings  # noqa: E402
from bench._pg import bench_database, psycopg_conninfo, rows_from_args  # noqa: E402
from trainer.formats import SFTRecord, parse_record  # noqa: E402

SEED_SQL = [
    """
INSERT INTO prompt (id, dataset_id, text, content_hash, review_status, source, tags)
SELECT g, %(ds)s, t, sha256(convert_to(t, 'UTF8')), 'approved', 'imported', ARRAY['bench']
FROM (SELECT g, 'Question ' || g || ': explain idea #' || (g::bigint * 7919 %% 100003) || ' — in plain words, «briefly».' AS t
      FROM generate_series(1, %(n)s) g) s
""",
    """
INSERT INTO completion (dataset_id, prompt_id, text, source, model, review_status)
SELECT %(ds)s, g, 'Answer ' || g || E':\\n' || repeat('The idea is simple; here is why. ', 6) || '✓', 'model', 'gen-bench', 'approved'
FROM generate_series(1, %(n)s) g
""",
]

COPY_SQL = (
    "COPY (SELECT json_build_object('prompt', p.text, 'completion', c.text) FROM prompt p "
    "JOIN completion c ON c.prompt_id = p.id WHERE p.dataset_id = {ds} ORDER BY p.id) TO STDOUT"
)


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def peak_rss_mb() -> float:
    return _status_mb("VmHWM:")


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def seed(conninfo: str, n: int) -> int:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        ds = conn.execute("INSERT INTO dataset (name) VALUES ('bench') RETURNING id").fetchone()[0]
        t = time.perf_counter()
        with conn.transaction():
            for statement in SEED_SQL:
                conn.execute(statement, {"ds": ds, "n": n})
        conn.execute("SELECT setval(pg_get_serial_sequence('prompt', 'id'), %s)", (n,))
        conn.execute("ANALYZE prompt")
        conn.execute("ANALYZE completion")
        print(f"seeded {n:,} prompts + completions in {time.perf_counter() - t:.1f} s", flush=True)
        return ds


def bench_copy(conninfo: str, ds: int, n: int) -> float:
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        t = time.perf_counter()
        rows = 0
        with cur.copy(COPY_SQL.format(ds=ds)) as copy:
            for _ in copy:
                rows += 1
        elapsed = time.perf_counter() - t
    assert rows == n, rows
    return elapsed


class Server:
    def __init__(self, url: str, data_dir: str):
        import uvicorn

        from app.main import create_app

        # the bulk export is a job: a worker in this process does it, as under `serve`
        settings = Settings(database_url=url, data_dir=data_dir, worker_in_process=True)
        self.server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join()


def bench_api(base: str, ds: int, n: int) -> tuple[float, float, float]:
    """Seconds, peak RSS (MB) at n/10 rows and at n rows."""
    checkpoint = n // 10
    rss_at_checkpoint = None
    rows = 0
    first = b""
    with httpx.Client(base_url=base, timeout=3600) as client:
        t = time.perf_counter()
        with client.stream("GET", f"/api/v1/datasets/{ds}/exports/sft.jsonl") as r:
            r.raise_for_status()
            for chunk in r.iter_raw():
                if not first:
                    first = chunk
                rows += chunk.count(b"\n")
                if rss_at_checkpoint is None and rows >= checkpoint:
                    rss_at_checkpoint = peak_rss_mb()
        elapsed = time.perf_counter() - t
    assert rows == n, rows
    record = parse_record("sft", json.loads(first.split(b"\n", 1)[0]))
    assert isinstance(record, SFTRecord) and record.completion.startswith("Answer 1:\n"), record
    return elapsed, rss_at_checkpoint, peak_rss_mb()


def bench_bulk(base: str, ds: int, n: int) -> tuple[float, float, float]:
    """Seconds; resident set (MB) before the job and the most while it ran."""
    before = _status_mb("VmRSS:")
    most = before
    running = True

    def sample() -> None:
        nonlocal most
        while running:
            most = max(most, _status_mb("VmRSS:"))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with httpx.Client(base_url=base, timeout=3600) as client:
            t = time.perf_counter()
            r = client.post(f"/api/v1/datasets/{ds}/exports", json={"formats": ["sft"], "archive": True})
            r.raise_for_status()
            version = r.json()["version"]
            while (export := client.get(f"/api/v1/datasets/{ds}/exports/{version}").json())["status"] not in (
                "succeeded", "failed"
            ):
                time.sleep(0.1)
            elapsed = time.perf_counter() - t
            running = False
            sampler.join()
            assert export["status"] == "succeeded", export
            files = export["manifest"]["files"]
            assert sum(f["rows"] for f in files.values()) == n, files
            # the archive holds the files the manifest lists (read as a stream: the figure is the job's)
            with client.stream("GET", f"/api/v1/datasets/{ds}/exports/{version}/archive") as r, tempfile.TemporaryFile() as fh:
                r.raise_for_status()
                for chunk in r.iter_bytes(1 << 20):
                    fh.write(chunk)
                fh.seek(0)
                with tarfile.open(fileobj=fh, mode="r:gz") as tar:
                    for member in tar:
                        name = member.name.split("/", 1)[1]
                        if name in files:
                            digest = hashlib.sha256()
                            reader = tar.extractfile(member)
                            while block := reader.read(1 << 20):
                                digest.update(block)
                            assert digest.hexdigest() == files[name]["sha256"], name
    finally:
        running = False
        sampler.join()
    return elapsed, before, most


def main() -> None:
    n = rows_from_args(__doc__, quick=100_000, full=1_000_000)

    load_start = load_average()
    with tempfile.TemporaryDirectory() as tmp, bench_database() as url:
        conninfo = psycopg_conninfo(url)
        ds = seed(conninfo, n)
        copy_runs, api_runs = [], []
        with Server(url, tmp) as base:
            for _ in range(2):
                copy_runs.append(bench_copy(conninfo, ds, n))
                print(f"copy: {n / copy_runs[-1]:,.0f} rows/s ({copy_runs[-1]:.2f} s)", flush=True)
                api_runs.append(bench_api(base, ds, n))
                api_s, rss_10, rss_n = api_runs[-1]
                print(
                    f"api:  {n / api_s:,.0f} rows/s ({api_s:.2f} s); peak RSS {rss_10:.0f} MB at {n // 10:,} rows, "
                    f"{rss_n:.0f} MB at {n:,} rows",
                    flush=True,
                )
            bulk_s, bulk_rss_before, bulk_rss_most = bench_bulk(base, ds, n)
            print(
                f"bulk: {n / bulk_s:,.0f} rows/s ({bulk_s:.2f} s: freeze the version, write sft.*.jsonl, manifest, archive); "
                f"RSS {bulk_rss_before:.0f} MB before, at most {bulk_rss_most:.0f} MB while it ran",
                flush=True,
            )
    copy_s = min(copy_runs)
    api_s = min(r[0] for r in api_runs)
    rss_10, rss_n = api_runs[0][1], api_runs[-1][2]
    ratio = copy_s / api_s
    print(f"ratio api/copy: {ratio:.2f}; peak RSS {rss_10:.0f} MB at {n // 10:,} rows -> {rss_n:.0f} MB at {n:,} rows")
    result = {
        "rows": n,
        "api_rows_per_s": round(n / api_s),
        "copy_rows_per_s": round(n / copy_s),
        "bulk_rows_per_s": round(n / bulk_s),
        "ratio": round(ratio, 3),
        "bulk_ratio": round(api_s / bulk_s, 3),
        "bulk_rss_mb_before": round(bulk_rss_before, 1),
        "bulk_rss_growth_mb": round(bulk_rss_most - bulk_rss_before, 1),
        "rss_mb_at_10pct": round(rss_10, 1),
        "rss_mb_at_end": round(rss_n, 1),
        "rss_growth": round(rss_n / rss_10, 3),
        "load_average_start": load_start,
        "load_average_end": load_average(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
