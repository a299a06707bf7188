"""Rules every stored text (prompt, completion, edit) follows."""

from __future__ import annotations

from app.errors import InvalidInput


def check_text(text: str, max_chars: int, field: str = "text") -> None:
    """Non-blank and within `settings.max_text_chars`; the error names the field and the limit."""
    if not text.strip():
        raise InvalidInput(f"{field}: is empty", details={"field": field})
    if len(text) > max_chars:
        raise InvalidInput(
            f"{field}: has {len(text)} characters; the limit is {max_chars}", details={"field": field, "limit": max_chars}
        )
