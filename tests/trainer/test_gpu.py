"""GPU-only checks: the same loops on CUDA with bf16 autocast. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

from trainer.config import PPOConfig, RMConfig, SFTConfig
from trainer.ppo import train_ppo
from trainer.rm import train_rm
from trainer.sft import train_sft

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_sft_rm_ppo_on_cuda_bf16(exports, tmp_path):
    common = dict(model="tiny", mixed_precision="bf16", max_steps=20, lr=3e-3, batch_size=16)
    sft = train_sft(SFTConfig(data=str(exports["sft"]), out=str(tmp_path / "sft"), **common))
    assert next(sft["model"].parameters()).device.type == "cuda"
    losses = [r["loss"] for r in sft["metrics"] if "loss" in r]
    assert losses[-1] < losses[0] and all(torch.isfinite(torch.tensor(losses)))

    rm = train_rm(RMConfig(data=str(exports["rm"]), out=str(tmp_path / "rm"), **common))
    assert 0.0 <= rm["val_accuracy"] <= 1.0

    ppo = train_ppo(
        PPOConfig(
            data=str(exports["rl"]),
            model=str(tmp_path / "sft"),
            reward_model=str(tmp_path / "rm"),
            out=str(tmp_path / "ppo"),
            mixed_precision="bf16",
            max_steps=2,
            batch_size=8,
            mini_batch_size=4,
            max_new_tokens=4,
        )
    )
    assert next(ppo["ref"].parameters()).device.type == "cuda"
    assert all(torch.isfinite(torch.tensor([r["reward"], r["kl"], r["pg_loss"]])).all() for r in ppo["metrics"])
