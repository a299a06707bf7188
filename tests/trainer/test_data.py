"""Reading exports, tokenising, collating, data order."""

from __future__ import annotations

import json

import pytest
import torch

from trainer import formats, synthetic
from trainer.data import (
    PromptCollator,
    RMCollator,
    SFTCollator,
    batch_for_step,
    encode_prompt,
    encode_rm,
    encode_sft,
    epoch_batches,
    find_manifest,
    join,
    micro_batches,
    prompt_text,
    split,
    train_and_validation,
    validation_file,
)
from trainer.formats import FormatError, RMRecord, SFTRecord, read_jsonl, write_jsonl
from trainer.losses import IGNORE_INDEX
from trainer.models import build_tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def test_bad_record_names_file_and_line(tmp_path):
    path = tmp_path / "bad.rm.jsonl"
    good = {"prompt": "p", "completion": ["a", "b"], "ranking": [1, 2]}
    bad = {"prompt": "p", "completion": ["a", "b", "c"], "ranking": [1, 2]}
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(FormatError) as err:
        read_jsonl(path, "rm")
    assert str(err.value).startswith(f"{path}:3: ")
    assert "'ranking' has 2 entries but 'completion' has 3" in str(err.value)


def test_tiny_tokenizer_round_trips_any_text(tok, tmp_path):
    from transformers import AutoTokenizer

    text = "3+4=7\n héllo ✓"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text, add_special_tokens=False)["input_ids"] == ids
    assert (again.pad_token_id, again.eos_token_id) == (tok.pad_token_id, tok.eos_token_id)


def test_sft_labels_cover_completion_and_eos_only(tok):
    ex = encode_sft(tok, SFTRecord(prompt="2+3=", completion="5"), max_length=64)
    prompt_ids = tok("2+3=\n", add_special_tokens=True)["input_ids"]
    assert ex["input_ids"] == prompt_ids + tok("5", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert ex["labels"][: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
    assert ex["labels"][len(prompt_ids) :] == ex["input_ids"][len(prompt_ids) :]


def test_chat_template_is_used_when_the_tokenizer_has_one():
    tok = build_tiny_tokenizer()
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    assert prompt_text(tok, "hi") == "<user>hi<assistant>"
    assert tok.decode(encode_prompt(tok, "hi")) == "<user>hi<assistant>"


def test_truncation_keeps_the_end_of_a_long_prompt(tok):
    ids, n_prompt = join(list(range(100)), [7, 8, 9], max_length=20)
    assert len(ids) == 20 and n_prompt == 17 and ids[:17] == list(range(83, 100)) and ids[17:] == [7, 8, 9]
    ids, n_prompt = join(list(range(5)), list(range(50)), max_length=20)
    assert ids == list(range(5)) + list(range(15)) and n_prompt == 5


def test_sft_collator_pads_right_with_ignored_labels(tok):
    a = encode_sft(tok, SFTRecord(prompt="1+1=", completion="2"), 64)
    b = encode_sft(tok, SFTRecord(prompt="1+1=", completion="22222"), 64)
    batch = SFTCollator(tok.pad_token_id)([a, b])
    n = len(a["input_ids"])
    assert batch["input_ids"].shape == (2, len(b["input_ids"]))
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (len(b["input_ids"]) - n)
    assert (batch["labels"][0, n:] == IGNORE_INDEX).all()
    assert (batch["input_ids"][0, n:] == tok.pad_token_id).all()


def test_rm_collator_keeps_a_prompts_k_completions_together(tok):
    recs = [
        RMRecord(prompt="a", completion=["x", "yy", "zzz"], ranking=[2, 1, 3]),
        RMRecord(prompt="b", completion=["u", "v"], ranking=[1, 1]),  # a tie: no pair
        RMRecord(prompt="c", completion=["p", "q", "r", "s"], ranking=[4, 3, 2, 1]),
    ]
    batch = RMCollator(tok.pad_token_id)([encode_rm(tok, r, 64) for r in recs])
    assert batch["input_ids"].shape[0] == 3 + 2 + 4
    assert batch["n_completions"].tolist() == [3, 2, 4]
    # prompt a: 1>0, 1>2, 0>2 (flat indices 0..2); prompt c: completions 5..8, later is better
    pairs = set(zip(batch["better"].tolist(), batch["worse"].tolist(), batch["group"].tolist()))
    assert pairs == {(1, 0, 0), (0, 2, 0), (1, 2, 0)} | {(b, w, 2) for w in range(5, 9) for b in range(w + 1, 9)}
    assert batch["gap"].tolist()[:3] == [1, 1, 2]
    # each flat row is prompt + completion + EOS
    row = batch["input_ids"][1][batch["attention_mask"][1].bool()].tolist()
    assert tok.decode(row[:-1]) == "a\nyy" and row[-1] == tok.eos_token_id


def test_prompt_collator_pads_left(tok):
    batch = PromptCollator(tok.pad_token_id)(
        [{"input_ids": [5, 6, 7], "prompt": "x"}, {"input_ids": [9], "prompt": "y"}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [tok.pad_token_id, tok.pad_token_id, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch["prompt"] == ["x", "y"]


def test_data_order_is_a_function_of_seed_and_epoch():
    lengths = [i % 7 for i in range(50)]
    e0 = epoch_batches(50, 8, seed=1, epoch=0, lengths=lengths)
    assert e0 == epoch_batches(50, 8, seed=1, epoch=0, lengths=lengths)
    assert e0 != epoch_batches(50, 8, seed=1, epoch=1, lengths=lengths)
    assert len(e0) == 6 and all(len(b) == 8 for b in e0) and len({i for b in e0 for i in b}) == 48
    assert batch_for_step(7, 50, 8, 1, lengths) == epoch_batches(50, 8, 1, 1, lengths)[1]
    train, val = split(100, 0.1, seed=0)
    assert len(val) == 10 and not set(train) & set(val) and split(100, 0.1, seed=0) == (train, val)
    assert micro_batches(list(range(10)), 3) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_manifest_beside_the_data_is_found(exports, tmp_path):
    assert find_manifest(exports["sft"]) == exports["manifest"]
    lonely = tmp_path / "x.sft.jsonl"
    lonely.write_text("", encoding="utf-8")
    assert find_manifest(lonely) is None
    with pytest.raises(FileNotFoundError):
        find_manifest(lonely, str(tmp_path / "missing.json"))


def test_bundled_examples_are_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "examples"
    for kind in ("sft", "rm", "rl"):
        files = sorted(root.glob(f"*.{kind}.jsonl"))
        assert files, f"no bundled {kind} example"
        for f in files:
            assert len(read_jsonl(f, kind)) > 0


def test_padding_is_long_tensor(tok):
    batch = SFTCollator(tok.pad_token_id)([encode_sft(tok, SFTRecord("a", "b"), 8)])
    assert batch["input_ids"].dtype == torch.long


def test_the_exports_own_validation_file_replaces_the_split(tmp_path):
    data = tmp_path / "sft.train.jsonl"
    write_jsonl(data, synthetic.sft_records(20, seed=1))
    records = read_jsonl(data, "sft")
    # no validation file beside it: a seeded split of the training file, as before
    assert validation_file(data) is None
    train, val = train_and_validation(data, "sft", 0.2, seed=0)
    train_idx, val_idx = split(20, 0.2, seed=0)
    assert (train, val) == ([records[i] for i in train_idx], [records[i] for i in val_idx]) and len(val) == 4
    # the export's own: every training record is trained on, the export's validation records validate
    write_jsonl(tmp_path / "sft.validation.jsonl", synthetic.sft_records(5, seed=2))
    assert validation_file(data) == tmp_path / "sft.validation.jsonl"
    assert train_and_validation(data, "sft", 0.2, seed=0) == (records, read_jsonl(tmp_path / "sft.validation.jsonl", "sft"))
    # only an export's training file has one: another file is split, whatever lies beside it
    other = tmp_path / "sft.jsonl"
    write_jsonl(other, synthetic.sft_records(20, seed=1))
    assert validation_file(other) is None and len(train_and_validation(other, "sft", 0.2, seed=0)[1]) == 4


def test_every_writer_puts_the_keys_in_the_declared_order():
    full = {
        "sft": formats.SFTRecord(prompt="p", completion="c", id="1", meta={"m": 1}),
        "rm": formats.RMRecord(prompt="p", completion=["a", "b"], ranking=[2, 1], id="1", meta={}),
        "rl": formats.RLRecord(prompt="p", id="1", meta={}),
        "pairs": formats.PairRecord(prompt="p", chosen="a", rejected="b", margin=1.0, id="1", meta={}),
        "sft_chat": formats.ChatSFTRecord(
            messages=[{"role": "user", "content": "p"}, {"role": "assistant", "content": "c"}], id="1", meta={}
        ),
        "pairs_chat": formats.ChatPairRecord(
            prompt=[{"role": "user", "content": "p"}], chosen=[{"content": "a", "role": "assistant"}],
            rejected=[{"role": "assistant", "content": "b"}], margin=2.0, id="1", meta={},
        ),
    }
    assert set(full) == set(formats.RECORD_TYPES)
    for kind, rec in full.items():
        assert list(rec.to_dict()) == list(formats.field_names(kind)), kind
        assert list(json.loads(formats.dumps(rec))) == list(formats.field_names(kind)), kind
        # optional fields are left out when unset
        bare = formats.parse_record(kind, {k: v for k, v in rec.to_dict().items() if k in formats.required_fields(kind)})
        assert list(bare.to_dict()) == list(formats.required_fields(kind)), kind
    assert formats.field_names("pairs") == ("prompt", "chosen", "rejected", "margin", "id", "meta")
    assert formats.required_fields("rm") == ("prompt", "completion", "ranking")
    # messages too: role then content, whatever order a line had them in
    read = formats.parse_record("pairs_chat", full["pairs_chat"].to_dict())
    assert formats.dumps(read).startswith('{"prompt":[{"role":"user","content":"p"}],"chosen":[{"role":"assistant","content":"a"}]')


@pytest.mark.parametrize(
    "ranks, ok",
    [
        ([2, 1, 3], {"any", "competition", "none"}),
        ([1, 1, 3], {"any", "competition"}),
        ([1, 1, 2], {"any"}),  # dense ties: what an export writes after filtering
        ([1, 3, 3], {"any"}),
        ([2, 2, 3], set()),  # nobody ranked 1
        ([0, 1, 2], set()),
        ([1, 2, 4], set()),
        ([1, 2], set()),
    ],
)
def test_one_rule_for_every_ranking(ranks, ok):
    for ties in ("any", "competition", "none"):
        if ties in ok:
            formats.validate_ranks(ranks, 3, ties=ties)
        else:
            with pytest.raises(FormatError):
                formats.validate_ranks(ranks, 3, ties=ties)
    # an RM record takes any tie numbering, and needs two completions
    if "any" in ok:
        RMRecord(prompt="p", completion=["a", "b", "c"], ranking=ranks)
    with pytest.raises(FormatError, match="at least 2"):
        RMRecord(prompt="p", completion=["a"], ranking=[1])

