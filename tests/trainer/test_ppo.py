"""PPO against a known reward function: reward rises, KL stays bounded, the reference never moves."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch

from trainer.config import PPOConfig, SFTConfig
from trainer.formats import RLRecord, SFTRecord, write_jsonl
from trainer.loop import CHECKPOINTS
from trainer.models import load_causal_lm
from trainer.ppo import SAMPLES_FILE, position_ids_of, response_mask_of, train_ppo
from trainer.sft import train_sft


def share_of_a(prompts, completions):
    """The known reward: the share of 'a' among six letters (the SFT model writes a/b at random)."""
    return [c.count("a") / 6 for c in completions]


@pytest.fixture(scope="module")
def ab_task(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ab")
    rng = random.Random(0)
    word = lambda: "".join(rng.choice("cdefgh") for _ in range(4))  # noqa: E731
    write_jsonl(
        folder / "ab.sft.jsonl",
        [SFTRecord(prompt=word(), completion="".join(rng.choice("ab") for _ in range(6))) for _ in range(256)],
    )
    write_jsonl(folder / "ab.rl.jsonl", [RLRecord(prompt=word()) for _ in range(128)])
    sft = SFTConfig(
        data=str(folder / "ab.sft.jsonl"), model="tiny", out=str(folder / "sft"), max_steps=80, lr=3e-3, batch_size=16
    )
    train_sft(sft)
    return {"rl": folder / "ab.rl.jsonl", "sft": folder / "sft"}


def ppo_config(ab_task, out, **overrides) -> PPOConfig:
    kwargs = dict(
        data=str(ab_task["rl"]),
        model=str(ab_task["sft"]),
        out=str(out),
        max_steps=30,
        lr=3e-4,
        batch_size=16,
        mini_batch_size=8,
        ppo_epochs=2,
        max_new_tokens=8,
        kl_coef=0.05,
    )
    kwargs.update(overrides)
    return PPOConfig(**kwargs)


def test_reward_rises_kl_bounded_reference_unchanged(ab_task, tmp_path):
    sft_weights = {k: v.clone() for k, v in load_causal_lm(str(ab_task["sft"])).state_dict().items()}
    result = train_ppo(ppo_config(ab_task, tmp_path), reward_fn=share_of_a)
    rows = result["metrics"]
    rewards = [r["reward"] for r in rows]
    kls = [r["kl"] for r in rows]
    print("PPO reward by step:", [round(x, 3) for x in rewards])
    print("PPO KL by step:    ", [round(x, 3) for x in kls])
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert 0.3 < first < 0.65  # the SFT model writes a and b about equally
    assert last > first + 0.25
    assert max(kls) < 6.0  # at most about one nat per generated letter
    assert all(torch.isfinite(torch.tensor([r["pg_loss"], r["vf_loss"], r["entropy"]])).all() for r in rows)

    ref = result["ref"]
    assert not ref.training and not any(p.requires_grad for p in ref.parameters())
    for name, value in ref.state_dict().items():
        assert torch.equal(value, sft_weights[name]), f"reference weight {name} changed"
    moved = [n for n, p in result["policy"].state_dict().items() if not torch.equal(p, sft_weights[n])]
    assert len(moved) == len(sft_weights)  # every policy weight moved

    samples = [json.loads(line) for line in (tmp_path / SAMPLES_FILE).read_text().splitlines()]
    assert samples and {"step", "prompt", "completion", "reward"} <= samples[0].keys()
    assert (tmp_path / "value" / "scalar_model.json").exists()


def test_fixed_kl_and_k3_estimator_run(ab_task, tmp_path):
    result = train_ppo(
        ppo_config(ab_task, tmp_path, max_steps=3, adaptive_kl=False, kl_estimator="k3"), reward_fn=share_of_a
    )
    assert [r["kl_coef"] for r in result["metrics"]] == [0.05, 0.05, 0.05]
    assert all(r["kl"] >= 0 for r in result["metrics"])  # k3 is never negative


def test_resume_continues_exactly(ab_task, tmp_path):
    cfg = lambda out: ppo_config(ab_task, out, max_steps=4, save_every=2)  # noqa: E731
    whole = train_ppo(cfg(tmp_path / "whole"), reward_fn=share_of_a)
    (tmp_path / "resumed" / CHECKPOINTS).mkdir(parents=True)
    shutil.copytree(tmp_path / "whole" / CHECKPOINTS / "step-2", tmp_path / "resumed" / CHECKPOINTS / "step-2")
    resumed = train_ppo(cfg(tmp_path / "resumed"), reward_fn=share_of_a, resume=True)
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_per_s")} for r in rows]  # noqa: E731
    assert strip(resumed["metrics"]) == strip([r for r in whole["metrics"] if r["step"] > 2])
    for (name, a), (_, b) in zip(whole["policy"].state_dict().items(), resumed["policy"].state_dict().items()):
        assert torch.equal(a, b), name


def test_response_mask_and_positions():
    eos = 2
    response = torch.tensor([[5, 2, 0, 0], [5, 6, 7, 8], [2, 0, 0, 0]])
    assert response_mask_of(response, eos).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    assert position_ids_of(mask).tolist() == [[0, 0, 0, 1, 2, 2], [0, 1, 2, 3, 4, 5]]


def test_lora_ppo_trains_adapters_and_value_head_only(ab_task, tmp_path):
    sft_weights = {k: v.clone() for k, v in load_causal_lm(str(ab_task["sft"])).state_dict().items()}
    result = train_ppo(ppo_config(ab_task, tmp_path, max_steps=2, lora=True, lora_r=4), reward_fn=share_of_a)
    trainable = [n for n, p in result["policy"].named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    value_trainable = [n for n, p in result["value_model"].named_parameters() if p.requires_grad]
    assert "head.weight" in value_trainable and all("lora_" in n or n == "head.weight" for n in value_trainable)
    for name, value in result["ref"].state_dict().items():
        assert torch.equal(value, sft_weights[name]), name
    merged = load_causal_lm(str(tmp_path))
    assert set(merged.state_dict()) == set(sft_weights)  # saved merged: a plain model again


def test_reward_model_driven_ppo_raises_the_reward_model_score(exports, tmp_path):
    """SFT (stopped early) -> RM on K=4 rankings -> PPO against that RM, all on the addition task."""
    from trainer.config import RMConfig
    from trainer.rm import train_rm

    train_sft(SFTConfig(data=str(exports["sft"]), model="tiny", out=str(tmp_path / "sft"), max_steps=120, lr=3e-3,
                        batch_size=16))
    rm = train_rm(RMConfig(data=str(exports["rm"]), model="tiny", out=str(tmp_path / "rm"), max_steps=300, lr=3e-3,
                           batch_size=16, eval_every=0))
    assert rm["val_accuracy"] >= 0.9
    result = train_ppo(
        PPOConfig(data=str(exports["rl"]), model=str(tmp_path / "sft"), reward_model=str(tmp_path / "rm"),
                  out=str(tmp_path / "ppo"), max_steps=60, lr=3e-4, batch_size=32, mini_batch_size=16,
                  max_new_tokens=4)
    )
    rewards = [r["reward"] for r in result["metrics"]]
    kls = [r["kl"] for r in result["metrics"]]
    by10 = [round(sum(rewards[i : i + 10]) / 10, 2) for i in range(0, 60, 10)]
    print("PPO (RM reward) mean reward per 10 steps:", by10, "max KL:", round(max(kls), 3))
    assert by10[-1] > by10[0] + 1.0
    assert max(kls) < 6.0
