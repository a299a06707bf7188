"""`rlhf-forge train ...`: the trainer's own command line (`rlhf-forge-train`, `python -m trainer`),
run in its place with the same arguments, so that app never imports the trainer."""

from __future__ import annotations

import importlib.util
import os
import sys

import typer

from app.cli.common import fail

cli = typer.Typer()


@cli.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def train(ctx: typer.Context) -> None:
    """Train on exported data: sft | rm | ppo, or serve a model (needs the 'train' extra; same as rlhf-forge-train)."""
    if importlib.util.find_spec("trainer") is None:
        fail("the trainer is not installed: pip install 'rlhf-forge[train]'")
    sys.stdout.flush()
    sys.stderr.flush()
    # exec, not a child process: Ctrl-C, the exit code and the terminal all belong to the trainer
    os.execv(sys.executable, [sys.executable, "-m", "trainer", *ctx.args])
