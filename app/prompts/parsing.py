"""Reading prompt rows from JSON arrays, JSONL and CSV, one row at a time.

Each reader yields `(line, row_or_error)`: a `ParsedRow`, or a string saying what is wrong with
that line. A reader never stops at a bad row; the import decides what a bad row means.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import ijson

from app.models import PromptSource
from app.prompts.hashing import content_hash
from app.prompts.schemas import SPLITS, ImportFormat
from app.schemas import MAX_JSON_DEPTH, too_deep

TEXT_KEYS = ("prompt", "text")
TOO_DEEP = f"the row is nested deeper than {MAX_JSON_DEPTH} levels"  # that row's error, never a crash of the import
MAX_TAGS = 64
# plain strings: this runs once per imported row, and enum attribute access is not free
IMPORTED, HUMAN = PromptSource.imported.value, PromptSource.human.value


@dataclass(slots=True)
class ParsedRow:
    text: str
    content_hash: bytes
    source: str = IMPORTED
    split: str | None = None
    tags: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


class InputError(ValueError):
    """The input as a whole cannot be read (not a row-level problem)."""


def parse_obj(obj: Any, max_chars: int) -> ParsedRow | str:
    """Validate one row given as a string or an object."""
    if isinstance(obj, str):
        obj = {"prompt": obj}
    if not isinstance(obj, dict):
        return f"a row must be an object or a string, got {type(obj).__name__}"
    keys = [k for k in TEXT_KEYS if k in obj]
    if not keys:
        return "missing 'prompt' (or 'text')"
    if len(keys) > 1:
        return "give 'prompt' or 'text', not both"
    text = obj[keys[0]]
    if not isinstance(text, str):
        return f"'{keys[0]}' must be a string, got {type(text).__name__}"
    if not text.strip():
        return f"'{keys[0]}' is empty"
    if len(text) > max_chars:
        return f"'{keys[0]}' has {len(text)} characters; the limit is {max_chars}"
    if "\x00" in text:
        return f"'{keys[0]}' contains a NUL character"

    source = obj.get("source", IMPORTED)
    if source != IMPORTED and source != HUMAN:
        return "'source' must be 'imported' or 'human' (synthetic prompts come from synth runs)"
    split = obj.get("split")
    if split in ("", None):
        split = None
    elif split not in SPLITS:
        return f"'split' must be one of {', '.join(SPLITS)}, got {split!r}"
    tags = obj.get("tags", [])
    if tags is None:
        tags = []
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.replace(";", "|").split("|") if t.strip()]
    if not isinstance(tags, list):
        return "'tags' must be a list of strings of 1..100 characters"
    if len(tags) > MAX_TAGS:
        return f"at most {MAX_TAGS} tags per prompt"
    for t in tags:
        if not isinstance(t, str) or not 0 < len(t) <= 100:
            return "'tags' must be a list of strings of 1..100 characters"
    meta = obj.get("meta", {})
    if meta is None:
        meta = {}
    if isinstance(meta, str):
        try:
            meta = json.loads(meta) if meta.strip() else {}
        except json.JSONDecodeError:
            return "'meta' is not valid JSON"
        except RecursionError:
            return TOO_DEEP
    if not isinstance(meta, dict):
        return "'meta' must be an object"
    if too_deep(meta, MAX_JSON_DEPTH - 1):
        return TOO_DEEP
    return ParsedRow(text=text, content_hash=content_hash(text), source=source, split=split, tags=tags, meta=meta)


def _text(fh: IO[bytes]) -> io.TextIOWrapper:
    return io.TextIOWrapper(fh, encoding="utf-8-sig", errors="strict", newline="")


def iter_jsonl(fh: IO[bytes], max_chars: int) -> Iterator[tuple[int, ParsedRow | str]]:
    lineno = 0
    try:
        for lineno, line in enumerate(_text(fh), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, f"invalid JSON: {exc.msg} at column {exc.colno}"
                continue
            except RecursionError:
                yield lineno, TOO_DEEP
                continue
            yield lineno, parse_obj(obj, max_chars)
    except UnicodeDecodeError:
        raise InputError(f"the input is not valid UTF-8 (after line {lineno})") from None


def iter_csv(fh: IO[bytes], max_chars: int) -> Iterator[tuple[int, ParsedRow | str]]:
    csv.field_size_limit(max(max_chars * 4, 131072))
    try:
        reader = csv.DictReader(_text(fh))
        fields = reader.fieldnames or []
        if not any(k in fields for k in TEXT_KEYS):
            raise InputError(f"the CSV header needs a 'prompt' (or 'text') column; it has {fields}")
        start = 2
        for row in reader:
            line = start
            start = reader.line_num + 1
            if None in row:
                yield line, f"{len(row[None])} more field(s) than the header has"
                continue
            if not any((v or "").strip() for v in row.values()):
                continue
            obj = {k: v for k, v in row.items() if v not in (None, "") or k in TEXT_KEYS}
            yield line, parse_obj(obj, max_chars)
    except UnicodeDecodeError:
        raise InputError("the input is not valid UTF-8") from None
    except csv.Error as exc:
        raise InputError(f"the CSV cannot be read: {exc}") from None


def _first_byte(fh: IO[bytes]) -> bytes:
    """The first byte that is not white space, with the file left at the start of the JSON (after a BOM)."""
    head = fh.read(3)
    start = 3 if head == b"\xef\xbb\xbf" else 0
    fh.seek(start)
    while True:
        chunk = fh.read(4096)
        stripped = chunk.lstrip()
        if stripped or not chunk:
            fh.seek(start)
            return stripped[:1]


def iter_json_array(fh: IO[bytes], max_chars: int) -> Iterator[tuple[int, ParsedRow | str]]:
    """Elements of a JSON array (or of {"prompts": [...]}) one at a time, as ijson reads them: the
    array is never held whole, and nesting is built without recursion (a too-deep row is that
    row's error, from `parse_obj`)."""
    first = _first_byte(fh)
    if first not in (b"[", b"{"):
        raise InputError("expected a JSON array of prompts (strings or objects), or {\"prompts\": [...]}")
    i = 0
    try:
        for i, obj in enumerate(ijson.items(fh, "item" if first == b"[" else "prompts.item", use_float=True), start=1):
            yield i, parse_obj(obj, max_chars)
    except ijson.JSONError as exc:
        reason = str(exc).splitlines()[0].strip() if str(exc) else type(exc).__name__
        raise InputError(f"invalid JSON after element {i}: {reason}") from None
    if first == b"{" and i == 0:
        raise InputError("expected a JSON array of prompts (strings or objects), or {\"prompts\": [...]}")


READERS = {ImportFormat.jsonl: iter_jsonl, ImportFormat.csv: iter_csv, ImportFormat.json: iter_json_array}


def guess_format(filename: str | None, content_type: str | None) -> ImportFormat | None:
    name = (filename or "").lower()
    for suffix, fmt in ((".jsonl", ImportFormat.jsonl), (".ndjson", ImportFormat.jsonl), (".csv", ImportFormat.csv), (".json", ImportFormat.json)):
        if name.endswith(suffix):
            return fmt
    ct = (content_type or "").split(";")[0].strip().lower()
    return {
        "application/x-ndjson": ImportFormat.jsonl,
        "application/jsonl": ImportFormat.jsonl,
        "application/x-jsonlines": ImportFormat.jsonl,
        "text/csv": ImportFormat.csv,
        "application/json": ImportFormat.json,
    }.get(ct)
