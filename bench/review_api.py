"""Review API under load: the queue (`GET .../review/next`) and an approve, with 32 concurrent
clients, beside a trivial FastAPI endpoint measured in the same run.

    python bench/review_api.py            # 20,000 judged items, 20 s per phase
    python bench/review_api.py --quick    # 2,000 items, 4 s per phase

Each server is a separate process on 127.0.0.1 driven from this process by asyncio: the
trivial app under plain uvicorn, the service exactly as `rlhf-forge serve` runs it by default
(its uvicorn settings, pool size, access log and in-process job worker; the default rate limit
once per client, as 32 reviewers with their own keys would have it). Every review client is
its own reviewer: it leases the next item (flagged first, then oldest; `FOR UPDATE SKIP LOCKED`
keeps the 32 of them apart) and approves it, so each loop is one claim and one write
transaction with its audit event and verdict. Both phases warm up first (the trivial one with
20 pings, the review one with a read of an item per client, which opens the pool).

The two phases run twice, on two HTTP clients: aiohttp, then httpx (`--client` picks one or
the order). httpx's pool, with 32 requests in flight on one event loop, costs the bench far
more CPU a request than the servers it measures, on the same 2 cores, and holds finished
responses back: through it the trivial route does ~600-900 req/s at a p99 of 160-290 ms, through
aiohttp ~13,500 req/s at ~5 ms. The aiohttp figures are the servers'; the httpx ones are the
measure the earlier rounds (and issue 15's targets) were read with, kept for comparison. The
httpx phase reviews items after the aiohttp phase has reviewed its share.

The last line is one JSON object: req/s and p50/p99 latency of each, the server process's CPU
milliseconds per request (`*_server_cpu_ms`: the database's not counted; steadier than latency
on a loaded machine), `ratio` = review req/s / trivial req/s, `p99_ms` = p99 over all review
requests (`next_p99_ms`, `approve_p99_ms` per route): the first client's unprefixed, the
second's prefixed with its name (`httpx_ratio`, `httpx_p99_ms`, ...); and `loadavg` (the
1-minute load average at the end: on a shared machine the absolute latencies are only
comparable at a similar load).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastapi import FastAPI

from bench._pg import bench_database
from bench._proc import cpu_seconds

# the trivial endpoint the review API is compared with (served by its own uvicorn process)
trivial_app = FastAPI()


@trivial_app.get("/ping")
async def ping() -> dict:
    return {"ok": True}


def seed(url: str, items: int) -> tuple[int, int]:
    """A dataset of `items` prompts, each with 3 model answers and a judge ranking; 1 in 10
    flagged. Returns the dataset's id and its first prompt's."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as c:
        ds = c.execute(text("INSERT INTO dataset (name) VALUES ('bench-review') RETURNING id")).scalar_one()
        c.execute(
            text(
                "INSERT INTO prompt (dataset_id, text, content_hash, tags) "
                "SELECT :ds, 'Question ' || g || ': explain idea ' || g, sha256(convert_to('q' || g, 'UTF8')), ARRAY['t' || (g % 5)] "
                "FROM generate_series(1, :n) g"
            ),
            {"ds": ds, "n": items},
        )
        c.execute(
            text(
                "INSERT INTO completion (dataset_id, prompt_id, text, source, model, sample_index) "
                "SELECT :ds, p.id, 'Answer ' || k || ' to prompt ' || p.id || repeat(' more words', 40), 'model', 'gen-small', k "
                "FROM prompt p CROSS JOIN generate_series(0, 2) k WHERE p.dataset_id = :ds"
            ),
            {"ds": ds},
        )
        c.execute(
            text(
                "INSERT INTO ranking (dataset_id, prompt_id, completion_ids, ranks, ranker_kind, judge_model, template_version, "
                "rationale, consistency, review_status, flag_reasons) "
                "SELECT :ds, prompt_id, array_agg(id ORDER BY id), ARRAY[2, 1, 3], 'judge', 'judge-a', 'v1', 'b is clearer', 1.0, "
                "CASE WHEN prompt_id % 10 = 0 THEN 'needs_review' ELSE 'pending' END, "
                "CASE WHEN prompt_id % 10 = 0 THEN ARRAY['low_margin'] ELSE '{}'::text[] END "
                "FROM completion WHERE dataset_id = :ds GROUP BY prompt_id"
            ),
            {"ds": ds},
        )
        c.execute(text("ANALYZE"))
        first = c.execute(text("SELECT min(id) FROM prompt WHERE dataset_id = :ds"), {"ds": ds}).scalar_one()
    engine.dispose()
    return ds, first


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, base: str, pid: int):
        self.base, self.pid = base, pid


@contextlib.contextmanager
def server_process(cmd: list[str], port: int, env: dict[str, str]):
    # the server's own output (the service's access log) goes to a file, shown if it fails
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    sys.stderr.write(log.read()[-4000:].decode(errors="replace"))
                    raise RuntimeError(f"server exited with {proc.returncode}: {' '.join(cmd)}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("server did not start") from None
                    time.sleep(0.1)
            try:
                yield Server(f"http://127.0.0.1:{port}", proc.pid)
            except BaseException:
                # what the server said while the phase failed (its access log, any traceback)
                log.seek(0)
                sys.stderr.write("server output, last lines:\n" + log.read()[-6000:].decode(errors="replace"))
                raise
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def trivial_server(env: dict[str, str]):
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "bench.review_api:trivial_app", "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "warning", "--no-access-log"]
    return server_process(cmd, port, env)


def forge_server(env: dict[str, str]):
    """`rlhf-forge serve` with its defaults."""
    port = free_port()
    return server_process([sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)], port, env)


def summary(latencies: list[float], seconds: float) -> dict:
    if not latencies:
        return {"requests": 0, "rps": 0.0, "p50_ms": None, "p99_ms": None}
    qs = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"requests": len(latencies), "rps": len(latencies) / seconds, "p50_ms": qs[49] * 1000, "p99_ms": qs[98] * 1000}


def server_cpu_ms(server: Server, before: float | None, requests: int) -> float | None:
    """The server process's CPU time per request in a phase (not the database's)."""
    after = cpu_seconds(server.pid)
    return None if before is None or after is None or not requests else round((after - before) * 1000 / requests, 3)


class Client:
    """The bench's HTTP client: `aiohttp` (the default) or `httpx`. With 32 requests in flight on
    one event loop httpx's connection pool costs ~1.5 ms of the bench's CPU a request and holds
    finished responses back (the trivial route measured ~600 req/s, p99 ~280 ms, through it
    and ~13,900 req/s, p99 ~4 ms, through aiohttp on the same machine), so its figures are
    mostly the client's; `--client httpx` keeps the earlier rounds' measure comparable."""

    def __init__(self, kind: str, base: str, clients: int):
        self.kind, self.base, self.clients = kind, base, clients

    async def __aenter__(self) -> Self:
        if self.kind == "httpx":
            import httpx

            limits = httpx.Limits(max_connections=self.clients, max_keepalive_connections=self.clients)
            self._c = httpx.AsyncClient(base_url=self.base, limits=limits, timeout=60)
        else:
            import aiohttp

            self._c = aiohttp.ClientSession(self.base, connector=aiohttp.TCPConnector(limit=self.clients),
                                            timeout=aiohttp.ClientTimeout(total=60))
        return self

    async def __aexit__(self, *exc) -> None:
        if self.kind == "httpx":
            await self._c.aclose()
        else:
            await self._c.close()

    async def request(self, method: str, path: str, headers: dict | None = None, body: dict | None = None) -> bytes:
        """The response's body; raises unless it is a 2xx."""
        if self.kind == "httpx":
            r = await self._c.request(method, path, headers=headers, json=body)
            r.raise_for_status()
            return r.content
        async with self._c.request(method, path, headers=headers, json=body) as r:
            data = await r.read()
            if r.status >= 300:
                raise RuntimeError(f"{method} {path}: HTTP {r.status}: {data[:300]!r}")
            return data


async def run_trivial(server: Server, clients: int, seconds: float, kind: str) -> dict:
    lat: list[float] = []
    async with Client(kind, server.base, clients) as c:
        for _ in range(20):
            await c.request("GET", "/ping")
        cpu = cpu_seconds(server.pid)
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                await c.request("GET", "/ping")
                lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return {**summary(lat, elapsed), "server_cpu_ms": server_cpu_ms(server, cpu, len(lat))}


async def run_review(server: Server, dataset_id: int, warm_prompt: int, clients: int, seconds: float, kind: str) -> dict:
    next_lat: list[float] = []
    approve_lat: list[float] = []
    handed: list[int] = []
    async with Client(kind, server.base, clients) as c:
        # warm-up, as the trivial phase has: one read per client at once, which opens the pool
        await asyncio.gather(*(c.request("GET", f"/api/v1/prompts/{warm_prompt}/review") for _ in range(clients)))
        cpu = cpu_seconds(server.pid)
        stop = time.perf_counter() + seconds

        async def reviewer(i: int) -> None:
            headers = {"X-Actor": f"bench-{i}"}
            while time.perf_counter() < stop:
                t = time.perf_counter()
                body = await c.request("GET", f"/api/v1/datasets/{dataset_id}/review/next", headers=headers)
                next_lat.append(time.perf_counter() - t)
                item = json.loads(body)["item"]
                if item is None:
                    return
                pid = item["prompt"]["id"]
                handed.append(pid)
                t = time.perf_counter()
                await c.request("POST", f"/api/v1/prompts/{pid}/review/approve", headers=headers, body={})
                approve_lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(reviewer(i) for i in range(clients)))
        elapsed = time.perf_counter() - t0
    if len(handed) != len(set(handed)):
        raise SystemExit(f"an item was handed out twice: {len(handed) - len(set(handed))} repeats")
    return {
        "next": summary(next_lat, elapsed),
        "approve": summary(approve_lat, elapsed),
        "all": {**summary(next_lat + approve_lat, elapsed), "server_cpu_ms": server_cpu_ms(server, cpu, len(next_lat) + len(approve_lat))},
        "items_reviewed": len(handed),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2,000 items and 4 s per phase")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--items", type=int)
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--client", choices=("aiohttp", "httpx"), action="append",
                    help="the bench's HTTP client, repeatable (default: aiohttp, then httpx, the earlier rounds' measure; see Client)")
    args = ap.parse_args()
    args.client = list(dict.fromkeys(args.client or ["aiohttp", "httpx"]))
    items = args.items or (2_000 if args.quick else 20_000)
    seconds = args.seconds or (4.0 if args.quick else 20.0)

    with bench_database() as url:
        t = time.perf_counter()
        dataset_id, warm_prompt = seed(url, items)
        print(f"seeded {items} judged items (3 answers each) in {time.perf_counter() - t:.1f}s", flush=True)
        # the rate limit is per API key, or per client address without one: 32 reviewers at work
        # each have their own; here they share one address, so the bench gives that address the
        # 32 buckets they would have (the default 6000/minute each) instead of one
        env = {"DATABASE_URL": url, "FORGE_RATE_LIMIT": f"{6000 * args.clients}/minute"}
        runs = {}
        for kind in args.client:
            with trivial_server(env) as server:
                trivial = asyncio.run(run_trivial(server, args.clients, seconds, kind))
            with forge_server(env) as server:
                review = asyncio.run(run_review(server, dataset_id, warm_prompt, args.clients, seconds, kind))
            runs[kind] = trivial, review
        load = os.getloadavg()[0]

    def line(name: str, s: dict) -> str:
        return f"{name:<22} {s['requests']:>7} req  {s['rps']:>8.1f} req/s  p50 {s['p50_ms'] or 0:>7.1f} ms  p99 {s['p99_ms'] or 0:>7.1f} ms"

    result: dict = {"clients": args.clients, "items": items, "seconds": seconds}
    for kind, (trivial, review) in runs.items():
        print(f"{args.clients} concurrent clients on {kind}, {seconds:.0f} s per phase")
        print(line("trivial GET /ping", trivial))
        print(line("review next", review["next"]))
        print(line("review approve", review["approve"]))
        print(line("review (next+approve)", review["all"]))
        print(f"items reviewed: {review['items_reviewed']}, none handed out twice")
        # the first client's figures unprefixed (aiohttp by default), the other's with its name
        prefix = "" if kind == args.client[0] else f"{kind}_"
        result.update({f"{prefix}{k}": v for k, v in {
            "trivial_rps": round(trivial["rps"], 1),
            "trivial_p99_ms": round(trivial["p99_ms"], 2),
            "trivial_server_cpu_ms": trivial["server_cpu_ms"],
            "next_rps": round(review["next"]["rps"], 1),
            "next_p50_ms": round(review["next"]["p50_ms"], 2),
            "next_p99_ms": round(review["next"]["p99_ms"], 2),
            "approve_rps": round(review["approve"]["rps"], 1),
            "approve_p50_ms": round(review["approve"]["p50_ms"], 2),
            "approve_p99_ms": round(review["approve"]["p99_ms"], 2),
            "review_rps": round(review["all"]["rps"], 1),
            "review_server_cpu_ms": review["all"]["server_cpu_ms"],
            "ratio": round(review["all"]["rps"] / trivial["rps"], 4),
            "p99_ms": round(review["all"]["p99_ms"], 2),
        }.items()})
    result["loadavg"] = round(load, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
