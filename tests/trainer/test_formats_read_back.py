"""Reading the adapters back (imports): TRL's implicit prompt and the chat adapters' inverses."""

from __future__ import annotations

import pytest

from trainer import formats as F

U = {"role": "user", "content": "Capital of France?"}


def test_extract_prompt_follows_trl_for_strings_and_conversations():
    # TRL: the shared prefix; a space right before the split goes with the answers
    assert F.extract_prompt("The sky is blue.", "The sky is green.") == ("The sky is", " blue.", " green.")
    assert F.extract_prompt("Q: 2+2? 4", "Q: 2+2? 5") == ("Q: 2+2?", " 4", " 5")
    assert F.extract_prompt("abc", "xyz") == ("", "abc", "xyz")
    chosen = [U, {"role": "assistant", "content": "Paris"}]
    rejected = [U, {"role": "assistant", "content": "Lyon"}]
    assert F.extract_prompt(chosen, rejected) == ([U], chosen[1:], rejected[1:])


def test_parse_pair_with_and_without_prompt():
    explicit = F.parse_pair("pairs", {"prompt": "p", "chosen": "a", "rejected": "b", "margin": 2})
    assert explicit == F.PairRecord(prompt="p", chosen="a", rejected="b", margin=2.0)
    implicit = F.parse_pair("pairs", {"chosen": "Hi there", "rejected": "Hi you"})
    assert (implicit.prompt, implicit.chosen, implicit.rejected) == ("Hi", " there", " you")
    chat = F.parse_pair(
        "pairs_chat",
        {"chosen": [U, {"role": "assistant", "content": "Paris"}], "rejected": [U, {"role": "assistant", "content": "Lyon"}]},
    )
    assert F.chat_to_pair(chat) == F.PairRecord(prompt=U["content"], chosen="Paris", rejected="Lyon")
    with pytest.raises(F.FormatError, match="same prompt"):
        F.parse_pair("pairs", {"chosen": "abc", "rejected": "xyz"})
    with pytest.raises(F.FormatError, match="strings"):
        F.parse_pair("pairs", {"chosen": [U], "rejected": [U]})
    with pytest.raises(F.FormatError, match="lists of messages"):
        F.parse_pair("pairs_chat", {"chosen": "a", "rejected": "b"})


def test_chat_inverses_round_trip_and_refuse_multi_turn():
    sft = F.SFTRecord(prompt="p", completion="c", id="7")
    assert F.chat_to_sft(F.sft_to_chat(sft)) == sft
    pair = F.PairRecord(prompt="p", chosen="a", rejected="b", margin=1.0, id="1-0-1")
    assert F.chat_to_pair(F.pair_to_chat(pair)) == pair
    multi = F.ChatSFTRecord(messages=[U, {"role": "assistant", "content": "x"}, U, {"role": "assistant", "content": "y"}])
    with pytest.raises(F.FormatError, match="single-turn"):
        F.chat_to_sft(multi)
    system = F.ChatPairRecord(
        prompt=[{"role": "system", "content": "s"}, U], chosen=[{"role": "assistant", "content": "a"}],
        rejected=[{"role": "assistant", "content": "b"}],
    )
    with pytest.raises(F.FormatError, match="single-turn"):
        F.chat_to_pair(system)


def test_rm_pairs_skip_equal_texts():
    """Two equal texts ranked apart make no pair (chosen == rejected teaches nothing), as the export's pairs files."""
    rec = F.RMRecord(prompt="p", completion=["a", "b", "a"], ranking=[1, 2, 3])
    assert rec.pairs() == [(0, 1, 1), (1, 2, 1)]
    assert all(rec.completion[i] != rec.completion[j] for i, j, _ in rec.pairs())
