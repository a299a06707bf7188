"""Every loss against numbers computed by hand (the constants below are worked out on paper:
-log sigmoid(1) = 0.31326169, -log sigmoid(2) = 0.12692801, -log sigmoid(0.5) = 0.47407698,
-log sigmoid(-1) = 1.31326169, -log sigmoid(-2) = 2.12692801, ln 3 = 1.09861229)."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.losses import (
    IGNORE_INDEX,
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    gae,
    kl_k1,
    kl_k3,
    kwise_ranking_loss,
    masked_mean,
    masked_whiten,
    policy_loss,
    ranking_loss,
    ranking_pair_index,
    sft_loss,
    token_logprobs,
    value_loss,
)


def close(x, expected, tol=1e-6):
    return abs(float(x) - expected) < tol


# ---------------------------------------------------------------- SFT


def test_sft_loss_masks_prompt_and_padding():
    # position 0 predicts token 1 with uniform logits: ln 3
    # position 1 predicts token 2 (= class 0) with logits [2, 0, 0]: log(1 + 2 e^-2) = 0.23954428
    logits = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [5.0, -5.0, 1.0]]])
    labels = torch.tensor([[IGNORE_INDEX, 2, 0]])
    assert close(sft_loss(logits, labels), (1.09861229 + 0.23954428) / 2)
    assert close(sft_loss(logits, labels, reduction="sum"), 1.09861229 + 0.23954428)
    # masking the first completion token leaves only the second
    assert close(sft_loss(logits, torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 0]])), 0.23954428)


def test_token_logprobs_and_entropy():
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])
    lp = token_logprobs(logits, torch.tensor([[1, 0]]))
    assert close(lp[0, 0], math.log(0.5)) and close(lp[0, 1], math.log(0.75))
    ent = entropy_from_logits(logits)
    assert close(ent[0, 0], 0.69314718)
    assert close(ent[0, 1], -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))  # 0.56233514


# ---------------------------------------------------------------- reward model


def test_kwise_ranking_loss_k3_by_hand():
    rewards = torch.tensor([2.0, 1.0, 0.0])
    # pairs (0>1, diff 1), (0>2, diff 2), (1>2, diff 1), each weighted 1/C(3,2)
    assert close(kwise_ranking_loss(rewards, [1, 2, 3]), (0.31326169 + 0.12692801 + 0.31326169) / 3)
    # the reversed ranking: every difference has the wrong sign
    assert close(kwise_ranking_loss(rewards, [3, 2, 1]), (1.31326169 + 2.12692801 + 1.31326169) / 3)


def test_kwise_ranking_loss_skips_ties_but_keeps_the_scale():
    rewards = torch.tensor([2.0, 1.0, 0.0])
    # ranking [1, 1, 2]: (0,1) is a tie; (0>2, diff 2), (1>2, diff 1); still divided by C(3,2) = 3
    assert close(kwise_ranking_loss(rewards, [1, 1, 2]), (0.12692801 + 0.31326169) / 3)


def test_kwise_ranking_loss_margin_from_rank_gap():
    rewards = torch.tensor([2.0, 1.0, 0.0])
    # margin 0.5 per rank: (0,1) 1 - 0.5 = 0.5; (0,2) 2 - 1.0 = 1; (1,2) 1 - 0.5 = 0.5
    expected = (0.47407698 + 0.31326169 + 0.47407698) / 3
    assert close(kwise_ranking_loss(rewards, [1, 2, 3], margin_scale=0.5), expected)


def test_ranking_loss_batch_is_mean_over_prompts():
    # prompt A: K=3 as above; prompt B: K=2, rewards [0, 1], ranking [2, 1] -> one pair, diff 1
    rankings = [[1, 2, 3], [2, 1]]
    rewards = torch.tensor([2.0, 1.0, 0.0, 0.0, 1.0])
    better, worse, gap, group, sizes = ranking_pair_index(rankings)
    assert better == [0, 0, 1, 4] and worse == [1, 2, 2, 3] and group == [0, 0, 0, 1] and sizes == [3, 2]
    loss = ranking_loss(rewards, torch.tensor(better), torch.tensor(worse), torch.tensor(group), torch.tensor(sizes))
    prompt_a = (0.31326169 + 0.12692801 + 0.31326169) / 3
    prompt_b = 0.31326169 / 1
    assert close(loss, (prompt_a + prompt_b) / 2)


def test_ranking_loss_gradient_pushes_better_up():
    rewards = torch.tensor([0.0, 0.0, 0.0, 0.0], requires_grad=True)
    kwise_ranking_loss(rewards, [1, 2, 3, 4]).backward()
    # d/dr of -log sigmoid(r_b - r_w) at 0 is -0.5 for the better, +0.5 for the worse, / C(4,2) = 6
    assert torch.allclose(rewards.grad, torch.tensor([-3, -1, 1, 3]) * 0.5 / 6)


# ---------------------------------------------------------------- PPO


def test_policy_loss_clips_pessimistically():
    old = torch.zeros(1, 3)
    # ratios 1.5, 1.5, 0.5
    new = torch.log(torch.tensor([[1.5, 1.5, 0.5]]))
    adv = torch.tensor([[1.0, -1.0, 1.0]])
    mask = torch.ones(1, 3)
    loss, clipfrac = policy_loss(new, old, adv, mask, clip_range=0.2)
    # token 1: max(-1.5, -1.2) = -1.2 (clipped); token 2: max(1.5, 1.2) = 1.5; token 3: max(-0.5, -0.8) = -0.5
    assert close(loss, (-1.2 + 1.5 - 0.5) / 3)
    assert close(clipfrac, 1 / 3)
    # a masked token does not count
    loss, _ = policy_loss(new, old, adv, torch.tensor([[1.0, 1.0, 0.0]]), clip_range=0.2)
    assert close(loss, (-1.2 + 1.5) / 2)


def test_value_loss_clipped():
    values = torch.tensor([[1.5, 0.9]])
    old = torch.tensor([[1.0, 1.0]])
    returns = torch.tensor([[2.0, 0.0]])
    loss, clipfrac = value_loss(values, old, returns, torch.ones(1, 2), clip_range_value=0.2)
    # token 1: clipped value 1.2 -> max(0.25, 0.64) = 0.64; token 2: inside the range -> 0.81
    assert close(loss, 0.5 * (0.64 + 0.81) / 2)
    assert close(clipfrac, 0.5)


def test_kl_estimators():
    lp = torch.tensor([-1.0, -2.0, -1.5])
    ref = torch.tensor([-2.0, -1.0, -1.5])
    assert torch.allclose(kl_k1(lp, ref), torch.tensor([1.0, -1.0, 0.0]))
    # k3 = e^(ref - lp) - 1 - (ref - lp): e^-1 - 1 + 1 = 0.36787944; e^1 - 1 - 1 = 0.71828183
    assert torch.allclose(kl_k3(lp, ref), torch.tensor([0.36787944, 0.71828183, 0.0]), atol=1e-6)


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    adv, ret = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=0.95)
    # t2: 1 - 0.7 = 0.3; t1: (0.7 - 0.6) + 0.95 * 0.3 = 0.385; t0: (0.6 - 0.5) + 0.95 * 0.385 = 0.46575
    assert torch.allclose(adv, torch.tensor([[0.46575, 0.385, 0.3]]), atol=1e-6)
    assert torch.allclose(ret, torch.tensor([[0.96575, 0.985, 1.0]]), atol=1e-6)


def test_gae_stops_at_the_end_of_the_sequence():
    rewards = torch.tensor([[0.0, 1.0, 5.0]])
    values = torch.tensor([[0.5, 0.6, 9.0]])
    adv, ret = gae(rewards, values, torch.tensor([[1, 1, 0]]), gamma=0.9, lam=1.0)
    # t1 is last: 1 - 0.6 = 0.4; t0: (0.9 * 0.6 - 0.5) + 0.9 * 0.4 = 0.4; padding: 0
    assert torch.allclose(adv, torch.tensor([[0.4, 0.4, 0.0]]), atol=1e-6)
    assert torch.allclose(ret, torch.tensor([[0.9, 1.0, 0.0]]), atol=1e-6)


def test_whitening_and_masked_mean():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0])
    mask = torch.tensor([1, 1, 1, 1, 0])
    assert close(masked_mean(x, mask), 2.5)
    # mean 2.5, unbiased std sqrt(5/3) = 1.29099445
    expected = torch.tensor([-1.161895, -0.387298, 0.387298, 1.161895, 0.0])
    assert torch.allclose(masked_whiten(x, mask), expected, atol=1e-5)
    assert torch.allclose(masked_whiten(x, mask, shift_mean=False)[:4], expected[:4] + 2.5, atol=1e-5)


@pytest.mark.parametrize(
    ("kl", "expected"),
    [
        (12.0, 0.1 * 1.002),  # error clipped to +0.2, times 100/10000
        (6.6, 0.1 * 1.001),  # error 0.1
        (0.0, 0.1 * 0.998),  # error clipped to -0.2
    ],
)
def test_adaptive_kl_controller(kl, expected):
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    ctl.update(kl, n_steps=100)
    assert close(ctl.value, expected, 1e-9)
    restored = AdaptiveKLController(0.5, target=6.0, horizon=10000)
    restored.load_state_dict(ctl.state_dict())
    assert restored.value == ctl.value


def test_fixed_kl_controller_does_not_move():
    ctl = FixedKLController(0.05)
    ctl.update(100.0, n_steps=64)
    assert ctl.value == 0.05
