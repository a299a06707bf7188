"""Throughput and peak memory of our SFT and K-wise RM loops against TRL's fastest settings.

One Llama built in code (default hidden 512, 6 layers: 16.0M parameters, where the matrix
products dominate a step, not Python), saved once to a folder every side loads; the same data,
batch, dtype (fp32), threads and machine. Each side runs in its own subprocess, so its peak RSS
(``resource.getrusage``'s ``ru_maxrss``) is its own; the first ``--warmup`` optimizer steps are
not timed (allocator, lazy initialisation).

Every side runs with the same fixed number of torch threads (``--threads``, default 1; also
``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` of its process). On a shared 2-core machine whose load is
above 2, two OpenMP threads wait on each other at every parallel region while the other jobs hold
the cores: at load ~6 a step took 2-2.5x longer with 2 threads than with 1 on both sides (TRL
packed 139 vs 291 tokens/s, ours 162 vs 404), and the side with the smaller operations (ours: 3x
fewer tokens per RM step) lost most, so the ratios measured the contention rather than the loops.
One thread is also TRL's fastest setting under that load. ``--threads 2`` on a quiet machine.

- SFT: real tokens per second (prompt + completion, no pad). Ours trains on padding-free batches
  (one row per batch, per-sequence causal attention from ``cu_seq_lens``). TRL ``SFTTrainer`` runs
  its fastest single-device settings for this machine, each measured and the best one taken:
  ``packing=True`` with ``packing_strategy="bfd"`` (which turns on ``padding_free``), and
  ``padding_free=True`` without packing. Padding-free in TRL is meant for FlashAttention 2/3,
  which has no CPU kernel; on a CPU TRL's batches go through ``sdpa`` (transformers' default; eager
  is slower), where transformers derives a block-diagonal causal mask over the whole row from the
  position ids. ``--trl-sft padded`` adds TRL's padded batches grouped by length.
  No bf16 and no gradient checkpointing (TRL 1.x defaults to both; ours uses neither).
- RM: preference pairs per second. Ours reads each K=4 ranking as one batch element (K forwards
  give all C(K,2) = 6 pairs; the prompt is computed once for its K completions, an exact sharing
  under causal attention: ``trainer.data.pack_shared``); TRL's ``RewardTrainer`` (no padding-free
  mode) gets the same rankings expanded into the 6 (chosen, rejected) pairs, 2 forwards per pair,
  the same pairs per step, padded to the longest of its batch (about 40% of its batch is padding
  here; length grouping needs a length column TRL's preference data does not have, and would
  remove at most that).

Usage: ``python bench/trainer.py [--quick]`` (``--quick``: a smoke run of every side on a 0.4M-parameter
model; the figures come from a full run). The last line is one JSON object: ``sft_ratio``,
``rm_ratio``, ``params`` and each side's ``*_peak_rss_mb``, the load average at start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

K = 4
PROMPT_FORMAT = "{prompt}\n"
TRL_SFT_VARIANTS = ("packed", "padding_free", "padded")


def rm_bench_records(n: int, seed: int):
    from trainer.formats import RMRecord
    from trainer.synthetic import text_records

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


def expand_pairs(records) -> list[dict]:
    """The C(K,2) (chosen, rejected) pairs of each ranking, in TRL's explicit-prompt format."""
    return [
        {"prompt": PROMPT_FORMAT.replace("{prompt}", r.prompt), "chosen": r.completion[b], "rejected": r.completion[w]}
        for r in records
        for b, w, _ in r.pairs()
    ]


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class Steps:
    """(time, items) after each optimizer step; the rate leaves out the first ``warmup`` steps."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.marks: list[tuple[float, int]] = []

    def __call__(self, step: int, items: int) -> None:
        self.marks.append((time.perf_counter(), items))

    def result(self) -> dict:
        if len(self.marks) <= self.warmup:
            raise RuntimeError(f"only {len(self.marks)} steps ran, {self.warmup} of them warm-up")
        timed = self.marks[self.warmup :]
        seconds = timed[-1][0] - self.marks[self.warmup - 1][0]  # from the end of the last warm-up step
        items = sum(n for _, n in timed)
        return {"timed_steps": len(timed), "items": items, "seconds": round(seconds, 3), "rate": round(items / seconds, 4)}


def trl_callback(steps: Steps, counter):
    """A TrainerCallback reporting each step's items (``counter()``: the running total) to ``steps``."""
    from transformers import TrainerCallback

    class _Steps(TrainerCallback):
        last = 0

        def on_step_end(self, args, state, control, **kwargs):
            total = counter()
            steps(state.global_step, total - self.last)
            self.last = total

    return _Steps()


def trl_common(out: str, steps: int, batch_size: int) -> dict:
    import torch

    return dict(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=1e-3,
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


# ---------------------------------------------------------------- one side, in its own process


def side(args) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    steps = Steps(args.warmup)
    before = None
    if args.side in ("ours-sft", "ours-rm"):
        from trainer.config import RMConfig, SFTConfig
        from trainer.rm import train_rm
        from trainer.sft import train_sft

        sft = args.side == "ours-sft"
        config, train = (SFTConfig, train_sft) if sft else (RMConfig, train_rm)
        before = peak_rss_mb()
        train(
            config(
                data=str(work / f"bench.{'sft' if sft else 'rm'}.jsonl"), model=str(work / "model"), out=str(work / args.side),
                max_steps=args.steps, batch_size=args.batch_size if sft else args.rm_batch_size, lr=1e-3, val_fraction=0.0,
                eval_every=0, log_every=10_000, max_length=512,
            ),
            on_step=steps,
        )
    elif args.side.startswith("trl-sft-"):
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import SFTConfig as TRLSFTConfig
        from trl import SFTTrainer

        variant = args.side.removeprefix("trl-sft-")
        rows = [json.loads(line) for line in (work / "bench.sft.jsonl").read_text().splitlines()]
        dataset = Dataset.from_list(
            [{"prompt": PROMPT_FORMAT.replace("{prompt}", r["prompt"]), "completion": r["completion"]} for r in rows]
        )
        batch_size, max_steps = args.batch_size, args.steps
        extra: dict = {"max_length": 512}
        if variant == "packed":
            # bfd bins of max_length tokens; a step of as many bins as carry our step's tokens
            tokens = json.loads((work / "sft_tokens.json").read_text())
            extra = {"packing": True, "packing_strategy": "bfd", "max_length": args.pack_length}
            batch_size = max(1, round(sum(tokens) / args.steps / args.pack_length))
            max_steps = max(args.warmup + 1, sum(tokens) // (batch_size * args.pack_length))
        elif variant == "padding_free":
            extra = {"padding_free": True, "max_length": None}  # records are shorter than 512 already
        elif variant == "padded":
            extra = {"max_length": 512, "train_sampling_strategy": "group_by_length"}
        trainer = SFTTrainer(
            model=AutoModelForCausalLM.from_pretrained(str(work / "model"), attn_implementation=args.trl_attn),
            args=TRLSFTConfig(**trl_common(str(work / "trl-sft"), max_steps, batch_size), **extra),
            train_dataset=dataset,
            processing_class=AutoTokenizer.from_pretrained(str(work / "model")),
        )
        trainer.add_callback(trl_callback(steps, lambda: trainer._total_train_tokens))
        before = peak_rss_mb()
        trainer.train()
    elif args.side == "trl-rm":
        from datasets import Dataset
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from trl import RewardConfig, RewardTrainer

        tok = AutoTokenizer.from_pretrained(str(work / "model"))
        pairs = expand_pairs(rm_bench_records(args.steps * args.rm_batch_size, seed=2))
        pairs_per_step = len(pairs) // args.steps
        model = AutoModelForSequenceClassification.from_pretrained(
            str(work / "model"), num_labels=1, attn_implementation=args.trl_attn
        )
        model.config.pad_token_id = tok.pad_token_id
        trainer = RewardTrainer(
            model=model,
            args=RewardConfig(**trl_common(str(work / "trl-rm"), args.steps, pairs_per_step), max_length=1024),
            train_dataset=Dataset.from_list(pairs),
            processing_class=tok,
        )
        trainer.add_callback(trl_callback(steps, lambda: trainer.state.global_step * pairs_per_step))
        before = peak_rss_mb()
        trainer.train()
    else:
        raise SystemExit(f"unknown side {args.side}")
    return {**steps.result(), "setup_rss_mb": before, "peak_rss_mb": peak_rss_mb(), "threads": torch.get_num_threads()}


def run_side(name: str, args, work: Path) -> dict:
    cmd = [
        sys.executable, __file__, "--side", name, "--work", str(work), "--steps", str(args.steps),
        "--warmup", str(args.warmup), "--batch-size", str(args.batch_size), "--rm-batch-size", str(args.rm_batch_size),
        "--threads", str(args.threads), "--pack-length", str(args.pack_length), "--trl-attn", args.trl_attn,
    ]
    threads = str(args.threads) if args.threads else ""
    env = {**os.environ, **({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads} if threads else {})}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"side {name} failed ({proc.returncode})")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    print(f"  {name:18s} {out['rate']:10.1f}/s  peak RSS {out['peak_rss_mb']:7.1f} MB  ({out['wall_s']} s)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and one TRL SFT variant (a smoke run)")
    parser.add_argument("--steps", type=int, default=0, help="optimizer steps per side (default 8, quick 3)")
    parser.add_argument("--warmup", type=int, default=-1, help="untimed first steps, at least 1 (default 1)")
    parser.add_argument("--batch-size", type=int, default=0, help="SFT records per step (default 16: about 2,400 tokens; quick 8)")
    parser.add_argument("--rm-batch-size", type=int, default=0, help="RM prompts per step, x6 pairs for TRL (default 2, quick 1)")
    parser.add_argument("--pack-length", type=int, default=1024, help="TRL packing: tokens per bin (TRL's max_length default)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads, every side (default 1; 0: torch's choice)"
    )
    parser.add_argument("--hidden", type=int, default=0, help="hidden size of the Llama (default 512, quick 128)")
    parser.add_argument("--layers", type=int, default=0, help="layers of the Llama (default 6: 16.0M parameters; quick 2)")
    parser.add_argument("--trl-sft", default="", help=f"TRL SFT variants, comma-separated, of {TRL_SFT_VARIANTS}")
    parser.add_argument("--trl-attn", default="sdpa", help="attn_implementation for TRL's model (CPU: sdpa or eager)")
    parser.add_argument("--side", default="", help=argparse.SUPPRESS)
    parser.add_argument("--work", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.steps = args.steps or (3 if args.quick else 8)
    args.hidden = args.hidden or (128 if args.quick else 512)
    args.layers = args.layers or (2 if args.quick else 6)
    if args.quick:  # a smoke run: small steps on a small model (the figures come from a full run)
        args.batch_size = args.batch_size or 8
        args.rm_batch_size = args.rm_batch_size or 1
    args.batch_size = args.batch_size or 16
    args.rm_batch_size = args.rm_batch_size or 2
    args.warmup = max(1, args.warmup if args.warmup >= 0 else 1)
    variants = [v for v in (args.trl_sft or ("packed" if args.quick else "packed,padding_free")).split(",") if v]
    if unknown := set(variants) - set(TRL_SFT_VARIANTS):
        raise SystemExit(f"--trl-sft: unknown {sorted(unknown)}; choose from {TRL_SFT_VARIANTS}")

    if args.side:
        import logging
        import warnings

        warnings.filterwarnings("ignore")
        logging.disable(logging.WARNING)
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        import datasets

        datasets.disable_progress_bars()
        print(json.dumps(side(args)))
        return

    import torch

    from trainer.data import encode_sft
    from trainer.formats import write_jsonl
    from trainer.models import build_tiny_causal_lm, build_tiny_tokenizer
    from trainer.synthetic import text_records

    t0 = time.perf_counter()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tok = build_tiny_tokenizer()
        model = build_tiny_causal_lm(tok, seed=0, hidden_size=args.hidden, layers=args.layers)
        model.save_pretrained(work / "model")
        tok.save_pretrained(work / "model")
        params = sum(p.numel() for p in model.parameters())
        del model
        records = text_records(args.steps * args.batch_size, seed=1)
        write_jsonl(work / "bench.sft.jsonl", records)
        tokens = [len(encode_sft(tok, r, 512, PROMPT_FORMAT)["input_ids"]) for r in records]
        (work / "sft_tokens.json").write_text(json.dumps(tokens))
        write_jsonl(work / "bench.rm.jsonl", rm_bench_records(args.steps * args.rm_batch_size, seed=2))
        print(f"Llama hidden {args.hidden} x {args.layers} layers: {params / 1e6:.1f}M parameters; "
              f"SFT {len(tokens)} records, {sum(tokens) / len(tokens):.0f} tokens each on average", flush=True)

        print("SFT tokens/s", flush=True)
        ours_sft = run_side("ours-sft", args, work)
        trl_sft = {v: run_side(f"trl-sft-{v}", args, work) for v in variants}
        best = max(trl_sft, key=lambda v: trl_sft[v]["rate"])
        print("RM pairs/s", flush=True)
        ours_rm = run_side("ours-rm", args, work)
        trl_rm = run_side("trl-rm", args, work)

    import transformers
    import trl

    load_after = os.getloadavg()
    result = {
        "sft_ratio": round(ours_sft["rate"] / trl_sft[best]["rate"], 3),
        "rm_ratio": round(ours_rm["rate"] / trl_rm["rate"], 3),
        "params": params,
        "ours_sft_peak_rss_mb": ours_sft["peak_rss_mb"],
        "trl_sft_peak_rss_mb": trl_sft[best]["peak_rss_mb"],
        "ours_rm_peak_rss_mb": ours_rm["peak_rss_mb"],
        "trl_rm_peak_rss_mb": trl_rm["peak_rss_mb"],
        "trl_sft_best": best,
        "sft": {"ours": ours_sft, **{f"trl_{v}": r for v, r in trl_sft.items()}},
        "rm": {"ours": ours_rm, "trl": trl_rm},
        "k": K,
        "steps": args.steps,
        "warmup": args.warmup,
        "batch_size": args.batch_size,
        "rm_batch_size": args.rm_batch_size,
        "rm_pairs_per_step": args.rm_batch_size * K * (K - 1) // 2,
        "pack_length": args.pack_length,
        "trl_attn": args.trl_attn,
        "model": {"arch": "llama", "hidden": args.hidden, "layers": args.layers, "params": params},
        "device": "cuda" if torch.cuda.is_available() else f"cpu x{ours_sft['threads']} threads",
        "load_avg": {"start": [round(x, 2) for x in load], "end": [round(x, 2) for x in load_after]},
        "wall_s": round(time.perf_counter() - t0, 1),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
