"""The identity of a prompt's text within a dataset."""

from __future__ import annotations

import hashlib
import re

_WS = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Whitespace-insensitive form: runs of whitespace become one space, ends trimmed."""
    return _WS.sub(" ", text).strip()


def content_hash(text: str) -> bytes:
    """sha256 of the normalised text; `prompt.content_hash` is unique per dataset."""
    return hashlib.sha256(normalize(text).encode("utf-8")).digest()
