"""A 21 MB request body sent without an API key, as issue 10 finding 4 measured it (the server
grew from 221 MB to 757 MB before its 401): the server's RSS before and after, with
Content-Length (refused before a byte of the body is read) and chunked (cut at the limit).

    python bench/body_limit.py

Last line: one JSON object with the server's RSS in MiB before and after each request, and
the statuses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _pg import bench_database  # noqa: E402

SIZE = 21 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def chunks():
    yield b'{"name": "x", "description": "'
    for _ in range(SIZE // 65536):
        yield b"a" * 65536
    yield b'"}'


def main() -> None:
    with bench_database() as url:
        port = free_port()
        env = {**os.environ, "DATABASE_URL": url, "FORGE_API_KEYS": json.dumps({"k" * 32: "admin"}), "FORGE_WORKER_IN_PROCESS": "false"}
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.2)
            figures = {"rss_start_mib": round(rss_mib(server.pid), 1)}
            body = b"".join(chunks())
            with httpx.Client(base_url=base, timeout=60) as c:
                for name, content in (("content_length", body), ("chunked", chunks())):
                    try:
                        status = c.post("/api/v1/datasets", content=content, headers={"content-type": "application/json"}).status_code
                    except httpx.HTTPError as exc:  # the server may close before the whole body is sent
                        status = type(exc).__name__
                    figures[f"{name}_status"] = status
                    figures[f"rss_after_{name}_mib"] = round(rss_mib(server.pid), 1)
            print(json.dumps(figures))
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
