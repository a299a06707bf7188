"""Reading exported records back: the project's own formats (trainer/formats.py is the contract,
every record is read through it) and TRL's shapes of the same data, one row at a time.

`read_rows` yields `(line, ImportRow | error)`: a row to stage, or a string saying what is wrong
with that line. It never stops at a bad line; the import decides what a bad line means. The
input is JSONL (streamed) or one JSON array (read whole, for small bodies), told apart by its
first character. The file's sha256 is computed on the way (`HashingReader`), for provenance.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from app.imports.schemas import RecordFormat
from app.prompts.hashing import content_hash
from app.text import text_problem
from trainer import formats as F


@dataclass(slots=True)
class ImportRow:
    """One record as rows to stage: its prompt, its answers and, for rankings, their ranks."""

    prompt: str
    prompt_hash: bytes
    completions: list[str]
    hashes: list[bytes]
    ranks: list[int] | None  # None: an SFT record (one answer, no ranking)


class InputError(ValueError):
    """The input as a whole cannot be read (not a line-level problem)."""


class HashingReader(io.RawIOBase):
    """A binary stream that hashes what is read through it."""

    def __init__(self, raw: IO[bytes]):
        self.raw = raw
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.sha256.update(data)
        return n


def _fields(kind: RecordFormat, obj: Any) -> tuple[str, list[str], list[int] | None, list[str]]:
    """(prompt, answers, ranks, the answers' names for messages), through trainer.formats."""
    if kind in (RecordFormat.sft, RecordFormat.sft_chat):
        rec = F.parse_record(kind.value, obj)
        sft = F.chat_to_sft(rec) if kind is RecordFormat.sft_chat else rec
        return sft.prompt, [sft.completion], None, ["completion"]
    if kind is RecordFormat.rm:
        rm = F.parse_record("rm", obj)
        return rm.prompt, list(rm.completion), list(rm.ranking), [f"completion[{i}]" for i in range(len(rm.completion))]
    pair = F.parse_pair(kind.value, obj)
    if kind is RecordFormat.pairs_chat:
        pair = F.chat_to_pair(pair)
    return pair.prompt, [pair.chosen, pair.rejected], [1, 2], ["chosen", "rejected"]


def to_row(kind: RecordFormat, obj: Any, max_chars: int) -> ImportRow | str:
    try:
        prompt, answers, ranks, names = _fields(kind, obj)
    except F.FormatError as exc:
        return exc.message
    problem = text_problem(prompt, max_chars)
    if problem:
        return f"'prompt' {problem}"
    hashes = []
    for name, text in zip(names, answers, strict=True):
        problem = text_problem(text, max_chars)
        if problem:
            return f"'{name}' {problem}"
        digest = content_hash(text)
        if digest in hashes:
            return f"'{names[hashes.index(digest)]}' and '{name}' are the same text"
        hashes.append(digest)
    return ImportRow(prompt, content_hash(prompt), answers, hashes, ranks)


def _jsonl(text: io.TextIOBase, kind: RecordFormat, max_chars: int) -> Iterator[tuple[int, ImportRow | str]]:
    for lineno, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield lineno, f"invalid JSON: {exc.msg} at column {exc.colno}"
            continue
        yield lineno, to_row(kind, obj, max_chars)


def _array(text: io.TextIOBase, kind: RecordFormat, max_chars: int) -> Iterator[tuple[int, ImportRow | str]]:
    try:
        data = json.load(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, list):
        raise InputError("expected JSONL (one record per line) or a JSON array of records")
    for i, obj in enumerate(data, start=1):
        yield i, to_row(kind, obj, max_chars)


def is_json_array(fh: IO[bytes]) -> bool:
    """Whether a seekable input is one JSON array (its first non-blank character is '[')."""
    head = fh.read(4096)
    fh.seek(0)
    return head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"[")


def read_rows(fh: HashingReader, kind: RecordFormat, max_chars: int, *, array: bool) -> Iterator[tuple[int, ImportRow | str]]:
    text = io.TextIOWrapper(io.BufferedReader(fh, 1 << 16), encoding="utf-8-sig", errors="strict", newline="")
    rows = _array(text, kind, max_chars) if array else _jsonl(text, kind, max_chars)
    lineno = 0
    try:
        for lineno, row in rows:
            yield lineno, row
    except UnicodeDecodeError:
        raise InputError(f"the input is not valid UTF-8 (after line {lineno})") from None
