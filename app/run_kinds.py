"""The run kinds: the registry the run engine (`app/runs/`) is handed, so it never imports a kind.

A new kind is one folder (`schemas.py` with its request model, `repository.py` with its SQL,
`handler.py` with a `Handler`) plus one line here (and its name in `models.RunKind`)."""

from __future__ import annotations

from app.generation.handler import GenerateHandler
from app.judging.handler import JudgeHandler
from app.runs.protocol import Kinds
from app.synth.handler import SynthHandler

KINDS = Kinds(
    GenerateHandler(),
    JudgeHandler(),
    SynthHandler(),
)

RunCreate = KINDS.run_create()
"""The body of POST /datasets/{id}/runs: any registered kind's request, told apart by `kind`."""
