"""Constrained decoding: a reply that follows the JSON schema of OpenAI's `response_format`,
every time, whatever the model (even a random one).

llguidance (Microsoft's Rust grammar engine, a 3 MB wheel with no dependencies) compiles the
schema into a grammar and gives, before each token, the set of tokens that keep the text a
prefix of a valid reply; `SchemaConstraint` is the `transformers` logits processor that masks
every other token, and, once the grammar is complete, every token but EOS. The reply is then
valid JSON for the schema unless `max_tokens` cuts it short (finish_reason "length"), which is
why callers bound their strings with `maxLength`.

Chosen over xgrammar (pulls triton, hundreds of MB), outlines-core (builds a full index over
the vocabulary per schema: slow for Gemma's 262k tokens) and lm-format-enforcer (pure Python,
per-token cost in Python); figures in docs/internals.md.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import torch

# JSON without optional whitespace: a small model cannot wander off into endless spaces
_JSON_OPTIONS = {"whitespace_flexible": False}


class SchemaError(ValueError):
    """The response_format cannot be enforced (not a JSON schema, or one llguidance refuses)."""


def schema_of(response_format: Any) -> dict | None:
    """The JSON schema a `response_format` asks for; None when it asks for none (text).

    `{"type": "json_schema", "json_schema": {"schema": {...}}}` gives its schema;
    `{"type": "json_object"}` any JSON object."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise SchemaError("'response_format' must be an object")
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise SchemaError("'response_format.json_schema.schema' must be a JSON schema object")
        return schema
    raise SchemaError(f"'response_format.type' must be text, json_object or json_schema, got {kind!r}")


class Grammars:
    """The tokenizer as llguidance sees it (built once, about a second for a large vocabulary)
    and the schemas compiled so far (a judge sends the same few again and again)."""

    def __init__(self, hf_tokenizer):
        import llguidance.hf

        self.tokenizer = llguidance.hf.from_tokenizer(hf_tokenizer)
        self.eos = hf_tokenizer.eos_token_id
        self._compiled: dict[str, str] = {}
        self._lock = threading.Lock()

    def grammar(self, schema: dict) -> str:
        import llguidance

        key = json.dumps(schema, sort_keys=True)
        with self._lock:
            if key not in self._compiled:
                try:
                    grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=_JSON_OPTIONS)
                except ValueError as exc:
                    raise SchemaError(f"the JSON schema cannot be used: {exc}") from None
                error = llguidance.LLMatcher.validate_grammar(grammar, self.tokenizer)
                if error and not error.startswith("WARNING"):
                    raise SchemaError(f"the JSON schema cannot be enforced: {error}")
                self._compiled[key] = grammar
            return self._compiled[key]

    def constraint(self, schema: dict, prompt_len: int) -> SchemaConstraint:
        return SchemaConstraint(self, self.grammar(schema), prompt_len)


class SchemaConstraint:
    """A `transformers` logits processor for one generation (batch of one): it feeds the tokens
    sampled since its last call to the matcher, then masks the tokens the grammar forbids."""

    def __init__(self, grammars: Grammars, grammar: str, prompt_len: int):
        import llguidance

        self.matcher = llguidance.LLMatcher(grammars.tokenizer, grammar, log_level=0)
        if self.matcher.is_error():
            raise SchemaError(f"the JSON schema cannot be enforced: {self.matcher.get_error()}")
        self.vocab = grammars.tokenizer.vocab_size
        self.prompt_len = prompt_len
        self.consumed = 0
        self._shifts = torch.arange(32, dtype=torch.int32)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import llguidance.numpy
        import numpy as np

        new = input_ids[0, self.prompt_len + self.consumed :].tolist()
        if new:
            self.matcher.consume_tokens(new)
            self.consumed += len(new)
        if self.matcher.is_error():  # cannot happen while this processor chose the tokens
            raise RuntimeError(f"constrained decoding left the grammar: {self.matcher.get_error()}")
        bitmask = np.zeros(llguidance.numpy.get_bitmask_shape(1, self.vocab), dtype=np.int32)
        llguidance.numpy.fill_next_token_bitmask(self.matcher, bitmask)
        words = torch.from_numpy(bitmask)
        allowed = ((words.unsqueeze(-1) >> self._shifts) & 1).bool().reshape(1, -1)[:, : scores.shape[-1]]
        if allowed.shape[-1] < scores.shape[-1]:  # the model's embedding rows past the tokenizer's vocabulary
            pad = torch.zeros(1, scores.shape[-1] - allowed.shape[-1], dtype=torch.bool)
            allowed = torch.cat([allowed, pad], dim=-1)
        return scores.masked_fill(~allowed.to(scores.device), float("-inf"))

    def complete(self) -> bool:
        """Whether the reply so far is a whole valid value (not cut short by max_tokens)."""
        return self.matcher.is_accepting()
