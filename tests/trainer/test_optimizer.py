"""The loops' AdamW runs torch's fused kernel on a CPU too: the same update as the single-tensor loop
torch uses there by default, and a state saved by that loop (an older checkpoint) still resumes."""

from __future__ import annotations

import torch

from trainer.config import SFTConfig
from trainer.loop import make_optimizer
from trainer.models import build_tiny_causal_lm, build_tiny_tokenizer


def _grads(model, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)


def test_fused_adamw_on_cpu_matches_the_single_tensor_loop_and_resumes_from_it():
    cfg = SFTConfig(data="x", model="tiny", out="x", lr=1e-2, weight_decay=0.1)
    tok = build_tiny_tokenizer()
    fused_model, plain_model = build_tiny_causal_lm(tok, seed=0), build_tiny_causal_lm(tok, seed=0)
    fused = make_optimizer(fused_model.parameters(), cfg)
    assert fused.defaults["fused"] is True
    groups = [
        {"params": [p for p in plain_model.parameters() if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in plain_model.parameters() if p.ndim < 2], "weight_decay": 0.0},
    ]
    plain = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))
    assert not any(g["fused"] or g["foreach"] for g in plain.param_groups)  # torch's CPU default
    for step in range(3):
        for model, opt in ((fused_model, fused), (plain_model, plain)):
            _grads(model, step)
            opt.step()
    for (name, a), b in zip(fused_model.named_parameters(), plain_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    # the single-tensor loop's state loads into the loops' optimizer and carries on alike
    resumed = make_optimizer(plain_model.parameters(), cfg)
    resumed.load_state_dict(plain.state_dict())
    before = [p.detach().clone() for p in fused_model.parameters()]
    _grads(fused_model, 9)
    fused.step()
    _grads(plain_model, 9)
    resumed.step()
    for a, b, old in zip(fused_model.parameters(), plain_model.parameters(), before):
        assert not torch.equal(a, old)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
