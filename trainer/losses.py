"""Every objective of the trainer as a small pure function over tensors.

The loops only call these; each is unit-tested against numbers computed by hand
(tests/trainer/test_losses.py). Shapes: B = batch, T = tokens, V = vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise ``x`` to unit variance over the masked entries (and zero mean if ``shift_mean``)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    n = mask.sum()
    if n > 1:  # unbiased, as torch.var
        var = var * n / (n - 1)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


# ---------------------------------------------------------------- SFT


def sft_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy on the tokens whose label is not IGNORE_INDEX.

    ``logits`` [B, T, V] come from inputs [B, T]; ``labels`` [B, T] are the inputs with prompt and
    padding set to IGNORE_INDEX. Position t predicts label t+1. ``reduction="sum"`` returns the
    summed loss (the loops divide by the token count of the whole step, so that gradient
    accumulation weighs every token the same as one big batch).
    """
    logits = logits[:, :-1, :].float()
    target = labels[:, 1:]
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=IGNORE_INDEX, reduction=reduction
    )


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(tokens) under ``logits`` [B, T, V], gathered to [B, T]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each categorical in ``logits`` [..., V], in nats."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


# ---------------------------------------------------------------- reward model


def ranking_pair_index(rankings: list[list[int]]) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
    """Flatten the rankings of a batch into pair indices over the concatenated completions.

    Returns (better, worse, gap, group, n_completions): ``better[p]`` and ``worse[p]`` index the
    flat list of all completions of the batch, ``group[p]`` the prompt the pair belongs to and
    ``n_completions[g]`` that prompt's K. Ties are skipped.
    """
    better, worse, gap, group, sizes = [], [], [], [], []
    offset = 0
    for g, ranking in enumerate(rankings):
        k = len(ranking)
        for i in range(k):
            for j in range(i + 1, k):
                if ranking[i] == ranking[j]:
                    continue
                b, w = (i, j) if ranking[i] < ranking[j] else (j, i)
                better.append(offset + b)
                worse.append(offset + w)
                gap.append(abs(ranking[i] - ranking[j]))
                group.append(g)
        sizes.append(k)
        offset += k
    return better, worse, gap, group, sizes


def ranking_loss(
    rewards: torch.Tensor,
    better: torch.Tensor,
    worse: torch.Tensor,
    group: torch.Tensor,
    n_completions: torch.Tensor,
    gap: torch.Tensor | None = None,
    margin_scale: float = 0.0,
) -> torch.Tensor:
    """InstructGPT's K-wise ranking loss, averaged over prompts.

    ``rewards`` [N] are the scalar rewards of all completions of the batch (each prompt's K
    together). For each prompt, its C(K,2) pairs contribute
    ``-1/C(K,2) * sum log sigmoid(r_better - r_worse - margin)``: one batch element, so a prompt
    with many completions does not outweigh others, and the K forwards are shared by all pairs.
    A tie is not a pair (it adds nothing but still counts in C(K,2)). ``margin`` is
    ``margin_scale * rank gap`` (Llama 2's margin, from the rank distance).
    """
    diff = rewards[better] - rewards[worse]
    if margin_scale and gap is not None:
        diff = diff - margin_scale * gap.to(diff.dtype)
    per_pair = -F.logsigmoid(diff.float())
    n_groups = n_completions.numel()
    k = n_completions.to(per_pair.dtype)
    n_pairs = k * (k - 1) / 2
    per_group = torch.zeros(n_groups, dtype=per_pair.dtype, device=per_pair.device)
    per_group = per_group.index_add(0, group, per_pair) / n_pairs
    return per_group.mean()


def kwise_ranking_loss(rewards: torch.Tensor, ranking: list[int], margin_scale: float = 0.0) -> torch.Tensor:
    """The ranking loss of one prompt: ``rewards`` [K] and its ``ranking`` (1 = best)."""
    better, worse, gap, group, sizes = ranking_pair_index([ranking])
    dev = rewards.device
    return ranking_loss(
        rewards,
        torch.tensor(better, device=dev, dtype=torch.long),
        torch.tensor(worse, device=dev, dtype=torch.long),
        torch.tensor(group, device=dev, dtype=torch.long),
        torch.tensor(sizes, device=dev),
        torch.tensor(gap, device=dev),
        margin_scale,
    )


# ---------------------------------------------------------------- PPO


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate, negated for minimisation. Returns (loss, clip fraction)."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    return loss, clipfrac


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss ``0.5 * max((V - R)^2, (V_clip - R)^2)``. Returns (loss, clip fraction)."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    err = (values - returns) ** 2
    err_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err, err_clipped), mask)
    clipfrac = masked_mean((err_clipped > err).float(), mask)
    return loss, clipfrac


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token KL estimate ``log p - log q`` (unbiased, can be negative)."""
    return logprobs - ref_logprobs


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token KL estimate ``(r - 1) - log r`` with ``r = q/p`` (unbiased, never negative)."""
    log_ratio = ref_logprobs - logprobs
    return torch.expm1(log_ratio) - log_ratio


KL_ESTIMATORS = {"k1": kl_k1, "k3": kl_k3}


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over [B, T] tokens; ``mask`` marks real tokens.

    Tokens after the end of a sequence have reward and value 0, so the last real token
    bootstraps from 0. Returns (advantages, returns = advantages + values).
    """
    m = mask.to(values.dtype)
    rewards, values = rewards * m, values * m
    advantages = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.size(1))):
        next_value = values[:, t + 1] if t + 1 < values.size(1) else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        advantages[:, t] = last
    advantages = advantages * m
    return advantages, (advantages + values) * m


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


class AdaptiveKLController(FixedKLController):
    """Ziegler et al. (2019): move beta so that the KL per completion tracks ``target``.

    ``beta <- beta * (1 + clip(KL/target - 1, -0.2, 0.2) * n_steps / horizon)``.
    """

    def __init__(self, kl_coef: float, target: float, horizon: int):
        super().__init__(kl_coef)
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
