"""What the three loops share: accelerator, optimizer, schedule, checkpoints, metrics, plot.

A checkpoint is a folder: the model as ``save_pretrained`` (LoRA merged in, so the next step
can load it as a plain model; a LoRA run's resumable step checkpoints leave it out, since a
resume rebuilds the model from ``--model`` and the adapters, and writing a merged copy of every
model at every step was most of a short LoRA run's time on a small machine), the tokenizer, ``trainer_config.json`` (the config dataclass),
``trainer_state.json`` (method, step, sha256 of the export manifest and data file) and
``optimizer.pt`` (optimizer, RNG states, LoRA weights, and whatever else the loop needs to
continue exactly).
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainer.config import TrainConfig
from trainer.data import find_manifest
from trainer.formats import sha256_file

STATE_FILE = "trainer_state.json"
CONFIG_FILE = "trainer_config.json"
OPTIMIZER_FILE = "optimizer.pt"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
CHECKPOINTS = "checkpoints"

log = logging.getLogger("trainer")


def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    set_seed(cfg.seed)
    return accelerator


def prepare_model(model: torch.nn.Module, cfg: TrainConfig, accelerator, resumed: tuple | None):
    """LoRA when asked, the resumed step / adapters / optimizer state / RNG, accelerate's wrapping.
    Returns (model, optimizer, step) with the model in train mode."""
    if cfg.lora:
        from trainer.models import apply_lora

        model = apply_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
    step, payload = 0, None
    if resumed:
        _, state, payload = resumed
        step = state["step"]
        if cfg.lora:
            load_lora_state(model, payload["lora"][""])
    optimizer = make_optimizer(model.parameters(), cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    if payload is not None:
        optimizer.load_state_dict(payload["optimizer"])
        restore_rng(payload)
    model.train()
    return model, optimizer, step


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=fused_adamw_ok(params))


def fused_adamw_ok(params: list[torch.Tensor]) -> bool:
    """AdamW's fused kernel (one pass over all tensors) where torch has it for these parameters.

    On a CPU torch otherwise runs the single-tensor loop (its multi-tensor path is CUDA-only):
    about ten small operations per parameter tensor per step. transformers' ``Trainer`` (and so
    TRL) defaults to the fused kernel too (``adamw_torch_fused``). Same update rule, same state
    (a checkpoint saved without it resumes with it and the other way round).
    """
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices
    except ImportError:  # a private helper: without it, the default path
        return False
    devices = set(_get_fused_kernels_supported_devices())
    return bool(params) and all(p.is_floating_point() and p.device.type in devices for p in params)


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay from ``lr`` to ``lr * min_lr_ratio`` (nanoGPT)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    min_lr = cfg.lr * cfg.min_lr_ratio
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - min_lr)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def provenance(cfg: TrainConfig, validation: Path | None = None) -> dict[str, Any]:
    """What a checkpoint trained on: hashes of the data, of the export manifest and, when one was
    used, of the export's validation file."""
    manifest = find_manifest(cfg.data, cfg.manifest)
    out = {
        "data_sha256": sha256_file(cfg.data),
        "manifest": str(manifest) if manifest else None,
        "manifest_sha256": sha256_file(manifest) if manifest else None,
    }
    if validation is not None:
        out.update(validation_data=str(validation), validation_sha256=sha256_file(validation))
    return out


# ---------------------------------------------------------------- checkpoints


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach().cpu().clone() for k, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(
    path: Path,
    *,
    accelerator,
    models: dict[str, torch.nn.Module],
    tokenizer,
    cfg: TrainConfig,
    state: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    extra: dict[str, Any] | None = None,
    atomic: bool = True,
) -> None:
    """Write a checkpoint folder. ``models[""]`` goes at the top, others in sub-folders.

    ``atomic`` writes beside ``path`` and renames, so a crash never leaves a half checkpoint
    that ``--resume`` would pick; the final model goes straight into the output folder.
    """
    from trainer.models import merged

    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    tmp = path.with_name(path.name + ".tmp") if atomic else path
    if atomic and tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    lora_states = {}
    for name, model in models.items():
        model = accelerator.unwrap_model(model)
        target = tmp / name if name else tmp
        target.mkdir(parents=True, exist_ok=True)
        if cfg.lora:
            lora_states[name] = trainable_state(model)
        if not (cfg.lora and optimizer is not None):
            merged(model).save_pretrained(target)
    tokenizer.save_pretrained(tmp)
    cfg.save(tmp / CONFIG_FILE)
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    if optimizer is not None:
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(),
                "lora": lora_states,
                **(extra or {}),
            },
            tmp / OPTIMIZER_FILE,
        )
    if atomic:
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)


def save_step(checkpoint, out: Path, step: int, keep: int) -> None:
    """A resumable checkpoint of `step` under OUT/checkpoints, keeping the newest `keep`.
    `checkpoint(path, with_optimizer, atomic=True)` is the loop's own saver."""
    checkpoint(Path(out) / CHECKPOINTS / f"step-{step}", with_optimizer=True)
    prune_checkpoints(out, keep)


def finish(checkpoint, out: Path, step: int, keep: int, accelerator, title: str) -> None:
    """End of a run: the last resumable checkpoint, the final model in OUT itself, the curves."""
    save_step(checkpoint, out, step, keep)
    checkpoint(Path(out), with_optimizer=False, atomic=False)
    if accelerator.is_main_process:
        plot_curves(out, title)


def latest_checkpoint(out: str | Path) -> Path | None:
    folder = Path(out) / CHECKPOINTS
    if not folder.is_dir():
        return None
    steps = sorted(
        (int(p.name.split("-")[1]), p) for p in folder.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")
    )
    return steps[-1][1] if steps else None


def prune_checkpoints(out: str | Path, keep: int) -> None:
    folder = Path(out) / CHECKPOINTS
    steps = sorted((int(p.name.split("-")[1]), p) for p in folder.glob("step-*") if not p.name.endswith(".tmp"))
    for _, p in steps[: max(0, len(steps) - max(1, keep))]:
        shutil.rmtree(p, ignore_errors=True)


def load_resume(cfg: TrainConfig) -> tuple[Path, dict, dict] | None:
    """(checkpoint folder, trainer state, optimizer payload) of the latest checkpoint, or None.

    Options that differ from the checkpoint's saved config are reported: the run continues
    with the new ones, so it is no longer the run that was interrupted.
    """
    ckpt = latest_checkpoint(cfg.out)
    if ckpt is None:
        log.warning("--resume: no checkpoint in %s/%s, starting from step 0", cfg.out, CHECKPOINTS)
        return None
    state = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
    if state.get("method") != cfg.method:
        raise ValueError(f"{ckpt} is a {state.get('method')} checkpoint, not {cfg.method}")
    saved = json.loads((ckpt / CONFIG_FILE).read_text(encoding="utf-8"))
    changed = {k: (saved[k], v) for k, v in cfg.to_dict().items() if k != "out" and k in saved and saved[k] != v}
    if changed:
        log.warning("--resume with options that differ from the checkpoint (saved, now): %s", changed)
    log.info("resuming from %s (step %s)", ckpt, state["step"])
    # weights_only: a checkpoint folder is data, never code (tensors, numbers, strings, containers only)
    payload = torch.load(ckpt / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    return ckpt, state, payload


def restore_rng(payload: dict) -> None:
    torch.set_rng_state(payload["torch_rng"])
    random.setstate(payload["python_rng"])


def load_lora_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)


# ---------------------------------------------------------------- metrics, progress, plot


@dataclass
class Metrics:
    """Appends one JSON object per line to OUT/metrics.jsonl (main process only)."""

    out: Path
    enabled: bool = True
    rows: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.path = self.out / METRICS_FILE

    def start(self, resume_step: int) -> None:
        """Drop lines past ``resume_step`` (written after the checkpoint we resume from)."""
        if not self.enabled:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        if resume_step == 0:
            self.path.write_text("", encoding="utf-8")
            return
        if self.path.exists():
            keep = [
                line
                for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")

    def log(self, row: dict) -> None:
        row = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
        self.rows.append(row)
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")


@contextmanager
def progress_bar(total: int, start: int, description: str, enabled: bool):
    """A rich progress bar; ``update(step, **fields)`` shows loss and throughput."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not enabled:
        yield lambda step, **fields: None
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    with progress:
        task = progress.add_task(description, total=total, completed=start, info="")

        def update(step: int, **fields: float) -> None:
            info = "  ".join(f"{k} {v:.4g}" for k, v in fields.items())
            progress.update(task, completed=step, info=info)

        yield update


def plot_curves(out: str | Path, title: str = "") -> Path | None:
    """OUT/curves.png: one panel per metric of metrics.jsonl, against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(out) / METRICS_FILE
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    skip = {"step", "epoch", "time", "lr"}
    keys = sorted({k for r in rows for k, v in r.items() if k not in skip and isinstance(v, (int, float))})
    if not keys:
        return None
    cols = min(3, len(keys))
    nrows = -(-len(keys) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    target = Path(out) / CURVES_FILE
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return target


class Throughput:
    """Items per second over the steps since the last ``rate()`` call."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.count = 0

    def add(self, n: int) -> None:
        self.count += n

    def rate(self) -> float:
        now = time.perf_counter()
        rate = self.count / max(now - self.t0, 1e-9)
        self.t0, self.count = now, 0
        return rate
