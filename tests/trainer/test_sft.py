"""SFT loop on a tiny model built in code."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from trainer import synthetic
from trainer.config import SFTConfig
from trainer.formats import sha256_file, write_jsonl
from trainer.loop import CHECKPOINTS, CONFIG_FILE, CURVES_FILE, METRICS_FILE, STATE_FILE
from trainer.models import build_tiny_causal_lm, build_tiny_tokenizer, load_causal_lm, load_tokenizer
from trainer.sft import train_sft


def rows_with(metrics: list[dict], key: str) -> list[dict]:
    return [r for r in metrics if key in r]


def without_timing(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("_per_s")} for r in metrics]


def test_loss_falls_and_model_learns_addition(sft_checkpoint):
    result = sft_checkpoint["result"]
    train = rows_with(result["metrics"], "loss")
    first = sum(r["loss"] for r in train[:5]) / 5
    last = sum(r["loss"] for r in train[-5:]) / 5
    assert first > 3.0  # about ln(259) at random init
    assert last < 0.25 * first
    assert result["val_loss"] < 0.3

    # greedy answers to held-in prompts are mostly right sums
    model, tok = result["model"], result["tokenizer"]
    right = 0
    for a, b in [(1, 2), (3, 4), (5, 5), (9, 8), (0, 7), (6, 2), (4, 4), (7, 3)]:
        ids = torch.tensor([tok(f"{a}+{b}=\n")["input_ids"]])
        out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
        right += tok.decode(out[0, ids.size(1) :], skip_special_tokens=True).strip() == str(a + b)
    assert right >= 5


def test_every_parameter_moves_and_checkpoint_round_trips(exports, tmp_path):
    cfg = SFTConfig(data=str(exports["sft"]), model="tiny", out=str(tmp_path), max_steps=4, lr=1e-3, batch_size=8)
    result = train_sft(cfg)
    initial = build_tiny_causal_lm(build_tiny_tokenizer(), seed=cfg.seed)
    trained = result["model"]
    before = dict(initial.named_parameters())
    for name, p in trained.named_parameters():
        assert p.requires_grad
        assert not torch.equal(p.detach(), before[name].detach()), f"{name} did not move"
        assert torch.isfinite(p).all()

    # the output folder is a plain Hugging Face model folder that loads back identically
    tok = load_tokenizer(str(tmp_path))
    loaded = load_causal_lm(str(tmp_path), tok)
    for (name, a), (_, b) in zip(trained.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    ids = torch.tensor([tok("3+4=\n")["input_ids"]])
    assert torch.equal(trained(ids).logits, loaded(ids).logits)

    saved = SFTConfig.load(tmp_path / CONFIG_FILE)
    assert saved == cfg and saved.method == "sft"
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["step"] == 4 and state["method"] == "sft"
    assert state["manifest_sha256"] == sha256_file(exports["manifest"])
    assert state["data_sha256"] == sha256_file(exports["sft"])
    assert (tmp_path / CURVES_FILE).stat().st_size > 1000
    lines = (tmp_path / METRICS_FILE).read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines if "loss" in json.loads(line)] == [1, 2, 3, 4]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_resume_continues_exactly(exports, tmp_path, lora):
    kwargs = dict(
        data=str(exports["sft"]),
        model="tiny",
        max_steps=10,
        lr=2e-3,
        warmup_steps=2,
        batch_size=8,
        grad_accum=2,
        save_every=5,
        eval_every=5,
        lora=lora,
        lora_r=4,
    )
    whole = train_sft(SFTConfig(out=str(tmp_path / "whole"), **kwargs))

    # a second run that "crashed" after step 5: only its checkpoint is left
    (tmp_path / "resumed" / CHECKPOINTS).mkdir(parents=True)
    shutil.copytree(tmp_path / "whole" / CHECKPOINTS / "step-5", tmp_path / "resumed" / CHECKPOINTS / "step-5")
    resumed = train_sft(SFTConfig(out=str(tmp_path / "resumed"), **kwargs), resume=True)

    after5 = [r for r in whole["metrics"] if r["step"] > 5]
    assert without_timing(resumed["metrics"]) == without_timing(after5)
    assert len(rows_with(after5, "loss")) == 5 and len(rows_with(after5, "val_loss")) == 1
    for (name, a), (_, b) in zip(whole["model"].state_dict().items(), resumed["model"].state_dict().items()):
        assert torch.equal(a, b), name


def test_lora_trains_adapters_only_and_saves_a_merged_model(exports, tmp_path):
    cfg = SFTConfig(
        data=str(exports["sft"]), model="tiny", out=str(tmp_path), max_steps=3, lr=1e-2, batch_size=8, lora=True
    )
    result = train_sft(cfg)
    trainable = [n for n, p in result["model"].named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    loaded = load_causal_lm(str(tmp_path))
    assert not any("lora" in k for k in loaded.state_dict())
    base = build_tiny_causal_lm(build_tiny_tokenizer(), seed=0)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(loaded.state_dict()[q], base.state_dict()[q])  # adapters merged in
    assert torch.equal(loaded.state_dict()["model.embed_tokens.weight"], base.state_dict()["model.embed_tokens.weight"])


def test_trains_on_the_whole_training_file_and_validates_on_the_exports_own(tmp_path):
    write_jsonl(tmp_path / "sft.train.jsonl", synthetic.sft_records(24, seed=1))
    write_jsonl(tmp_path / "sft.validation.jsonl", synthetic.sft_records(6, seed=2))
    cfg = SFTConfig(
        data=str(tmp_path / "sft.train.jsonl"), model="tiny", out=str(tmp_path / "out"), epochs=1, batch_size=8, val_fraction=0.5
    )
    result = train_sft(cfg)
    state = json.loads((tmp_path / "out" / STATE_FILE).read_text())
    # one epoch of all 24 training records is 3 steps (a 50% split would leave 12: 1 step)
    assert state["step"] == 3
    assert state["validation_data"] == str(tmp_path / "sft.validation.jsonl")
    assert state["validation_sha256"] == sha256_file(tmp_path / "sft.validation.jsonl")
    assert result["val_loss"] == result["val_loss"] and result["val_loss"] > 0  # measured, finite

