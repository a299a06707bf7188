"""Reward model on K-wise rankings, on a synthetic verifiable preference set (right sums win)."""

from __future__ import annotations

import shutil

import torch

from trainer.config import RMConfig
from trainer.data import encode_scored
from trainer.loop import CHECKPOINTS
from trainer.models import ScalarModel, is_scalar_model_dir, load_causal_lm, load_tokenizer
from trainer.rm import train_rm


def test_held_out_pair_accuracy_at_least_90_percent(exports, tmp_path):
    cfg = RMConfig(
        data=str(exports["rm"]),
        model="tiny",
        out=str(tmp_path),
        max_steps=300,
        lr=3e-3,
        batch_size=16,
        eval_every=100,
        val_fraction=0.15,
    )
    result = train_rm(cfg)
    evals = [r for r in result["metrics"] if "val_accuracy" in r]
    print("RM held-out pair accuracy by step:", [(r["step"], r["val_accuracy"], r["val_margin"]) for r in evals])
    assert evals[0]["val_accuracy"] < evals[-1]["val_accuracy"]
    assert result["val_accuracy"] >= 0.90
    assert result["val_margin"] > 1.0

    # the saved folder scores texts: a right sum beats a wrong one on prompts it may never have seen
    assert is_scalar_model_dir(tmp_path)
    rm = ScalarModel.from_pretrained(tmp_path).eval()
    tok = load_tokenizer(str(tmp_path))
    prompts = ["2+5=", "2+5=", "8+8=", "8+8=", "0+9=", "0+9="]
    completions = ["7", "13", "16", "3", "9", "1"]
    ids, mask = encode_scored(tok, prompts, completions, 64, cfg.prompt_format)
    with torch.no_grad():
        scores = rm.score(ids, mask)
    assert (scores[0::2] > scores[1::2]).all(), scores
    assert torch.allclose(scores, result["model"].eval().score(ids, mask).detach())


def test_every_parameter_moves_and_resume_is_exact(exports, tmp_path):
    kwargs = dict(
        data=str(exports["rm"]), model="tiny", max_steps=6, lr=1e-3, batch_size=4, grad_accum=2, save_every=3, eval_every=3
    )
    whole = train_rm(RMConfig(out=str(tmp_path / "whole"), **kwargs))
    initial = dict(ScalarModel.from_causal_lm(load_causal_lm("tiny")).named_parameters())
    for name, p in whole["model"].named_parameters():
        assert not torch.equal(p.detach(), initial[name].detach()), f"{name} did not move"

    (tmp_path / "resumed" / CHECKPOINTS).mkdir(parents=True)
    shutil.copytree(tmp_path / "whole" / CHECKPOINTS / "step-3", tmp_path / "resumed" / CHECKPOINTS / "step-3")
    resumed = train_rm(RMConfig(out=str(tmp_path / "resumed"), **kwargs), resume=True)
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_per_s")} for r in rows]  # noqa: E731
    assert strip(resumed["metrics"]) == strip([r for r in whole["metrics"] if r["step"] > 3])
    for (name, a), (_, b) in zip(whole["model"].state_dict().items(), resumed["model"].state_dict().items()):
        assert torch.equal(a, b), name


def test_lora_reward_model_saves_merged_backbone_and_head(exports, tmp_path):
    result = train_rm(
        RMConfig(data=str(exports["rm"]), model="tiny", out=str(tmp_path), max_steps=3, lr=1e-2, batch_size=4, lora=True)
    )
    trainable = [n for n, p in result["model"].named_parameters() if p.requires_grad]
    assert "head.weight" in trainable and all("lora_" in n or n == "head.weight" for n in trainable)
    loaded = ScalarModel.from_pretrained(tmp_path)
    assert not any("lora" in k for k in loaded.state_dict())
    assert torch.equal(loaded.head.weight, result["model"].head.weight.detach())
    assert loaded.head.weight.abs().sum() > 0
