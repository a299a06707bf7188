"""A resume reads a checkpoint as data, never as code (issue 10, finding 9): the optimizer file
is loaded with `torch.load(weights_only=True)`, so a pickle that would run something on load is
refused, while what the trainer itself saves (optimizer state, RNG states, KL controller) loads."""

from __future__ import annotations

import json
import pickle
import random

import pytest
import torch

from trainer.config import SFTConfig
from trainer.loop import CHECKPOINTS, CONFIG_FILE, OPTIMIZER_FILE, STATE_FILE, load_resume

MARK = []


class Explosive:
    """Unpickling this calls MARK.append: the stand-in for `os.system`."""

    def __reduce__(self):
        return (MARK.append, ("ran code from a checkpoint",))


def _checkpoint(tmp_path, payload) -> SFTConfig:
    cfg = SFTConfig(out=str(tmp_path))
    ckpt = tmp_path / CHECKPOINTS / "step-1"
    ckpt.mkdir(parents=True)
    (ckpt / STATE_FILE).write_text(json.dumps({"method": "sft", "step": 1}))
    (ckpt / CONFIG_FILE).write_text(json.dumps(cfg.to_dict()))
    torch.save(payload, ckpt / OPTIMIZER_FILE)
    return cfg


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    cfg = _checkpoint(tmp_path, {"optimizer": {}, "torch_rng": torch.get_rng_state(), "extra": Explosive()})
    with pytest.raises(pickle.UnpicklingError):
        load_resume(cfg)
    assert MARK == []


def test_what_the_trainer_saves_loads(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    saved = {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(),
             "lora": {"": {"w": torch.zeros(2)}}, "kl_controller": {"value": 0.05, "target": 6.0}}
    _, state, payload = load_resume(_checkpoint(tmp_path, saved))
    assert state["step"] == 1 and payload["kl_controller"] == {"value": 0.05, "target": 6.0}
    assert torch.equal(payload["torch_rng"], saved["torch_rng"]) and tuple(payload["python_rng"][1]) == saved["python_rng"][1]
    optimizer.load_state_dict(payload["optimizer"])
    random.setstate(payload["python_rng"])
