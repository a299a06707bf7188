"""From exported records to token batches.

Small pure functions over one record (TRL's ``data_utils`` habit) and small collators. The text
of a prompt is the tokenizer's chat template when it has one, else ``prompt_format``; the
completion follows it and ends with EOS. Data order is a pure function of (seed, epoch), so a
resumed run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.formats import RLRecord, RMRecord, SFTRecord, read_jsonl
from trainer.losses import IGNORE_INDEX, ranking_pair_index

# ---------------------------------------------------------------- text and tokens


def prompt_text(tokenizer, prompt: str, prompt_format: str = "{prompt}\n") -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt_format.replace("{prompt}", prompt)


def encode_prompt(tokenizer, prompt: str, prompt_format: str = "{prompt}\n") -> list[int]:
    # A chat template writes its own BOS; a plain prompt gets the tokenizer's special tokens.
    has_template = bool(getattr(tokenizer, "chat_template", None))
    text = prompt_text(tokenizer, prompt, prompt_format)
    return tokenizer(text, add_special_tokens=not has_template)["input_ids"]


def encode_completion(tokenizer, completion: str) -> list[int]:
    return tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def join(prompt_ids: list[int], completion_ids: list[int], max_length: int) -> tuple[list[int], int]:
    """Prompt + completion cut to ``max_length``; returns (ids, prompt length).

    A prompt longer than half the budget loses its beginning (the end of a prompt is what the
    answer follows); the completion then loses its end.
    """
    if len(prompt_ids) + len(completion_ids) > max_length and len(prompt_ids) > max_length // 2:
        keep = max(max_length // 2, max_length - len(completion_ids))
        prompt_ids = prompt_ids[-keep:]
    ids = (prompt_ids + completion_ids)[:max_length]
    return ids, len(prompt_ids)


def encode_sft(tokenizer, rec: SFTRecord, max_length: int, prompt_format: str = "{prompt}\n") -> dict:
    ids, n_prompt = join(
        encode_prompt(tokenizer, rec.prompt, prompt_format), encode_completion(tokenizer, rec.completion), max_length
    )
    labels = [IGNORE_INDEX] * n_prompt + ids[n_prompt:]
    return {"input_ids": ids, "labels": labels}


def encode_rm(tokenizer, rec: RMRecord, max_length: int, prompt_format: str = "{prompt}\n") -> dict:
    prompt_ids = encode_prompt(tokenizer, rec.prompt, prompt_format)
    seqs = [join(prompt_ids, encode_completion(tokenizer, c), max_length)[0] for c in rec.completion]
    return {"input_ids": seqs, "ranking": list(rec.ranking)}


def encode_scored(tokenizer, prompts: Sequence[str], completions: Sequence[str], max_length: int, prompt_format: str):
    """Right-padded (input_ids, attention_mask) of prompt + completion + EOS, as the RM saw them."""
    seqs = [
        join(encode_prompt(tokenizer, p, prompt_format), encode_completion(tokenizer, c), max_length)[0]
        for p, c in zip(prompts, completions)
    ]
    return pad(seqs, tokenizer.pad_token_id)


def pad(seqs: Sequence[Sequence[int]], value: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), value, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if left:
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
        else:
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
    return ids, mask


# ---------------------------------------------------------------- collators


@dataclass
class SFTCollator:
    """Right-pads ``input_ids``; labels are IGNORE_INDEX on prompt and padding."""

    pad_token_id: int

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        ids, mask = pad([e["input_ids"] for e in examples], self.pad_token_id)
        labels, _ = pad([e["labels"] for e in examples], IGNORE_INDEX)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pack(seqs: Sequence[Sequence[int]]) -> dict[str, torch.Tensor | int]:
    """A padding-free batch: ``seqs`` concatenated into one row, no pad token to compute.

    ``position_ids`` restart at 0 with each sequence and ``cu_seq_lens_q/k`` mark where each
    starts (the flash-attention varlen convention), so attention stays inside a sequence.
    """
    starts = [0]
    for s in seqs:
        starts.append(starts[-1] + len(s))
    cu = torch.tensor(starts, dtype=torch.int32)
    longest = max(len(s) for s in seqs)
    return {
        "input_ids": torch.tensor([[t for s in seqs for t in s]], dtype=torch.long),
        "position_ids": torch.tensor([[i for s in seqs for i in range(len(s))]], dtype=torch.long),
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": longest,
        "max_length_k": longest,
    }


def common_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all ``seqs`` share, leaving each at least its last token."""
    limit = min(len(s) for s in seqs) - 1
    n = 0
    while n < limit and all(s[n] == seqs[0][n] for s in seqs):
        n += 1
    return n


def pack_shared(groups: Sequence[Sequence[Sequence[int]]]) -> dict:
    """A padding-free RM batch in which each prompt's K sequences share their common prefix.

    Each group (one prompt's K sequences: the prompt, then a completion) becomes the prefix once,
    then the K suffixes, in one row. Under causal attention a token's hidden state depends only on
    the tokens before it, so the prefix's states are the same in all K sequences: computing them
    once and letting each suffix attend to [prefix; itself] gives each sequence's exact states
    (and, autograd summing the K suffixes' gradients into the shared prefix, exact gradients) for
    K-1 fewer copies of the prompt. ``position_ids`` go on from the prefix in each suffix;
    ``prefix_groups`` lists ``(prefix start, prefix end, ((suffix start, suffix end), ...))`` for
    ``trainer.models.varlen_sdpa_forward``; ``last`` indexes each sequence's last token.
    """
    ids: list[int] = []
    positions: list[int] = []
    last: list[int] = []
    layout = []
    for seqs in groups:
        n = common_prefix_length(seqs)
        start = len(ids)
        ids += seqs[0][:n]
        positions += range(n)
        suffixes = []
        for s in seqs:
            suffixes.append((len(ids), len(ids) + len(s) - n))
            ids += s[n:]
            positions += range(n, len(s))
            last.append(len(ids) - 1)
        layout.append((start, start + n, tuple(suffixes)))
    return {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "position_ids": torch.tensor([positions], dtype=torch.long),
        "prefix_groups": tuple(layout),
        "last": torch.tensor(last, dtype=torch.long),
    }


@dataclass
class PackedSFTCollator:
    """A padding-free SFT batch (``pack``). The first label of each sequence is IGNORE_INDEX, so
    no sequence's last token is trained to predict the next one's first: the targets are exactly
    those of ``SFTCollator``'s padded batch."""

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor | int]:
        labels: list[int] = []
        for e in examples:
            labels += [IGNORE_INDEX] + list(e["labels"][1:])
        return {**pack([e["input_ids"] for e in examples]), "labels": torch.tensor([labels], dtype=torch.long)}


@dataclass
class RMCollator:
    """Keeps each prompt's K completions together: one [sum K, T] batch plus pair indices.

    ``better``/``worse``/``gap``/``group`` list every non-tied pair of every ranking, indexing
    the flat batch; ``n_completions`` is each prompt's K. The model runs K forwards per prompt
    and the loss reads all C(K,2) pairs from those K rewards. ``padding_free`` packs the
    completions into one row (``pack``) instead of padding them to the longest.
    """

    pad_token_id: int
    padding_free: bool = False  # one row, no pads (``pack``); ``last`` indexes each sequence's last token
    share_prefix: bool = False  # padding-free, each prompt's K sequences share their common prefix (``pack_shared``)

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        seqs = [s for e in examples for s in e["input_ids"]]
        if self.padding_free and self.share_prefix:
            inputs = pack_shared([e["input_ids"] for e in examples])
        elif self.padding_free:
            inputs = pack(seqs)
            inputs["last"] = inputs["cu_seq_lens_q"][1:].long() - 1
        else:
            ids, mask = pad(seqs, self.pad_token_id)
            inputs = {"input_ids": ids, "attention_mask": mask}
        better, worse, gap, group, sizes = ranking_pair_index([e["ranking"] for e in examples])
        return {
            **inputs,
            "better": torch.tensor(better, dtype=torch.long),
            "worse": torch.tensor(worse, dtype=torch.long),
            "gap": torch.tensor(gap, dtype=torch.long),
            "group": torch.tensor(group, dtype=torch.long),
            "n_completions": torch.tensor(sizes, dtype=torch.long),
        }


@dataclass
class PromptCollator:
    """Left-pads prompt ids for generation; keeps the prompt text for the reward function."""

    pad_token_id: int

    def __call__(self, examples: Sequence[dict]) -> dict:
        ids, mask = pad([e["input_ids"] for e in examples], self.pad_token_id, left=True)
        return {"input_ids": ids, "attention_mask": mask, "prompt": [e["prompt"] for e in examples]}


# ---------------------------------------------------------------- loading, splitting, order


def load_records(path: str | Path, kind: str) -> list:
    records = read_jsonl(path, kind)
    if not records:
        raise ValueError(f"{path}: no records")
    return records


def validation_file(data: str | Path) -> Path | None:
    """The export's own validation file beside ``data``, when ``data`` is an export's training file
    and it is there: ``sft.validation.jsonl`` beside ``sft.train.jsonl``."""
    path = Path(data)
    if not path.name.endswith(".train.jsonl"):
        return None
    beside = path.with_name(path.name.removesuffix(".train.jsonl") + ".validation.jsonl")
    return beside if beside.is_file() else None


def train_and_validation(data: str | Path, kind: str, val_fraction: float, seed: int) -> tuple[list, list]:
    """(training, validation) records. The export's own validation file when it sits beside
    ``data``: the export already split by prompt with its seed (recorded in its manifest), so
    splitting the training file again would only hold out training prompts. Otherwise a seeded
    ``val_fraction`` split of ``data``."""
    records = load_records(data, kind)
    beside = validation_file(data)
    if beside is not None:
        return records, read_jsonl(beside, kind)
    train_idx, val_idx = split(len(records), val_fraction, seed)
    return [records[i] for i in train_idx], [records[i] for i in val_idx]


def split(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, validation) index split; validation gets at least one record if asked."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = 0 if val_fraction <= 0 or n < 2 else max(1, round(n * val_fraction))
    return sorted(order[n_val:]), sorted(order[:n_val])


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, n // batch_size)


def epoch_batches(
    n: int, batch_size: int, seed: int, epoch: int, lengths: Sequence[int] | None = None
) -> list[list[int]]:
    """The batches of one epoch as positions in 0..n-1, a pure function of (seed, epoch).

    With ``lengths``, records are sorted by length inside chunks of 32 batches before
    batching (less padding), and the batches are shuffled again.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(n))
    rng.shuffle(order)
    size = min(batch_size, n)
    if lengths is not None:
        chunk = size * 32
        order = [i for c in range(0, n, chunk) for i in sorted(order[c : c + chunk], key=lambda i: lengths[i])]
    batches = [order[i : i + size] for i in range(0, steps_per_epoch(n, batch_size) * size, size)]
    if lengths is not None:
        rng.shuffle(batches)
    return batches


def batch_for_step(
    step: int, n: int, batch_size: int, seed: int, lengths: Sequence[int] | None = None
) -> list[int]:
    spe = steps_per_epoch(n, batch_size)
    return epoch_batches(n, batch_size, seed, step // spe, lengths)[step % spe]


def shard(items: list, rank: int, world: int) -> list:
    """This process's share of a global batch."""
    return items[rank::world]


def micro_batches(items: list, n: int) -> list[list]:
    n = max(1, min(n, len(items)))
    size = -(-len(items) // n)
    return [items[i : i + size] for i in range(0, len(items), size)]


# ---------------------------------------------------------------- provenance


def find_manifest(data: str | Path, manifest: str = "") -> Path | None:
    """``--manifest`` if given, else ``manifest.json`` beside the data file, else None."""
    if manifest:
        p = Path(manifest)
        if not p.exists():
            raise FileNotFoundError(f"manifest {manifest} not found")
        return p
    p = Path(data).parent / "manifest.json"
    return p if p.exists() else None


def encode_rl(tokenizer, rec: RLRecord, max_length: int, prompt_format: str = "{prompt}\n") -> dict:
    ids = encode_prompt(tokenizer, rec.prompt, prompt_format)[-max_length:]
    return {"input_ids": ids, "prompt": rec.prompt}
