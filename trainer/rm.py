"""Reward model on an RM export: K completions per prompt, all C(K,2) pairs from K forwards."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch

from trainer.config import RMConfig
from trainer.data import (
    RMCollator,
    batch_for_step,
    encode_rm,
    micro_batches,
    shard,
    steps_per_epoch,
    train_and_validation,
    validation_file,
)
from trainer.loop import (
    Metrics,
    Throughput,
    finish,
    load_resume,
    lr_at,
    make_accelerator,
    prepare_model,
    progress_bar,
    provenance,
    save_checkpoint,
    save_step,
    set_lr,
)
from trainer.losses import ranking_loss
from trainer.models import load_scalar_model, load_tokenizer, shares_prefix, use_varlen_attention


def packed_inputs(batch: dict, device) -> dict:
    keys = ("position_ids", "last", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "prefix_groups")
    return {k: batch[k].to(device) if isinstance(batch[k], torch.Tensor) else batch[k] for k in keys if k in batch}


def batch_loss(model, batch: dict, device, margin_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, rewards) of one collated RM batch."""
    if "last" in batch:  # padding-free: one row, the rewards at each sequence's last token
        rewards = model(batch["input_ids"].to(device), None, **packed_inputs(batch, device)).float()
    else:
        rewards = model(batch["input_ids"].to(device), batch["attention_mask"].to(device), last_only=True).float()
    loss = ranking_loss(
        rewards,
        batch["better"].to(device),
        batch["worse"].to(device),
        batch["group"].to(device),
        batch["n_completions"].to(device),
        batch["gap"].to(device),
        margin_scale,
    )
    return loss, rewards


@torch.no_grad()
def evaluate(model, examples: list[dict], collate, batch_size: int, device, margin_scale: float = 0.0) -> dict:
    """Validation pair accuracy (the better completion scores higher), mean margin, loss."""
    if not examples:
        return {}
    model.eval()
    correct, margin, pairs, loss = 0, 0.0, 0, 0.0
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        batch = collate(chunk)
        batch_l, rewards = batch_loss(model, batch, device, margin_scale)
        diff = rewards[batch["better"].to(device)] - rewards[batch["worse"].to(device)]
        correct += int((diff > 0).sum())
        margin += float(diff.sum())
        pairs += diff.numel()
        loss += float(batch_l) * len(chunk)
    model.train()
    return {
        "val_accuracy": correct / max(pairs, 1),
        "val_margin": margin / max(pairs, 1),
        "val_loss": loss / len(examples),
    }


def train_rm(
    cfg: RMConfig,
    *,
    resume: bool = False,
    show_progress: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> dict:
    """Train; ``on_step(step, pairs)`` is called after each optimizer step with the pairs of that
    step (the bench times steps with it)."""
    accelerator = make_accelerator(cfg)
    out = Path(cfg.out)
    resumed = load_resume(cfg) if resume else None
    source = str(resumed[0]) if resumed and not cfg.lora else cfg.model

    tokenizer = load_tokenizer(source)
    train_records, val_records = train_and_validation(cfg.data, "rm", cfg.val_fraction, cfg.seed)
    train = [encode_rm(tokenizer, r, cfg.max_length, cfg.prompt_format) for r in train_records]
    val = [encode_rm(tokenizer, r, cfg.max_length, cfg.prompt_format) for r in val_records]
    total = cfg.total_steps(steps_per_epoch(len(train), cfg.batch_size))
    collate = RMCollator(tokenizer.pad_token_id)
    model = load_scalar_model(source, tokenizer, seed=cfg.seed)
    # each prompt's K sequences share its tokens once per batch where the attention allows it
    share = cfg.padding_free and use_varlen_attention(model) and shares_prefix(model, cfg.max_length)
    train_collate = RMCollator(tokenizer.pad_token_id, padding_free=cfg.padding_free, share_prefix=share)
    model, optimizer, step = prepare_model(model, cfg, accelerator, resumed)

    prov = provenance(cfg, validation_file(cfg.data))
    metrics = Metrics(out, enabled=accelerator.is_main_process)
    metrics.start(step)
    rank, world = accelerator.process_index, accelerator.num_processes
    device = accelerator.device
    tput = Throughput()
    last_loss, val_metrics = float("nan"), {}
    pairs_seen = 0

    def checkpoint(path: Path, with_optimizer: bool, atomic: bool = True) -> None:
        save_checkpoint(
            path,
            accelerator=accelerator,
            models={"": model},
            tokenizer=tokenizer,
            cfg=cfg,
            state={"method": "rm", "step": step, **val_metrics, **prov},
            optimizer=optimizer if with_optimizer else None,
            atomic=atomic,
        )

    t_start = time.perf_counter()
    with progress_bar(total, step, "rm", show_progress and accelerator.is_main_process) as update:
        while step < total:
            lr = lr_at(step, total, cfg)
            set_lr(optimizer, lr)
            idx = shard(batch_for_step(step, len(train), cfg.batch_size, cfg.seed), rank, world)
            step_loss, step_pairs = 0.0, 0
            chunks = micro_batches(idx, cfg.grad_accum)
            for j, chunk in enumerate(chunks):
                batch = train_collate([train[i] for i in chunk])
                with nullcontext() if j == len(chunks) - 1 else accelerator.no_sync(model):
                    loss, _ = batch_loss(model, batch, device, cfg.margin_scale)
                    # a mean over prompts; weighted so accumulation equals one big batch
                    loss = loss * len(chunk) / len(idx)
                    accelerator.backward(loss)
                step_loss += loss.item()
                tput.add(batch["better"].numel())
                pairs_seen += batch["better"].numel()
                step_pairs += batch["better"].numel()
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm) if cfg.max_grad_norm else None
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            last_loss = step_loss
            if on_step is not None:
                on_step(step, step_pairs)

            if step % cfg.log_every == 0 or step == total:
                pairs_per_s = tput.rate() * world
                row = {"step": step, "epoch": step / steps_per_epoch(len(train), cfg.batch_size), "lr": lr}
                row.update(loss=last_loss, pairs_per_s=pairs_per_s)
                if grad_norm is not None:
                    row["grad_norm"] = float(grad_norm)
                metrics.log(row)
                update(step, loss=last_loss, pairs_s=pairs_per_s)
            if val and ((cfg.eval_every and step % cfg.eval_every == 0) or step == total):
                val_metrics = evaluate(model, val, collate, cfg.batch_size, device, cfg.margin_scale)
                metrics.log({"step": step, **val_metrics})
            if cfg.save_every and step % cfg.save_every == 0 and step < total:
                save_step(checkpoint, out, step, cfg.keep_checkpoints)

    elapsed = time.perf_counter() - t_start
    finish(checkpoint, out, step, cfg.keep_checkpoints, accelerator, f"RM {cfg.model}")
    return {
        "out": str(out),
        "step": step,
        "loss": last_loss,
        **val_metrics,
        "seconds": elapsed,
        "pairs": pairs_seen,
        "metrics": metrics.rows,
        "model": accelerator.unwrap_model(model),
        "tokenizer": tokenizer,
    }
