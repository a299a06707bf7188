"""One config dataclass per method. Each field's ``metadata["help"]`` is its CLI help text.

The dataclasses double as the command-line options of ``trainer.cli`` (TRL's habit) and are
saved as JSON with every checkpoint, so a run can be read back and resumed exactly.
No torch import here: the CLI builds its options from this module without loading torch.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def opt(default: Any, help: str, *, cli: bool = True) -> Any:
    """A config field with its help; `cli=False` keeps it off the command line (a method that ignores it)."""
    return field(default=default, metadata={"help": help, "cli": cli})


PADDING_FREE_HELP = (
    "Train on padding-free batches: a batch's sequences concatenated into one row (position ids "
    "restart per sequence, attention stays inside each), so no pad token is computed."
)


@dataclass
class TrainConfig:
    """Options every method shares."""

    data: str = opt("", "JSONL export to train on (SFT, RM or RL format, per the command).")
    model: str = opt(
        "tiny",
        "A local Hugging Face folder, a .gguf file (converted once and cached as safetensors), "
        "or 'tiny' for a small random model built in code.",
    )
    out: str = opt("runs/out", "Output folder: final model, checkpoints/, metrics.jsonl, curves.png.")
    manifest: str = opt("", "Export manifest to record (its sha256) in checkpoints; default: manifest.json beside --data.")
    seed: int = opt(0, "Random seed (data order, initialisation of new heads, sampling).")
    lr: float = opt(1e-4, "Peak learning rate (AdamW).")
    min_lr_ratio: float = opt(0.1, "Final learning rate as a fraction of --lr (cosine decay).")
    warmup_steps: int = opt(0, "Linear warm-up steps.")
    weight_decay: float = opt(0.0, "AdamW weight decay.")
    max_grad_norm: float = opt(1.0, "Clip the gradient norm to this value (0: no clipping).")
    batch_size: int = opt(8, "Examples per optimizer step (across all processes).")
    grad_accum: int = opt(1, "Split each batch into this many micro-batches (gradient accumulation).")
    epochs: int = opt(1, "Passes over the training data (ignored when --max-steps > 0).")
    max_steps: int = opt(0, "Optimizer steps to run; 0 means --epochs passes.")
    max_length: int = opt(512, "Truncate token sequences to this length.")
    val_fraction: float = opt(
        0.05, "Fraction of records held out for validation, unless the export's *.validation.jsonl sits beside --data."
    )
    eval_every: int = opt(50, "Evaluate on the validation split every N steps (and at the end).")
    log_every: int = opt(1, "Write a metrics line every N steps.")
    save_every: int = opt(0, "Write a resumable checkpoint every N steps (0: only at the end).")
    keep_checkpoints: int = opt(2, "How many step checkpoints to keep in OUT/checkpoints.")
    mixed_precision: str = opt("no", "accelerate mixed precision: no, bf16 or fp16.")
    lora: bool = opt(False, "Train LoRA adapters (peft) instead of all weights; merged on save.")
    lora_r: int = opt(8, "LoRA rank.")
    lora_alpha: int = opt(16, "LoRA alpha.")
    lora_dropout: float = opt(0.0, "LoRA dropout.")
    lora_targets: str = opt("all-linear", "Comma-separated module names for LoRA, or all-linear.")
    prompt_format: str = opt(
        "{prompt}\n", "Prompt text when the tokenizer has no chat template; {prompt} is replaced."
    )

    method: str = field(default="", init=False, metadata={"help": "", "cli": False})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        return cls(**{k: v for k, v in obj.items() if k in names})

    def total_steps(self, steps_per_epoch: int) -> int:
        return self.max_steps if self.max_steps > 0 else max(1, self.epochs * steps_per_epoch)


@dataclass
class SFTConfig(TrainConfig):
    """Supervised fine-tuning: cross-entropy on completion tokens only."""

    lr: float = opt(1e-4, "Peak learning rate (AdamW).")
    group_by_length: bool = opt(True, "Batch records of similar length together (less padding).")
    padding_free: bool = opt(True, PADDING_FREE_HELP)

    def __post_init__(self) -> None:
        self.method = "sft"


@dataclass
class RMConfig(TrainConfig):
    """Reward model on K-wise rankings: every C(K,2) pair of a prompt in one batch element."""

    batch_size: int = opt(8, "Prompts per optimizer step (each with its K completions).")
    lr: float = opt(5e-5, "Peak learning rate (AdamW).")
    margin_scale: float = opt(
        0.0, "Margin per rank of gap: a pair two ranks apart must differ by 2x this (0: no margin)."
    )
    padding_free: bool = opt(True, PADDING_FREE_HELP)
    val_fraction: float = opt(
        0.1, "Fraction of prompts held out for validation, unless the export's *.validation.jsonl sits beside --data."
    )

    def __post_init__(self) -> None:
        self.method = "rm"


@dataclass
class PPOConfig(TrainConfig):
    """PPO against a reward model, with a frozen reference (the SFT model) and a KL penalty."""

    reward_model: str = opt("", "Reward-model folder written by `trainer rm`.")
    value_model: str = opt(
        "", "Folder to initialise the value model from (default: --reward-model, as InstructGPT did)."
    )
    lr: float = opt(1e-5, "Peak learning rate (AdamW) for policy and value model.")
    min_lr_ratio: float = opt(1.0, "Final learning rate as a fraction of --lr (1: constant).")
    max_steps: int = opt(20, "PPO iterations (one rollout batch each); 0 means --epochs passes.")
    batch_size: int = opt(8, "Prompts per rollout batch.")
    mini_batch_size: int = opt(4, "Rollouts per PPO optimizer step.")
    ppo_epochs: int = opt(4, "Optimisation passes over each rollout batch.")
    max_new_tokens: int = opt(32, "Longest completion to sample.")
    temperature: float = opt(1.0, "Sampling temperature.")
    top_k: int = opt(0, "Sample among the k most likely tokens (0: all).")
    kl_coef: float = opt(0.05, "Initial KL penalty coefficient (beta).")
    kl_estimator: str = opt("k1", "Per-token KL estimator: k1 (log-ratio) or k3 (non-negative).")
    adaptive_kl: bool = opt(True, "Adapt beta towards --kl-target (Ziegler et al.); off: fixed beta.")
    kl_target: float = opt(6.0, "Target KL per completion (nats) for the adaptive controller.")
    kl_horizon: int = opt(10000, "Horizon of the adaptive KL controller, in rollouts.")
    gamma: float = opt(1.0, "Discount factor.")
    lam: float = opt(0.95, "GAE lambda.")
    clip_range: float = opt(0.2, "PPO ratio clip range.")
    clip_range_value: float = opt(0.2, "Value clip range.")
    vf_coef: float = opt(0.1, "Weight of the value loss.")
    whiten_advantages: bool = opt(True, "Normalise advantages per rollout batch.")
    score_clip: float = opt(0.0, "Clip reward-model scores to [-x, x] (0: no clipping).")
    eval_every: int = opt(0, "Unused by PPO: every step logs its rollout statistics.", cli=False)
    val_fraction: float = opt(0.0, "Unused by PPO.", cli=False)
    samples_every: int = opt(5, "Write sample completions to samples.jsonl every N steps.")

    def __post_init__(self) -> None:
        self.method = "ppo"


CONFIGS: dict[str, type[TrainConfig]] = {"sft": SFTConfig, "rm": RMConfig, "ppo": PPOConfig}
