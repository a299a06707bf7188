"""Padding-free SFT batches train on exactly what padded batches train on."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from trainer import synthetic
from trainer.config import SFTConfig
from trainer.data import PackedSFTCollator, RMCollator, SFTCollator, common_prefix_length, encode_rm, encode_sft
from trainer.formats import RMRecord, write_jsonl
from trainer.losses import IGNORE_INDEX, sft_loss
from trainer.models import (
    VARLEN_SDPA,
    ScalarModel,
    build_tiny_causal_lm,
    build_tiny_tokenizer,
    prefix_shared_attention,
    shares_prefix,
    use_varlen_attention,
)
from trainer.rm import batch_loss
from trainer.sft import model_inputs, n_real_tokens, train_sft


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def examples(tok):
    # varied lengths (20 to 300 tokens), so the padded batch carries a lot of padding
    return [encode_sft(tok, r, 512) for r in synthetic.text_records(6, seed=3)]


def loss_and_grads(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = sft_loss(model(**model_inputs(batch, "cpu")).logits, batch["labels"], reduction="sum")
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_packed_batch_is_one_row_with_restarting_positions(tok, examples):
    batch = PackedSFTCollator()(examples)
    lengths = [len(e["input_ids"]) for e in examples]
    assert batch["input_ids"].shape == (1, sum(lengths))
    assert n_real_tokens(batch) == sum(lengths) == int(SFTCollator(tok.pad_token_id)(examples)["attention_mask"].sum())
    assert batch["cu_seq_lens_q"].tolist() == [sum(lengths[:i]) for i in range(len(lengths) + 1)]
    starts = batch["cu_seq_lens_q"][:-1].long()
    assert (batch["position_ids"][0, starts] == 0).all()
    # no sequence's last token is trained to predict the next sequence's first
    assert (batch["labels"][0, starts] == IGNORE_INDEX).all()
    assert tok.pad_token_id not in batch["input_ids"][0, :].tolist()


@pytest.mark.parametrize("varlen", [True, False], ids=["varlen-sdpa", "sdpa-block-mask"])
def test_padding_free_loss_and_gradients_equal_padded(tok, examples, varlen):
    """Same summed loss and same gradients on the same examples, padded or padding-free, with our
    per-sequence attention and with transformers' block-diagonal mask from the position ids."""
    model = build_tiny_causal_lm(tok, seed=0)
    model.train()
    padded = SFTCollator(tok.pad_token_id)(examples)
    assert (padded["attention_mask"] == 0).float().mean() > 0.2  # the padding is real
    loss_padded, grads_padded = loss_and_grads(model, padded)
    if varlen:
        assert use_varlen_attention(model)
        assert model.config._attn_implementation == VARLEN_SDPA
    loss_free, grads_free = loss_and_grads(model, PackedSFTCollator()(examples))
    assert loss_free == pytest.approx(loss_padded.item(), rel=1e-5)
    for name, grad in grads_padded.items():
        torch.testing.assert_close(grads_free[name], grad, rtol=1e-4, atol=1e-4, msg=name)
    # a padded batch through the switched model is still the padded batch (sdpa with its mask)
    loss_again, _ = loss_and_grads(model, padded)
    assert loss_again == pytest.approx(loss_padded.item(), rel=1e-5)


def test_padding_free_training_matches_padded_training(tmp_path):
    data = tmp_path / "text.sft.jsonl"
    write_jsonl(data, synthetic.text_records(32, seed=4))
    tokens = []

    def run(padding_free: bool) -> dict:
        seen = []
        cfg = SFTConfig(
            data=str(data), model="tiny", out=str(tmp_path / f"pf-{padding_free}"), max_steps=4, batch_size=8,
            lr=1e-3, val_fraction=0.25, eval_every=0, padding_free=padding_free,
        )
        result = train_sft(cfg, on_step=lambda step, n: seen.append((step, n)))
        tokens.append(seen)
        return result

    free, padded = run(True), run(False)
    assert tokens[0] == tokens[1] and [s for s, _ in tokens[0]] == [1, 2, 3, 4]
    assert free["tokens"] == padded["tokens"] == sum(n for _, n in tokens[0])
    losses = [[r["loss"] for r in res["metrics"] if "loss" in r] for res in (free, padded)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    assert free["val_loss"] == pytest.approx(padded["val_loss"], rel=1e-4)


def _loss_rewards_grads(model, batch):
    """One RM batch's loss, rewards and every parameter's gradient."""
    model.zero_grad(set_to_none=True)
    loss, rewards = batch_loss(model, batch, "cpu", margin_scale=0.5)
    loss.backward()
    return loss.detach(), rewards.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("varlen", [True, False], ids=["varlen-sdpa", "sdpa-block-mask"])
def test_padding_free_rm_loss_and_gradients_equal_padded(tok, varlen):
    """The K-wise ranking loss of a padding-free RM batch (rewards read at each sequence's last
    token of the row) equals the padded batch's, gradients included."""
    records = synthetic.rm_records(3, k=4, seed=5)
    # completions of varied length, so the padded batch pads
    records = [
        RMRecord(prompt=r.prompt, completion=[c * (1 + 7 * i) for i, c in enumerate(r.completion)], ranking=r.ranking)
        for r in records
    ]
    examples = [encode_rm(tok, r, 512) for r in records]
    model = ScalarModel.from_causal_lm(build_tiny_causal_lm(tok, seed=0))
    nn.init.normal_(model.head.weight, std=0.1)  # a zero head would give zero rewards either way
    model.train()

    run = functools.partial(_loss_rewards_grads, model)

    padded = RMCollator(tok.pad_token_id)(examples)
    assert (padded["attention_mask"] == 0).any()
    loss_p, rewards_p, grads_p = run(padded)
    if varlen:
        assert use_varlen_attention(model)
    free = RMCollator(tok.pad_token_id, padding_free=True)(examples)
    assert free["input_ids"].shape == (1, int(padded["attention_mask"].sum()))
    loss_f, rewards_f, grads_f = run(free)
    torch.testing.assert_close(rewards_f, rewards_p, rtol=1e-4, atol=1e-5)
    assert loss_f == pytest.approx(loss_p.item(), rel=1e-5)
    for name, grad in grads_p.items():
        torch.testing.assert_close(grads_f[name], grad, rtol=1e-4, atol=1e-4, msg=name)


def shared_prefix_records() -> list[RMRecord]:
    """Text prompts of 16-100 characters with K=4 completions each; one prompt whose completions
    all start alike (their common prefix runs past the prompt) and one whose completions are all
    the same (each sequence must keep its last token of its own)."""
    base = synthetic.text_records(10, seed=7)
    records = [
        RMRecord(prompt=base[i * 5].prompt, completion=[base[i * 5 + j].completion for j in range(1, 5)], ranking=[1, 2, 3, 4])
        for i in range(2)
    ]
    records.append(RMRecord(prompt="same start", completion=["abc " + c for c in "wxyz"], ranking=[2, 1, 4, 3]))
    records.append(RMRecord(prompt="all equal", completion=["tie"] * 4, ranking=[1, 2, 3, 4]))
    return records


def test_shared_prefix_rm_batch_holds_each_prompt_once():
    tok = build_tiny_tokenizer()
    examples = [encode_rm(tok, r, 512) for r in shared_prefix_records()]
    batch = RMCollator(tok.pad_token_id, padding_free=True, share_prefix=True)(examples)
    lengths = [[len(s) for s in e["input_ids"]] for e in examples]
    prefixes = [common_prefix_length(e["input_ids"]) for e in examples]
    prompt_len = len(tok("same start\n")["input_ids"])
    assert prefixes[2] == prompt_len + len("abc ")  # the shared completion start is shared too
    assert prefixes[3] == lengths[3][0] - 1  # identical sequences: all but the last token
    assert batch["input_ids"].shape == (1, sum(sum(ls) - 3 * p for ls, p in zip(lengths, prefixes)))
    ids, positions = batch["input_ids"][0], batch["position_ids"][0]
    for e, (a, b, suffixes) in zip(examples, batch["prefix_groups"]):
        for seq, (c, d) in zip(e["input_ids"], suffixes):  # prefix + suffix is the sequence, in place
            assert torch.cat([ids[a:b], ids[c:d]]).tolist() == seq
            assert torch.cat([positions[a:b], positions[c:d]]).tolist() == list(range(len(seq)))
    assert batch["last"].tolist() == [d - 1 for _, _, suffixes in batch["prefix_groups"] for _, d in suffixes]


def test_shared_prefix_rm_loss_rewards_and_gradients_equal_padded():
    """Computing each prompt once for its K completions is exact: the same rewards, loss and
    gradients as the padded batch of the K full sequences."""
    tok = build_tiny_tokenizer()
    records = shared_prefix_records()
    # a prompt longer than half of max_length is cut to fit each completion: prefixes differ
    records.append(RMRecord(prompt="p" * 90, completion=["a" * 10, "b" * 30, "c" * 60, "d" * 5], ranking=[4, 3, 2, 1]))
    examples = [encode_rm(tok, r, 96) for r in records]
    model = ScalarModel.from_causal_lm(build_tiny_causal_lm(tok, seed=0))
    nn.init.normal_(model.head.weight, std=0.1)
    model.train()

    run = functools.partial(_loss_rewards_grads, model)

    loss_p, rewards_p, grads_p = run(RMCollator(tok.pad_token_id)(examples))
    assert use_varlen_attention(model) and shares_prefix(model, 96)
    shared = RMCollator(tok.pad_token_id, padding_free=True, share_prefix=True)(examples)
    loss_s, rewards_s, grads_s = run(shared)
    torch.testing.assert_close(rewards_s, rewards_p, rtol=1e-4, atol=1e-5)
    assert loss_s == pytest.approx(loss_p.item(), rel=1e-5)
    for name, grad in grads_p.items():
        torch.testing.assert_close(grads_s[name], grad, rtol=1e-4, atol=1e-4, msg=name)


def test_shared_prefix_refused_where_attention_is_not_plain_causal():
    """A sliding window shorter than a sequence changes what its suffix sees: such a model stays on
    ``pack`` (``shares_prefix`` False), and a shared-prefix row given to it anyway is refused."""
    tok = build_tiny_tokenizer()
    examples = [encode_rm(tok, r, 512) for r in shared_prefix_records()]
    model = ScalarModel.from_causal_lm(build_tiny_causal_lm(tok, seed=0))
    assert not shares_prefix(model, 512)  # not switched to the varlen attention yet
    assert use_varlen_attention(model) and shares_prefix(model, 512)
    model.backbone.config.sliding_window = 32
    assert not shares_prefix(model, 512)
    batch = RMCollator(tok.pad_token_id, padding_free=True, share_prefix=True)(examples)
    with pytest.raises(ValueError, match="plain causal attention"):
        prefix_shared_attention(
            torch.zeros(1, 2, 400, 8), torch.zeros(1, 2, 400, 8), torch.zeros(1, 2, 400, 8),
            {"prefix_groups": batch["prefix_groups"], "sliding_window": 32}, 0.0, None,
        )
