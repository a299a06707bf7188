"""The dataset formats rlhf-forge exports and the trainer reads.

This module is the one contract between ``app`` (which writes these records) and ``trainer``
(which reads them). It imports nothing heavier than the standard library, so both sides and
their tests can use it.

Formats (one JSON object per line, UTF-8):

- SFT: ``{"prompt": str, "completion": str}``
- RM:  ``{"prompt": str, "completion": [str, ...], "ranking": [int, ...]}``; ``ranking[i]`` is
  the rank of ``completion[i]``, 1 = most preferred, equal numbers are ties, K >= 2.
- RL:  ``{"prompt": str}``
- Pairs (TRL preference adapter): ``{"prompt", "chosen", "rejected"}`` with optional ``margin``.
- Chat variants (TRL conversational formats), adapters of the same data:
  SFT ``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}`` and pairs
  ``{"prompt": [user message], "chosen": [assistant message], "rejected": [assistant message]}``.

Every record may carry ``"id"`` (a stable string) and ``"meta"`` (an object). Unknown keys are
ignored by readers. Writers put the keys in the order the record's fields are declared below
(:func:`field_names`): ``to_dict`` and ``dumps`` follow it, and the service builds its export SQL
from it, so an exported line equals ``dumps`` of its record byte for byte. What a valid ranking is
(for a record, a person's ranking or a judge's reply) is :func:`validate_ranks`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

FORMAT_VERSION = 1

Kind = Literal["sft", "rm", "rl", "pairs", "sft_chat", "pairs_chat"]
PairsMode = Literal["all", "best_vs_rest"]
TieRule = Literal["any", "competition", "none"]


class FormatError(ValueError):
    """A record does not match its format. ``where`` says which file and line."""

    def __init__(self, message: str, *, where: str | None = None):
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


def _str(obj: dict, key: str) -> str:
    if key not in obj:
        raise FormatError(f"missing key {key!r}")
    value = obj[key]
    if not isinstance(value, str):
        raise FormatError(f"{key!r} must be a string, got {type(value).__name__}")
    return value


def _common(obj: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if obj.get("id") is not None:
        if not isinstance(obj["id"], (str, int)) or isinstance(obj["id"], bool):
            raise FormatError("'id' must be a string")
        out["id"] = str(obj["id"])
    if obj.get("meta") is not None:
        if not isinstance(obj["meta"], dict):
            raise FormatError("'meta' must be an object")
        out["meta"] = obj["meta"]
    return out


def _plain(value: Any) -> Any:
    # copies of lists (and of the message objects in them), so a caller may change what it gets
    return [dict(v) if isinstance(v, dict) else v for v in value] if isinstance(value, list) else value


class _Record:
    """What every record shares: its keys are its fields, in declaration order; an optional field
    (default None) is written only when set."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, optional in _spec(type(self)):
            value = getattr(self, name)
            if not (optional and value is None):
                out[name] = _plain(value)
        return out


_SPECS: dict[type, tuple[tuple[str, bool], ...]] = {}


def _spec(cls: type) -> tuple[tuple[str, bool], ...]:
    """(field name, optional) of a record class in declaration order, computed once."""
    spec = _SPECS.get(cls)
    if spec is None:
        spec = _SPECS[cls] = tuple((f.name, f.default is None) for f in fields(cls))
    return spec


@dataclass(frozen=True, slots=True)
class SFTRecord(_Record):
    kind: ClassVar[str] = "sft"
    prompt: str
    completion: str
    id: str | None = None
    meta: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, obj: dict) -> SFTRecord:
        return cls(prompt=_str(obj, "prompt"), completion=_str(obj, "completion"), **_common(obj))


@dataclass(frozen=True, slots=True)
class RMRecord(_Record):
    kind: ClassVar[str] = "rm"
    prompt: str
    completion: list[str]
    ranking: list[int]
    id: str | None = None
    meta: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        validate_ranking(self.ranking, len(self.completion))

    @classmethod
    def from_dict(cls, obj: dict) -> RMRecord:
        prompt = _str(obj, "prompt")
        completion = obj.get("completion")
        if not isinstance(completion, list) or not all(isinstance(c, str) for c in completion):
            raise FormatError("'completion' must be a list of strings")
        ranking = obj.get("ranking")
        if not isinstance(ranking, list) or not all(
            isinstance(r, int) and not isinstance(r, bool) for r in ranking
        ):
            raise FormatError("'ranking' must be a list of integers")
        return cls(prompt=prompt, completion=completion, ranking=ranking, **_common(obj))

    def pairs(self) -> list[tuple[int, int, int]]:
        """Every (better, worse, rank_gap) index pair of the ranking; ties are skipped, and so are two
        equal texts (chosen == rejected teaches nothing), as the export's pairs files do."""
        return [(i, j, gap) for i, j, gap in ranking_pairs(self.ranking) if self.completion[i] != self.completion[j]]


@dataclass(frozen=True, slots=True)
class RLRecord(_Record):
    kind: ClassVar[str] = "rl"
    prompt: str
    id: str | None = None
    meta: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, obj: dict) -> RLRecord:
        return cls(prompt=_str(obj, "prompt"), **_common(obj))


@dataclass(frozen=True, slots=True)
class PairRecord(_Record):
    kind: ClassVar[str] = "pairs"
    prompt: str
    chosen: str
    rejected: str
    margin: float | None = None
    id: str | None = None
    meta: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, obj: dict) -> PairRecord:
        margin = obj.get("margin")
        if margin is not None and (not isinstance(margin, (int, float)) or isinstance(margin, bool)):
            raise FormatError("'margin' must be a number")
        return cls(
            prompt=_str(obj, "prompt"),
            chosen=_str(obj, "chosen"),
            rejected=_str(obj, "rejected"),
            margin=None if margin is None else float(margin),
            **_common(obj),
        )


Record = SFTRecord | RMRecord | RLRecord | PairRecord
R = TypeVar("R", SFTRecord, RMRecord, RLRecord, PairRecord)

RECORD_TYPES: dict[str, type] = {
    "sft": SFTRecord,
    "rm": RMRecord,
    "rl": RLRecord,
    "pairs": PairRecord,
}  # the chat variants are added below, after their classes


def field_names(kind: str) -> tuple[str, ...]:
    """The keys of a ``kind`` record, in the order every writer puts them."""
    return tuple(name for name, _ in _spec(RECORD_TYPES[kind]))


def required_fields(kind: str) -> tuple[str, ...]:
    """The keys every ``kind`` record has (the others are optional)."""
    return tuple(name for name, optional in _spec(RECORD_TYPES[kind]) if not optional)


def validate_ranks(ranks: Sequence[int], k: int, *, ties: TieRule = "any") -> None:
    """The rule every ranking of ``k`` items follows, whoever made it (an RM record, a person, the
    judge): one rank per item, each in 1..k, and some item ranked 1 (the best).

    Ties are equal numbers. ``ties="any"`` accepts both dense (1, 1, 2) and competition (1, 1, 3)
    numbering: what matters is the order, and that rank 1 exists (an export renumbers densely the
    ranks of a ranking some completions were filtered out of). ``"competition"`` asks for
    standard competition numbering (rank = 1 + the number of items ranked better), ``"none"``
    for a permutation of 1..k.
    """
    if len(ranks) != k:
        raise FormatError(f"{len(ranks)} ranks for {k} items")
    if any(r < 1 or r > k for r in ranks):
        raise FormatError(f"each rank must be between 1 and {k}, got {list(ranks)}")
    if ties == "none" and sorted(ranks) != list(range(1, k + 1)):
        raise FormatError(f"ranks {list(ranks)} are not a permutation of 1..{k} (ties are not allowed)")
    if ties == "competition" and any(r != 1 + sum(1 for x in ranks if x < r) for r in ranks):
        raise FormatError(f"ranks {list(ranks)} are not a valid ranking with ties (1 + the number ranked better)")
    if 1 not in ranks:
        raise FormatError(f"some item must be ranked 1 (the best), got {list(ranks)}")


def validate_ranking(ranking: list[int], k: int) -> None:
    """Check that an RM record's ``ranking`` ranks its ``k`` completions: K >= 2 (one completion
    teaches no preference), then :func:`validate_ranks`."""
    if k < 2:
        raise FormatError(f"an RM record needs at least 2 completions, got {k}")
    if len(ranking) != k:
        raise FormatError(f"'ranking' has {len(ranking)} entries but 'completion' has {k}")
    validate_ranks(ranking, k)


def ranking_pairs(ranking: list[int]) -> list[tuple[int, int, int]]:
    """All C(K,2) index pairs of a ranking as (better, worse, gap), ties skipped."""
    out = []
    for i, j in itertools.combinations(range(len(ranking)), 2):
        if ranking[i] == ranking[j]:
            continue
        better, worse = (i, j) if ranking[i] < ranking[j] else (j, i)
        out.append((better, worse, abs(ranking[i] - ranking[j])))
    return out


def best_vs_rest_pairs(ranking: list[int]) -> list[tuple[int, int, int]]:
    """The pairs of :func:`ranking_pairs` whose better side is ranked best (rank 1)."""
    top = min(ranking)
    return [p for p in ranking_pairs(ranking) if ranking[p[0]] == top]


# --- adapters: other trainers' shapes of the same data ----------------------------------------

Message = dict[str, str]
ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = ("role", "content")  # a message's keys, in the order writers put them


def _messages(obj: dict, key: str) -> list[Message]:
    value = obj.get(key)
    if not isinstance(value, list) or not value:
        raise FormatError(f"{key!r} must be a non-empty list of messages")
    for i, msg in enumerate(value):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str) or not isinstance(msg.get("content"), str):
            raise FormatError(f"{key}[{i}] must be an object with string 'role' and 'content'")
        if msg["role"] not in ROLES:
            raise FormatError(f"{key}[{i}].role must be one of {list(ROLES)}, got {msg['role']!r}")
    return [{key: m[key] for key in MESSAGE_KEYS} for m in value]


def _margin(obj: dict) -> float | None:
    margin = obj.get("margin")
    if margin is not None and (not isinstance(margin, (int, float)) or isinstance(margin, bool)):
        raise FormatError("'margin' must be a number")
    return None if margin is None else float(margin)


@dataclass(frozen=True, slots=True)
class ChatSFTRecord(_Record):
    """TRL's conversational language-modeling shape of an SFT record."""

    kind: ClassVar[str] = "sft_chat"
    messages: list[Message]
    id: str | None = None
    meta: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, obj: dict) -> ChatSFTRecord:
        messages = _messages(obj, "messages")
        if messages[-1]["role"] != "assistant":
            raise FormatError("the last message must be the assistant's (the completion)")
        return cls(messages=messages, **_common(obj))


@dataclass(frozen=True, slots=True)
class ChatPairRecord(_Record):
    """TRL's conversational preference shape (explicit prompt) of a pair."""

    kind: ClassVar[str] = "pairs_chat"
    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]
    margin: float | None = None
    id: str | None = None
    meta: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, obj: dict) -> ChatPairRecord:
        return cls(
            prompt=_messages(obj, "prompt"),
            chosen=_messages(obj, "chosen"),
            rejected=_messages(obj, "rejected"),
            margin=_margin(obj),
            **_common(obj),
        )


RECORD_TYPES["sft_chat"] = ChatSFTRecord
RECORD_TYPES["pairs_chat"] = ChatPairRecord
AnyRecord = Record | ChatSFTRecord | ChatPairRecord


def rm_to_pairs(rec: RMRecord, *, mode: PairsMode = "all", margin: bool = False) -> list[PairRecord]:
    """The preference pairs of an RM record: every pair of its ranking with ties skipped (C(K,2)
    minus the tied pairs), or only the best against each of the rest. ``margin`` is the rank gap.
    Pair ids are ``"{id}-{chosen index}-{rejected index}"``."""
    if mode not in ("all", "best_vs_rest"):
        raise ValueError(f"unknown pairs mode {mode!r}")
    index_pairs = ranking_pairs(rec.ranking) if mode == "all" else best_vs_rest_pairs(rec.ranking)
    return [
        PairRecord(
            prompt=rec.prompt,
            chosen=rec.completion[b],
            rejected=rec.completion[w],
            margin=float(gap) if margin else None,
            id=None if rec.id is None else f"{rec.id}-{b}-{w}",
        )
        for b, w, gap in index_pairs
    ]


def sft_to_chat(rec: SFTRecord) -> ChatSFTRecord:
    messages = [{"role": "user", "content": rec.prompt}, {"role": "assistant", "content": rec.completion}]
    return ChatSFTRecord(messages=messages, id=rec.id, meta=rec.meta)


def pair_to_chat(rec: PairRecord) -> ChatPairRecord:
    return ChatPairRecord(
        prompt=[{"role": "user", "content": rec.prompt}],
        chosen=[{"role": "assistant", "content": rec.chosen}],
        rejected=[{"role": "assistant", "content": rec.rejected}],
        margin=rec.margin,
        id=rec.id,
        meta=rec.meta,
    )


def parse_record(kind: str, obj: Any) -> AnyRecord:
    if kind not in RECORD_TYPES:
        raise FormatError(f"unknown format {kind!r}; expected one of {sorted(RECORD_TYPES)}")
    if not isinstance(obj, dict):
        raise FormatError(f"a record must be a JSON object, got {type(obj).__name__}")
    return RECORD_TYPES[kind].from_dict(obj)


# --- reading the adapters back (imports): their inverses and TRL's implicit prompt ------------


def extract_prompt(chosen: Sequence, rejected: Sequence) -> tuple[Sequence, Sequence, Sequence]:
    """TRL's ``extract_prompt`` for a preference pair whose prompt is implicit: the prompt is the
    longest shared prefix of ``chosen`` and ``rejected`` (characters of strings, messages of
    conversations), and a space just before the point where they part goes with the answers.
    Returns ``(prompt, chosen, rejected)``."""
    n = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        n += 1
    if isinstance(chosen, str) and 0 < n < min(len(chosen), len(rejected)) and chosen[n - 1] == " ":
        n -= 1
    return chosen[:n], chosen[n:], rejected[n:]


def parse_pair(kind: str, obj: Any) -> PairRecord | ChatPairRecord:
    """A ``pairs`` / ``pairs_chat`` record, with an explicit ``prompt`` or (TRL's implicit-prompt
    shape) without one: then the prompt is what ``chosen`` and ``rejected`` share."""
    if isinstance(obj, dict) and "prompt" not in obj and "chosen" in obj and "rejected" in obj:
        shape, what = (list, "lists of messages") if kind == "pairs_chat" else (str, "strings")
        chosen, rejected = obj["chosen"], obj["rejected"]
        if not (isinstance(chosen, shape) and isinstance(rejected, shape)):
            raise FormatError(f"without 'prompt', 'chosen' and 'rejected' must both be {what} that start with the prompt")
        prompt, chosen, rejected = extract_prompt(chosen, rejected)
        if not prompt:
            raise FormatError("without 'prompt', 'chosen' and 'rejected' must start with the same prompt")
        obj = {**obj, "prompt": prompt, "chosen": chosen, "rejected": rejected}
    return parse_record(kind, obj)


def _single(messages: list[Message], role: str, key: str) -> str:
    if len(messages) != 1 or messages[0]["role"] != role:
        got = [m["role"] for m in messages]
        raise FormatError(f"{key!r} must be one {role} message (single-turn), got roles {got}")
    return messages[0]["content"]


def chat_to_sft(rec: ChatSFTRecord) -> SFTRecord:
    """The inverse of :func:`sft_to_chat`: one user message, then the assistant's answer."""
    roles = [m["role"] for m in rec.messages]
    if roles != ["user", "assistant"]:
        raise FormatError(f"'messages' must be one user message and the assistant's answer (single-turn), got roles {roles}")
    return SFTRecord(prompt=rec.messages[0]["content"], completion=rec.messages[1]["content"], id=rec.id, meta=rec.meta)


def chat_to_pair(rec: ChatPairRecord) -> PairRecord:
    """The inverse of :func:`pair_to_chat`: a single-turn prompt and one answer on each side."""
    return PairRecord(
        prompt=_single(rec.prompt, "user", "prompt"),
        chosen=_single(rec.chosen, "assistant", "chosen"),
        rejected=_single(rec.rejected, "assistant", "rejected"),
        margin=rec.margin,
        id=rec.id,
        meta=rec.meta,
    )


def dumps(record: AnyRecord) -> str:
    """One JSONL line (without the newline), UTF-8 text kept as is."""
    return json.dumps(record.to_dict(), ensure_ascii=False, separators=(",", ":"))


def iter_jsonl(path: str | Path, kind: str) -> Iterator[AnyRecord]:
    """Yield validated records from a JSONL file; a bad line raises FormatError with file:line."""
    path = Path(path)
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FormatError(f"invalid JSON ({exc.msg} at column {exc.colno})", where=where) from None
            try:
                yield parse_record(kind, obj)
            except FormatError as exc:
                raise FormatError(exc.message, where=where) from None


def read_jsonl(path: str | Path, kind: str) -> list[AnyRecord]:
    return list(iter_jsonl(path, kind))


def write_jsonl(path: str | Path, records: Iterable[AnyRecord]) -> int:
    n = 0
    with Path(path).open("w", encoding="utf-8", newline="\n") as fh:
        for rec in records:
            fh.write(dumps(rec))
            fh.write("\n")
            n += 1
    return n


@dataclass(frozen=True, slots=True)
class Manifest:
    """The manifest written beside an export (``manifest.json``)."""

    format_version: int
    dataset: str
    dataset_version: int
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {kind, rows, sha256, ...}
    filters: dict[str, Any] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    dataset_id: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # formats, pairs mode, margin
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> split -> rows

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in obj.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2, sort_keys=True) + "\n"

    def verify(self, directory: str | Path) -> list[str]:
        """Names of the files under ``directory`` whose sha256 differs from the manifest's
        (or that are missing); empty when every file matches."""
        bad = []
        for name, info in sorted(self.files.items()):
            path = Path(directory) / name
            if not path.is_file() or sha256_file(path) != info.get("sha256"):
                bad.append(name)
        return bad


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
