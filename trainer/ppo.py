"""PPO on an RL export (prompts only), as InstructGPT did.

One iteration: sample completions for a batch of prompts from the policy; score them with the
reward model; subtract a per-token KL penalty against the frozen SFT model; GAE advantages
from the value model; several clipped PPO epochs over the batch; adapt the KL coefficient.
The rollout of one batch lives in ``Rollout``; every objective comes from ``trainer.losses``.

Dropout stays off (models in eval mode) so that the log-probabilities of the rollout and of the
first PPO pass agree exactly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.config import PPOConfig
from trainer.data import PromptCollator, batch_for_step, encode_rl, encode_scored, load_records, shard, steps_per_epoch
from trainer.loop import (
    Metrics,
    finish,
    load_lora_state,
    load_resume,
    lr_at,
    make_accelerator,
    make_optimizer,
    progress_bar,
    provenance,
    restore_rng,
    save_checkpoint,
    save_step,
    set_lr,
)
from trainer.losses import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    gae,
    masked_mean,
    masked_whiten,
    policy_loss,
    token_logprobs,
    value_loss,
)
from trainer.models import (
    ScalarModel,
    apply_lora,
    frozen_copy,
    load_causal_lm,
    load_scalar_model,
    load_tokenizer,
)

RewardFn = Callable[[Sequence[str], Sequence[str]], Sequence[float]]
SAMPLES_FILE = "samples.jsonl"


@dataclass
class Rollout:
    """One batch of experience. Per-token tensors are [B, R] over the response tokens."""

    sequences: torch.Tensor  # [B, P + R] prompt (left-padded) + response (right-padded)
    attention_mask: torch.Tensor  # [B, P + R]
    position_ids: torch.Tensor  # [B, P + R]
    prompt_length: int  # P
    response_mask: torch.Tensor  # real response tokens, up to and including EOS
    logprobs: torch.Tensor  # policy at sampling time
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    kl: torch.Tensor  # per-token KL estimate against the reference
    scores: torch.Tensor  # [B] reward-model scores
    rewards: torch.Tensor  # -beta * kl, plus the score on the last token
    advantages: torch.Tensor
    returns: torch.Tensor
    completions: list[str]
    prompts: list[str]

    def select(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        names = ("sequences", "attention_mask", "position_ids", "response_mask", "logprobs", "values", "advantages", "returns")
        return {n: getattr(self, n)[idx] for n in names}


def response_mask_of(response: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """1 for each response token up to and including the first EOS (all of it if none)."""
    is_eos = response == eos_token_id
    has_eos = is_eos.any(1)
    first = torch.where(has_eos, is_eos.float().argmax(1), torch.full_like(has_eos, response.size(1), dtype=torch.long))
    positions = torch.arange(response.size(1), device=response.device).unsqueeze(0)
    return (positions <= first.unsqueeze(1)).long()


def position_ids_of(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(1) - 1).clamp(min=0)


def response_logits(model, sequences, attention_mask, position_ids, prompt_length: int) -> torch.Tensor:
    """Logits that predict each response token: positions P-1 .. P+R-2."""
    logits = model(input_ids=sequences, attention_mask=attention_mask, position_ids=position_ids).logits
    return logits[:, prompt_length - 1 : -1]


def response_values(value_model, sequences, attention_mask, position_ids, prompt_length: int) -> torch.Tensor:
    """The value of the state before each response token."""
    return value_model(sequences, attention_mask, position_ids)[:, prompt_length - 1 : -1].float()


class RewardModelScorer:
    """Scores (prompt, completion) texts with a reward-model folder, formatted as in RM training."""

    def __init__(self, path: str, max_length: int, prompt_format: str, device):
        self.tokenizer = load_tokenizer(path)
        self.model = frozen_copy(load_scalar_model(path)).to(device)
        self.max_length, self.prompt_format, self.device = max_length, prompt_format, device

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        ids, mask = encode_scored(self.tokenizer, prompts, completions, self.max_length, self.prompt_format)
        return self.model(ids.to(self.device), mask.to(self.device), last_only=True).float().tolist()


@torch.no_grad()
def make_rollout(
    *,
    policy,
    ref,
    value_model,
    batch: dict,
    tokenizer,
    reward_fn: RewardFn,
    cfg: PPOConfig,
    kl_coef: float,
    generation_config,
    device,
) -> Rollout:
    prompt_ids = batch["input_ids"].to(device)
    prompt_mask = batch["attention_mask"].to(device)
    P = prompt_ids.size(1)
    sequences = policy.generate(
        input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=generation_config
    )
    response = sequences[:, P:]
    response_mask = response_mask_of(response, tokenizer.eos_token_id)
    response = torch.where(response_mask.bool(), response, torch.full_like(response, tokenizer.pad_token_id))
    sequences = torch.cat([prompt_ids, response], dim=1)
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1)
    position_ids = position_ids_of(attention_mask)

    logprobs = token_logprobs(response_logits(policy, sequences, attention_mask, position_ids, P), response)
    ref_logprobs = token_logprobs(response_logits(ref, sequences, attention_mask, position_ids, P), response)
    values = response_values(value_model, sequences, attention_mask, position_ids, P)

    completions = [
        tokenizer.decode(r[m.bool()].tolist(), skip_special_tokens=True) for r, m in zip(response, response_mask)
    ]
    scores = torch.tensor(list(reward_fn(batch["prompt"], completions)), dtype=torch.float32, device=device)
    if cfg.score_clip:
        scores = scores.clamp(-cfg.score_clip, cfg.score_clip)

    mask = response_mask.float()
    kl = KL_ESTIMATORS[cfg.kl_estimator](logprobs, ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = response_mask.sum(1) - 1
    rewards[torch.arange(rewards.size(0), device=device), last] += scores
    advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        advantages = masked_whiten(advantages, mask)
    return Rollout(
        sequences=sequences,
        attention_mask=attention_mask,
        position_ids=position_ids,
        prompt_length=P,
        response_mask=response_mask,
        logprobs=logprobs,
        ref_logprobs=ref_logprobs,
        values=values * mask,
        kl=kl,
        scores=scores,
        rewards=rewards,
        advantages=advantages,
        returns=returns,
        completions=completions,
        prompts=list(batch["prompt"]),
    )


def ppo_update(*, policy, value_model, optimizer, accelerator, rollout: Rollout, cfg: PPOConfig) -> dict[str, float]:
    """``ppo_epochs`` passes of clipped PPO over the rollout in mini-batches."""
    n = rollout.sequences.size(0)
    P = rollout.prompt_length
    stats: dict[str, list[float]] = {k: [] for k in ("pg_loss", "vf_loss", "clipfrac", "vf_clipfrac", "entropy", "approx_kl")}
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(n)
        for start in range(0, n, cfg.mini_batch_size):
            mb = rollout.select(order[start : start + cfg.mini_batch_size].to(rollout.sequences.device))
            mask = mb["response_mask"].float()
            response = mb["sequences"][:, P:]
            logits = response_logits(policy, mb["sequences"], mb["attention_mask"], mb["position_ids"], P)
            logprobs = token_logprobs(logits, response)
            pg_loss, clipfrac = policy_loss(logprobs, mb["logprobs"], mb["advantages"], mask, cfg.clip_range)
            values = response_values(value_model, mb["sequences"], mb["attention_mask"], mb["position_ids"], P)
            vf_loss, vf_clipfrac = value_loss(values, mb["values"], mb["returns"], mask, cfg.clip_range_value)
            loss = pg_loss + cfg.vf_coef * vf_loss
            accelerator.backward(loss)
            if cfg.max_grad_norm:
                params = [p for m in (policy, value_model) for p in m.parameters() if p.requires_grad]
                accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                stats["pg_loss"].append(float(pg_loss))
                stats["vf_loss"].append(float(vf_loss))
                stats["clipfrac"].append(float(clipfrac))
                stats["vf_clipfrac"].append(float(vf_clipfrac))
                stats["entropy"].append(float(masked_mean(entropy_from_logits(logits), mask)))
                stats["approx_kl"].append(float(masked_mean(0.5 * (logprobs - mb["logprobs"]) ** 2, mask)))
    return {k: sum(v) / max(len(v), 1) for k, v in stats.items()}


def train_ppo(
    cfg: PPOConfig, *, reward_fn: RewardFn | None = None, resume: bool = False, show_progress: bool = False
) -> dict:
    """Run PPO. ``reward_fn(prompts, completions) -> scores`` replaces ``cfg.reward_model`` if given."""
    from transformers import GenerationConfig

    accelerator = make_accelerator(cfg)
    device = accelerator.device
    out = Path(cfg.out)
    resumed = load_resume(cfg) if resume else None
    ckpt = resumed[0] if resumed and not cfg.lora else None

    tokenizer = load_tokenizer(cfg.model)
    records = load_records(cfg.data, "rl")
    prompts = [encode_rl(tokenizer, r, cfg.max_length, cfg.prompt_format) for r in records]
    total = cfg.total_steps(steps_per_epoch(len(prompts), cfg.batch_size))
    collate = PromptCollator(tokenizer.pad_token_id)

    # models: policy, frozen reference (the SFT model), value model (from the RM by default)
    sft_model = load_causal_lm(cfg.model, tokenizer, seed=cfg.seed)
    ref = frozen_copy(sft_model).to(device)
    policy = load_causal_lm(str(ckpt), tokenizer) if ckpt else sft_model
    if reward_fn is None:
        if not cfg.reward_model:
            raise ValueError("PPO needs --reward-model (a folder written by `trainer rm`)")
        reward_fn = RewardModelScorer(cfg.reward_model, cfg.max_length, cfg.prompt_format, device)
    value_source = cfg.value_model or cfg.reward_model
    if ckpt:
        value_model = ScalarModel.from_pretrained(ckpt / "value")
    elif value_source:
        value_model = load_scalar_model(value_source)
    else:
        value_model = ScalarModel.from_causal_lm(sft_model)
    if cfg.lora:
        policy = apply_lora(policy, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
        value_model = apply_lora(value_model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
    kl_ctl = (
        AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon) if cfg.adaptive_kl else FixedKLController(cfg.kl_coef)
    )
    step = 0
    if resumed:
        _, state, payload = resumed
        step = state["step"]
        kl_ctl.load_state_dict(payload["kl_controller"])
        if cfg.lora:
            load_lora_state(policy, payload["lora"][""])
            load_lora_state(value_model, payload["lora"]["value"])
    optimizer = make_optimizer(list(policy.parameters()) + list(value_model.parameters()), cfg)
    policy, value_model, optimizer = accelerator.prepare(policy, value_model, optimizer)
    if resumed:
        optimizer.load_state_dict(payload["optimizer"])
        restore_rng(payload)
    policy.eval()
    value_model.eval()
    generation_config = GenerationConfig(
        do_sample=True,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_k=cfg.top_k or None,
        top_p=1.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )

    prov = provenance(cfg)
    metrics = Metrics(out, enabled=accelerator.is_main_process)
    metrics.start(step)
    samples_path = out / SAMPLES_FILE
    if step == 0 and accelerator.is_main_process:
        samples_path.unlink(missing_ok=True)
    rank, world = accelerator.process_index, accelerator.num_processes

    def mean_all(x: float) -> float:
        return float(accelerator.reduce(torch.tensor(x, device=device), "mean"))

    def checkpoint(path: Path, with_optimizer: bool, atomic: bool = True) -> None:
        save_checkpoint(
            path,
            accelerator=accelerator,
            models={"": policy, "value": value_model},
            tokenizer=tokenizer,
            cfg=cfg,
            state={"method": "ppo", "step": step, "kl_coef": kl_ctl.value, **prov},
            optimizer=optimizer if with_optimizer else None,
            extra={"kl_controller": kl_ctl.state_dict()},
            atomic=atomic,
        )

    t_start = time.perf_counter()
    with progress_bar(total, step, "ppo", show_progress and accelerator.is_main_process) as update:
        while step < total:
            t0 = time.perf_counter()
            lr = lr_at(step, total, cfg)
            set_lr(optimizer, lr)
            idx = shard(batch_for_step(step, len(prompts), cfg.batch_size, cfg.seed), rank, world)
            rollout = make_rollout(
                policy=accelerator.unwrap_model(policy),
                ref=ref,
                value_model=value_model,
                batch=collate([prompts[i] for i in idx]),
                tokenizer=tokenizer,
                reward_fn=reward_fn,
                cfg=cfg,
                kl_coef=kl_ctl.value,
                generation_config=generation_config,
                device=device,
            )
            stats = ppo_update(
                policy=policy, value_model=value_model, optimizer=optimizer, accelerator=accelerator, rollout=rollout, cfg=cfg
            )
            kl_per_completion = mean_all(float(rollout.kl.sum(1).mean()))
            row = {
                "step": step + 1,
                "lr": lr,
                "reward": mean_all(float(rollout.scores.mean())),
                "kl": kl_per_completion,
                "kl_coef": kl_ctl.value,
                "response_length": mean_all(float(rollout.response_mask.sum(1).float().mean())),
                **{k: mean_all(v) for k, v in stats.items()},
                "rollouts_per_s": len(idx) * world / (time.perf_counter() - t0),
            }
            kl_ctl.update(kl_per_completion, cfg.batch_size)
            step += 1
            if step % cfg.log_every == 0 or step == total:
                metrics.log(row)
            update(step, reward=row["reward"], kl=row["kl"])
            if accelerator.is_main_process and cfg.samples_every and (step % cfg.samples_every == 0 or step == 1):
                with samples_path.open("a", encoding="utf-8") as fh:
                    for p, c, s in list(zip(rollout.prompts, rollout.completions, rollout.scores.tolist()))[:4]:
                        fh.write(json.dumps({"step": step, "prompt": p, "completion": c, "reward": s}, ensure_ascii=False) + "\n")
            if cfg.save_every and step % cfg.save_every == 0 and step < total:
                save_step(checkpoint, out, step, cfg.keep_checkpoints)

    elapsed = time.perf_counter() - t_start
    finish(checkpoint, out, step, cfg.keep_checkpoints, accelerator, f"PPO {cfg.model}")
    return {
        "out": str(out),
        "step": step,
        "seconds": elapsed,
        "metrics": metrics.rows,
        "policy": accelerator.unwrap_model(policy),
        "ref": ref,
        "value_model": accelerator.unwrap_model(value_model),
        "tokenizer": tokenizer,
    }
