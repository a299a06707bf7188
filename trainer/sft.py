"""Supervised fine-tuning on an SFT export: cross-entropy on the completion tokens only."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch

from trainer.config import SFTConfig
from trainer.data import (
    PackedSFTCollator,
    SFTCollator,
    batch_for_step,
    encode_sft,
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
from trainer.losses import IGNORE_INDEX, sft_loss
from trainer.models import load_causal_lm, load_tokenizer, use_varlen_attention


def n_target_tokens(example: dict) -> int:
    return sum(1 for t in example["labels"][1:] if t != IGNORE_INDEX)


def model_inputs(batch: dict, device) -> dict:
    """What the model takes from a collated batch (padded or padding-free), on ``device``."""
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items() if k != "labels"}
    return {**inputs, "use_cache": False}  # with a cache transformers would not see the sequences in one row


def n_real_tokens(batch: dict) -> int:
    return int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()


@torch.no_grad()
def evaluate(model, examples: list[dict], collate, batch_size: int, device) -> float:
    """Token-weighted validation loss."""
    if not examples:
        return float("nan")
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        batch = collate(examples[i : i + batch_size])
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        total += sft_loss(logits, batch["labels"].to(device), reduction="sum").item()
        count += sum(n_target_tokens(e) for e in examples[i : i + batch_size])
    model.train()
    return total / max(count, 1)


def train_sft(
    cfg: SFTConfig,
    *,
    resume: bool = False,
    show_progress: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> dict:
    """Train; ``on_step(step, tokens)`` is called after each optimizer step with the real tokens
    of that step (the bench times steps with it)."""
    accelerator = make_accelerator(cfg)
    out = Path(cfg.out)
    resumed = load_resume(cfg) if resume else None
    source = str(resumed[0]) if resumed and not cfg.lora else cfg.model

    # data: the export's own validation file beside --data, else a seeded split; tokenised once
    tokenizer = load_tokenizer(source)
    train_records, val_records = train_and_validation(cfg.data, "sft", cfg.val_fraction, cfg.seed)
    train = [encode_sft(tokenizer, r, cfg.max_length, cfg.prompt_format) for r in train_records]
    val = [encode_sft(tokenizer, r, cfg.max_length, cfg.prompt_format) for r in val_records]
    lengths = [len(e["input_ids"]) for e in train] if cfg.group_by_length else None
    total = cfg.total_steps(steps_per_epoch(len(train), cfg.batch_size))
    collate = SFTCollator(tokenizer.pad_token_id)
    train_collate = PackedSFTCollator() if cfg.padding_free else collate

    # model and optimizer
    model = load_causal_lm(source, tokenizer, seed=cfg.seed)
    if cfg.padding_free:
        use_varlen_attention(model)
    model, optimizer, step = prepare_model(model, cfg, accelerator, resumed)

    prov = provenance(cfg, validation_file(cfg.data))
    metrics = Metrics(out, enabled=accelerator.is_main_process)
    metrics.start(step)
    rank, world = accelerator.process_index, accelerator.num_processes
    device = accelerator.device
    tput = Throughput()
    last_loss, val_loss = float("nan"), float("nan")
    tokens_seen = 0

    def checkpoint(path: Path, with_optimizer: bool, atomic: bool = True) -> None:
        save_checkpoint(
            path,
            accelerator=accelerator,
            models={"": model},
            tokenizer=tokenizer,
            cfg=cfg,
            state={"method": "sft", "step": step, "val_loss": val_loss, **prov},
            optimizer=optimizer if with_optimizer else None,
            atomic=atomic,
        )

    t_start = time.perf_counter()
    with progress_bar(total, step, "sft", show_progress and accelerator.is_main_process) as update:
        while step < total:
            lr = lr_at(step, total, cfg)
            set_lr(optimizer, lr)
            idx = shard(batch_for_step(step, len(train), cfg.batch_size, cfg.seed, lengths), rank, world)
            n_tokens = sum(n_target_tokens(train[i]) for i in idx)
            step_loss, step_tokens = 0.0, 0
            chunks = micro_batches(idx, cfg.grad_accum)
            for j, chunk in enumerate(chunks):
                batch = train_collate([train[i] for i in chunk])
                sync = j == len(chunks) - 1
                with nullcontext() if sync else accelerator.no_sync(model):
                    logits = model(**model_inputs(batch, device)).logits
                    # summed over tokens / tokens of the whole step: accumulation = one big batch
                    loss = sft_loss(logits, batch["labels"].to(device), reduction="sum") / max(n_tokens, 1)
                    accelerator.backward(loss)
                step_loss += loss.item()
                n_real = n_real_tokens(batch)
                tput.add(n_real)
                tokens_seen += n_real
                step_tokens += n_real
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm) if cfg.max_grad_norm else None
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            last_loss = step_loss
            if on_step is not None:
                on_step(step, step_tokens)

            if step % cfg.log_every == 0 or step == total:
                tokens_per_s = tput.rate() * world
                row = {"step": step, "epoch": step / steps_per_epoch(len(train), cfg.batch_size), "lr": lr}
                row.update(loss=last_loss, tokens_per_s=tokens_per_s)
                if grad_norm is not None:
                    row["grad_norm"] = float(grad_norm)
                metrics.log(row)
                update(step, loss=last_loss, tok_s=tokens_per_s)
            if val and ((cfg.eval_every and step % cfg.eval_every == 0) or step == total):
                val_loss = evaluate(model, val, collate, cfg.batch_size, device)
                metrics.log({"step": step, "val_loss": val_loss})
            if cfg.save_every and step % cfg.save_every == 0 and step < total:
                save_step(checkpoint, out, step, cfg.keep_checkpoints)

    elapsed = time.perf_counter() - t_start
    finish(checkpoint, out, step, cfg.keep_checkpoints, accelerator, f"SFT {cfg.model}")
    return {
        "out": str(out),
        "step": step,
        "loss": last_loss,
        "val_loss": val_loss,
        "seconds": elapsed,
        "tokens": tokens_seen,
        "metrics": metrics.rows,
        "model": accelerator.unwrap_model(model),
        "tokenizer": tokenizer,
    }
