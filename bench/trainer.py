"""Throughput of our SFT and K-wise RM loops against TRL's SFTTrainer and RewardTrainer.

Same tiny model (a Llama built in code, saved once to a folder both sides load), same data,
same machine, same run, same batch and precision (fp32, no gradient checkpointing: TRL 1.x
turns on bf16 autocast and checkpointing by default, ours uses neither); defaults otherwise:

- SFT: real (non-pad) tokens per second over one pass of the same prompt/completion records;
- RM: preference pairs per second. Ours reads each K=4 ranking as one batch element (K forwards
  give all C(K,2) = 6 pairs); TRL's RewardTrainer gets the same rankings expanded into the 6
  (chosen, rejected) pairs, 2 forwards per pair, with the same number of pairs per step.

Timing covers the training loop only (after model, data and optimizer are ready) on both sides.
Usage: ``python bench/trainer.py [--quick]``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainer.config import RMConfig, SFTConfig  # noqa: E402
from trainer.data import encode_sft  # noqa: E402
from trainer.formats import RMRecord, write_jsonl  # noqa: E402
from trainer.models import build_tiny_causal_lm, build_tiny_tokenizer  # noqa: E402
from trainer.rm import train_rm  # noqa: E402
from trainer.sft import train_sft  # noqa: E402
from trainer.synthetic import text_records  # noqa: E402

K = 4
PROMPT_FORMAT = "{prompt}\n"


def rm_bench_records(n: int, seed: int) -> list[RMRecord]:
    rng = random.Random(seed)
    base = text_records(n * (K + 1), seed=seed)
    out = []
    for i in range(n):
        ranking = list(range(1, K + 1))
        rng.shuffle(ranking)
        out.append(
            RMRecord(
                prompt=base[i * (K + 1)].prompt,
                completion=[r.completion for r in base[i * (K + 1) + 1 : (i + 1) * (K + 1)]],
                ranking=ranking,
            )
        )
    return out


def expand_pairs(records: list[RMRecord]) -> list[dict]:
    """The C(K,2) (chosen, rejected) pairs of each ranking, in TRL's explicit-prompt format."""
    return [
        {"prompt": PROMPT_FORMAT.replace("{prompt}", r.prompt), "chosen": r.completion[b], "rejected": r.completion[w]}
        for r in records
        for b, w, _ in r.pairs()
    ]


class Timer:
    """A TrainerCallback that times TRL's loop from its first step to its end."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Timer(TrainerCallback):
            start = end = None

            def on_train_begin(self, args, state, control, **kwargs):
                self.start = time.perf_counter()

            def on_train_end(self, args, state, control, **kwargs):
                self.end = time.perf_counter()

        return _Timer()


def trl_common(out: str, steps: int, batch_size: int, lr: float) -> dict:
    return dict(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
        use_cpu=not torch.cuda.is_available(),
        # TRL 1.x defaults to bf16 autocast and gradient checkpointing; ours uses neither, so neither here
        bf16=False,
        gradient_checkpointing=False,
    )


def bench_sft(model_dir: str, tok, work: Path, steps: int, batch_size: int, repeats: int) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    records = text_records(steps * batch_size, seed=1)
    data = work / "bench.sft.jsonl"
    write_jsonl(data, records)
    tokens = sum(len(encode_sft(tok, r, 512, PROMPT_FORMAT)["input_ids"]) for r in records)

    dataset = Dataset.from_list(
        [{"prompt": PROMPT_FORMAT.replace("{prompt}", r.prompt), "completion": r.completion} for r in records]
    )
    ours_seconds, trl_seconds = [], []
    for i in range(repeats):  # alternate the two, keep each side's best: the machine is shared
        ours = train_sft(
            SFTConfig(
                data=str(data), model=model_dir, out=str(work / f"ours-sft-{i}"), max_steps=steps,
                batch_size=batch_size, lr=1e-3, val_fraction=0.0, eval_every=0, log_every=10_000, max_length=512,
            )
        )
        assert ours["tokens"] == tokens, (ours["tokens"], tokens)
        ours_seconds.append(ours["seconds"])
        timer = Timer()
        trainer = SFTTrainer(
            model=AutoModelForCausalLM.from_pretrained(model_dir),
            args=TRLSFTConfig(**trl_common(str(work / f"trl-sft-{i}"), steps, batch_size, 1e-3), max_length=512),
            train_dataset=dataset,
            processing_class=tok,
            callbacks=[timer],
        )
        trainer.train()
        trl_seconds.append(timer.end - timer.start)
    ours_seconds, trl_seconds = min(ours_seconds), min(trl_seconds)
    return {
        "tokens": tokens,
        "ours_seconds": round(ours_seconds, 3),
        "trl_seconds": round(trl_seconds, 3),
        "ours_tokens_per_s": round(tokens / ours_seconds, 1),
        "trl_tokens_per_s": round(tokens / trl_seconds, 1),
    }


def bench_rm(model_dir: str, tok, work: Path, steps: int, batch_size: int, repeats: int) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    records = rm_bench_records(steps * batch_size, seed=2)
    data = work / "bench.rm.jsonl"
    write_jsonl(data, records)
    pairs = expand_pairs(records)

    pairs_per_step = len(pairs) // steps
    ours_seconds, trl_seconds = [], []
    for i in range(repeats):
        ours = train_rm(
            RMConfig(
                data=str(data), model=model_dir, out=str(work / f"ours-rm-{i}"), max_steps=steps,
                batch_size=batch_size, lr=1e-3, val_fraction=0.0, eval_every=0, log_every=10_000, max_length=512,
            )
        )
        assert ours["pairs"] == len(pairs), (ours["pairs"], len(pairs))
        ours_seconds.append(ours["seconds"])
        timer = Timer()
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
        model.config.pad_token_id = tok.pad_token_id
        trainer = RewardTrainer(
            model=model,
            args=RewardConfig(**trl_common(str(work / f"trl-rm-{i}"), steps, pairs_per_step, 1e-3), max_length=1024),
            train_dataset=Dataset.from_list(pairs),
            processing_class=tok,
            callbacks=[timer],
        )
        trainer.train()
        trl_seconds.append(timer.end - timer.start)
    ours_seconds, trl_seconds = min(ours_seconds), min(trl_seconds)
    return {
        "pairs": len(pairs),
        "ours_seconds": round(ours_seconds, 3),
        "trl_seconds": round(trl_seconds, 3),
        "ours_pairs_per_s": round(len(pairs) / ours_seconds, 1),
        "trl_pairs_per_s": round(len(pairs) / trl_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    parser.add_argument("--steps", type=int, default=0, help="optimizer steps per run (default 60, quick 15)")
    parser.add_argument("--batch-size", type=int, default=8, help="SFT records / RM prompts per step")
    parser.add_argument("--repeats", type=int, default=0, help="runs per side, best kept (default 2, quick 1)")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads for both sides (default: torch's choice)"
    )
    parser.add_argument("--hidden", type=int, default=64, help="hidden size of the tiny Llama")
    parser.add_argument("--layers", type=int, default=2, help="layers of the tiny Llama")
    args = parser.parse_args()
    steps = args.steps or (15 if args.quick else 60)
    repeats = args.repeats or (1 if args.quick else 2)
    if args.threads:
        # one thread is steadier on a shared machine: no OpenMP barrier waiting on a descheduled sibling
        torch.set_num_threads(args.threads)

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tok = build_tiny_tokenizer()
        model = build_tiny_causal_lm(tok, seed=0, hidden_size=args.hidden, layers=args.layers)
        model_dir = str(work / "tiny")
        model.save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
        params = sum(p.numel() for p in model.parameters())

        sft = bench_sft(model_dir, tok, work, steps, args.batch_size, repeats)
        print(f"SFT  ours {sft['ours_tokens_per_s']:.0f} tok/s   TRL SFTTrainer {sft['trl_tokens_per_s']:.0f} tok/s")
        rm = bench_rm(model_dir, tok, work, steps, args.batch_size, repeats)
        print(f"RM   ours {rm['ours_pairs_per_s']:.0f} pairs/s  TRL RewardTrainer {rm['trl_pairs_per_s']:.0f} pairs/s")

    import transformers
    import trl

    result = {
        "sft_ratio": round(sft["ours_tokens_per_s"] / sft["trl_tokens_per_s"], 3),
        "rm_ratio": round(rm["ours_pairs_per_s"] / rm["trl_pairs_per_s"], 3),
        "sft": sft,
        "rm": rm,
        "k": K,
        "steps": steps,
        "repeats": repeats,
        "batch_size": args.batch_size,
        "rm_pairs_per_step": rm["pairs"] // steps,
        "model": {"arch": "llama", "hidden": args.hidden, "layers": args.layers, "params": params},
        "device": "cuda" if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()} threads",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
