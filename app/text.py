"""Rules every stored text (prompt, completion, edit) follows."""

from __future__ import annotations

from app.errors import InvalidInput


def text_problem(text: str, max_chars: int) -> str | None:
    """What is wrong with a text to store ("is empty", ...), or None. For row-level reports."""
    if not text.strip():
        return "is empty"
    if len(text) > max_chars:
        return f"has {len(text)} characters; the limit is {max_chars}"
    if "\x00" in text:
        return "contains a NUL character"
    return None


def check_text(text: str, max_chars: int, field: str = "text") -> None:
    """Non-blank and within `settings.max_text_chars`; the error names the field and the limit."""
    if not text.strip():
        raise InvalidInput(f"{field}: is empty", details={"field": field})
    if len(text) > max_chars:
        raise InvalidInput(
            f"{field}: has {len(text)} characters; the limit is {max_chars}", details={"field": field, "limit": max_chars}
        )
