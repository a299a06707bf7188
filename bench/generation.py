"""Generation throughput: completions/s through API -> job -> LLM -> DB.

Against a loopback OpenAI-compatible endpoint (tests/fake_llm.py in its own process):
  1. fixed 500 ms latency, endpoint concurrency 64: beside the limit concurrency / latency;
  2. 0 ms latency, one call per completion (the default plan: four temperatures): beside a bare
     async httpx loop (64 tasks) against the same endpoint and, stricter, a bare aiohttp loop
     (the transport the pipeline's openai client runs on), each one request per completion;
  3. 0 ms latency again on an endpoint declared `supports_n` (as vLLM would be), with a plan of
     one entry: a prompt's K samples differ only by seed, so each prompt is one call with n=K.
The service (API + in-process worker) runs as its own uvicorn process on a fresh database.

    python bench/generation.py [--quick] [--profile out.svg|out.json] [--fast-prompts N]

Runs choose the fake servers as named endpoints ("slow", "fast", "fast-n": FORGE_LLM_ENDPOINTS),
as a run never names a URL. The machine is shared: compare the figures of one run, not across
runs; `server_cpu_ms_per_completion_*` (the service process's CPU per completion, Postgres's not
counted) is the steadier figure.

Last line: one JSON object with `ratio` (pipeline / limit), `bare_ratio` (pipeline / bare httpx
loop) and `bare_aiohttp_ratio`, issue 15's measure: completions/s of the pipeline at n=1 over
requests/s of the bare aiohttp loop, i.e. what the whole pipeline (openai SDK, retries, cache,
cost, budget, SQL, job bookkeeping) keeps of what the transport alone could do per completion.
`bare_aiohttp_ratio_n_k` is completions/s at n=K over the same bare loop's requests/s: not like
for like (the bare loop gets one completion per request, the pipeline K), it says what an
endpoint that supports `n` gives, and is reported beside, never instead of, the n=1 figure.
`sdk_ceiling_ratio` is the official openai client's own loop (built and called exactly as the
pipeline does, one request per completion, nothing stored) over the same bare aiohttp loop: the
most `bare_aiohttp_ratio` can be for any pipeline that talks through the real client;
`pipeline_vs_sdk_ratio` (pipeline / that loop) is what our own work per completion keeps of it.
Each figure sits beside its completions/s, with the load average over the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _pg import bench_database  # noqa: E402
from _proc import cpu_seconds  # noqa: E402

from app.prompts.hashing import content_hash  # noqa: E402

CONCURRENCY = 64
K = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def start_fake(latency_ms: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fake_llm.py"), "--port", str(port), "--latency-ms", str(latency_ms)],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    wait_http(url + "/models")
    return proc, url


@contextlib.contextmanager
def profiled(pid: int, out: str | None):
    """py-spy (pip install py-spy) records the service process while the block runs, into `out`
    (a speedscope JSON when it ends in .json, else a flame graph SVG); nothing when out is None."""
    if out is None:
        yield
        return
    fmt = "speedscope" if out.endswith(".json") else ("raw" if out.endswith(".txt") else "flamegraph")
    spy = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--rate", "250", "--format", fmt, "-o", out],
                           stdout=subprocess.DEVNULL)
    time.sleep(1)  # py-spy attaches
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)


def measured(pid: int, n_prompts: int, run):
    """run()'s result, and the service's CPU ms per completion meanwhile (its polls included,
    Postgres's not): steadier than a rate on a shared machine."""
    before = cpu_seconds(pid)
    result = run()
    after = cpu_seconds(pid)
    return result, None if before is None or after is None else (after - before) * 1000 / (n_prompts * K)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def seed_prompts(url: str, dataset_id: int, n: int, tag: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO prompt (dataset_id, text, content_hash) VALUES (:d, :t, :h)"),
            [{"d": dataset_id, "t": f"{tag} prompt {i}: explain thing {i}", "h": content_hash(f"{tag} prompt {i}: explain thing {i}")} for i in range(n)],
        )
    engine.dispose()


def pipeline_rate(api: httpx.Client, url: str, name: str, n_prompts: int, endpoint: str,
                  plan: list[dict] | None = None) -> tuple[float, float]:
    ds = api.post("/datasets", json={"name": name}).json()["id"]
    seed_prompts(url, ds, n_prompts, name)
    body = {"kind": "generate", "k": K, "llm": {"generator": {"endpoint": endpoint}}, **({"plan": plan} if plan else {})}
    started = time.perf_counter()
    run = api.post(f"/datasets/{ds}/runs", json=body).json()
    if "status" not in run:
        raise RuntimeError(f"the run was refused: {run}")
    while run["status"] in ("queued", "running"):
        # a progress display's rate: each poll is served by the process doing the run
        time.sleep(0.1)
        run = api.get(f"/runs/{run['id']}").json()
    elapsed = time.perf_counter() - started
    if run["status"] != "succeeded" or run["done"] != n_prompts:
        raise RuntimeError(f"run ended {run['status']} with {run['done']}/{n_prompts} done: {run.get('error')}")
    engine = create_engine(url)
    with engine.connect() as conn:
        first, last, p50 = conn.execute(text(
            "SELECT min(c.created_at - c.latency_ms * interval '1 ms') - r.created_at, max(c.created_at) - r.created_at, "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY c.latency_ms) FROM completion c JOIN run r ON r.id = c.run_id "
            "WHERE r.id = :r GROUP BY r.created_at"), {"r": run["id"]}).one()
    engine.dispose()
    print(f"  {name}: first LLM call {first.total_seconds():.2f} s after the POST, last row at "
          f"{last.total_seconds():.2f} s, p50 call latency {p50:.0f} ms", flush=True)
    return n_prompts * K / elapsed, elapsed


async def bare_rate(base_url: str, n: int) -> float:
    payload = {"model": "default", "messages": [{"role": "user", "content": "bare prompt"}], "temperature": 0.7, "seed": 0}
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
        left = n

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                r = await client.post("/chat/completions", json=payload)
                r.json()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return n / (time.perf_counter() - started)


async def bare_aiohttp_rate(base_url: str, n: int) -> float:
    """The same loop on aiohttp, the transport the pipeline's openai client uses: a stricter bar."""
    import aiohttp

    payload = {"model": "default", "messages": [{"role": "user", "content": "bare prompt"}], "temperature": 0.7, "seed": 0}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:
        left = n

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.post(base_url + "/chat/completions", json=payload) as r:
                    await r.json()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return n / (time.perf_counter() - started)


async def sdk_rate(base_url: str, n: int) -> float:
    """The same loop on the official openai client, built as the pipeline builds it
    (`app.llm.client.openai_client`: aiohttp transport, retries off) and called as the pipeline
    calls it (`post` of the plain body, the reply decoded once as dicts): what any pipeline on
    the real client can do at most, before a row is stored or a cent counted."""
    from app.config import Settings
    from app.llm.client import openai_client
    from app.llm.endpoints import Endpoint

    client = openai_client(Endpoint("fast", base_url, "default", concurrency=CONCURRENCY), Settings())
    payload = {"model": "default", "messages": [{"role": "user", "content": "bare prompt"}], "temperature": 0.7, "seed": 0}
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await client.post("/chat/completions", body=payload, cast_to=object)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return n / (time.perf_counter() - started)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a smaller size")
    parser.add_argument("--profile", metavar="OUT", help="py-spy the service during the 0 ms runs (.svg or .json; the n=K run's beside, -n)")
    parser.add_argument("--fast-prompts", type=int, help="prompts of the 0 ms run (x K completions)")
    args = parser.parse_args()
    slow_prompts = 192 if args.quick else 500  # x K completions
    fast_prompts = args.fast_prompts or (250 if args.quick else 1000)
    latency = 0.5

    procs: list[subprocess.Popen] = []
    load_before = os.getloadavg()[0]
    with bench_database() as url:
        try:
            slow, slow_url = start_fake(latency * 1000)
            fast, fast_url = start_fake(0)
            procs += [slow, fast]
            port = free_port()
            env = {
                **os.environ, "DATABASE_URL": url, "FORGE_LLM_BASE_URL": slow_url, "FORGE_WORKER_IN_PROCESS": "true",
                "FORGE_WORKER_CONCURRENCY": "16",
                # runs choose an endpoint by name (never a URL): one per fake server
                "FORGE_LLM_ENDPOINTS": json.dumps({
                    "slow": {"base_url": slow_url, "concurrency": CONCURRENCY},
                    "fast": {"base_url": fast_url, "concurrency": CONCURRENCY},
                    # the same server, declared to answer OpenAI's `n` (as vLLM does)
                    "fast-n": {"base_url": fast_url, "concurrency": CONCURRENCY, "supports_n": True},
                }),
                "FORGE_DB_POOL_SIZE": "20",
            }
            service = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1",
                 "--port", str(port), "--log-level", "warning"],
                cwd=ROOT, env=env,
            )
            procs.append(service)
            wait_http(f"http://127.0.0.1:{port}/readyz")
            with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=60) as api:
                pipeline_rate(api, url, "warmup", 16, "fast")
                rate_slow, t_slow = pipeline_rate(api, url, "slow", slow_prompts, "slow")
                limit = CONCURRENCY / latency
                print(f"latency {latency * 1000:.0f} ms, concurrency {CONCURRENCY}: {rate_slow:.1f} completions/s "
                      f"({slow_prompts * K} in {t_slow:.2f} s); limit {limit:.1f}/s")
                with profiled(service.pid, args.profile):
                    (rate_fast, t_fast), cpu_ms = measured(service.pid, fast_prompts, lambda: pipeline_rate(api, url, "fast", fast_prompts, "fast"))
                # K samples of a prompt in one call (`n`): a plan of one entry, so they differ only by seed
                with profiled(service.pid, args.profile and str(Path(args.profile).with_stem(Path(args.profile).stem + "-n"))):
                    (rate_n, t_n), cpu_ms_n = measured(service.pid, fast_prompts, lambda: pipeline_rate(
                        api, url, "fast-n", fast_prompts, "fast-n", plan=[{"temperature": 0.8}]))
                bare = asyncio.run(bare_rate(fast_url, fast_prompts * K))
                bare_aiohttp = asyncio.run(bare_aiohttp_rate(fast_url, fast_prompts * K))
                sdk = asyncio.run(sdk_rate(fast_url, fast_prompts * K))
                print(f"latency 0 ms: {rate_fast:.1f} completions/s ({fast_prompts * K} in {t_fast:.2f} s), "
                      f"service CPU {_ms(cpu_ms)} ms per completion; with n={K}: {rate_n:.1f} completions/s "
                      f"({t_n:.2f} s), {_ms(cpu_ms_n)} ms per completion; bare httpx loop {bare:.1f} requests/s; "
                      f"bare aiohttp loop {bare_aiohttp:.1f} requests/s; openai client loop {sdk:.1f} requests/s")
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
    print(json.dumps({
        "completions_per_s_500ms": round(rate_slow, 1), "limit_per_s": round(limit, 1),
        "ratio": round(rate_slow / limit, 3),
        "completions_per_s_0ms": round(rate_fast, 1), "bare_per_s": round(bare, 1),
        "bare_ratio": round(rate_fast / bare, 3), "bare_aiohttp_per_s": round(bare_aiohttp, 1),
        "bare_aiohttp_ratio": round(rate_fast / bare_aiohttp, 3),
        "server_cpu_ms_per_completion_0ms": _ms(cpu_ms),
        "sdk_per_s": round(sdk, 1), "sdk_ceiling_ratio": round(sdk / bare_aiohttp, 3),
        "pipeline_vs_sdk_ratio": round(rate_fast / sdk, 3),
        "completions_per_s_0ms_n_k": round(rate_n, 1), "bare_aiohttp_ratio_n_k": round(rate_n / bare_aiohttp, 3),
        "server_cpu_ms_per_completion_0ms_n_k": _ms(cpu_ms_n), "k": K, "concurrency": CONCURRENCY,
        "completions_500ms": slow_prompts * K, "completions_0ms": fast_prompts * K,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }))


if __name__ == "__main__":
    main()
