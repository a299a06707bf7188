"""Fixtures for the trainer tests: offline, tiny models built in code, small synthetic exports."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from trainer import synthetic  # noqa: E402
from trainer.formats import write_jsonl  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def one_cpu_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine (CI, other jobs)
    OpenMP threads spin-waiting for a descheduled sibling made these tests 4-5x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def exports(tmp_path_factory):
    """SFT, RM and RL exports of the addition task, plus a manifest beside them."""
    folder = tmp_path_factory.mktemp("export")
    paths = {
        "sft": folder / "train.sft.jsonl",
        "rm": folder / "train.rm.jsonl",
        "rl": folder / "train.rl.jsonl",
    }
    write_jsonl(paths["sft"], synthetic.sft_records(300, seed=1))
    write_jsonl(paths["rm"], synthetic.rm_records(700, k=4, seed=2))
    write_jsonl(paths["rl"], synthetic.rl_records(64, seed=3))
    (folder / "manifest.json").write_text(
        '{"format_version": 1, "dataset": "addition", "dataset_version": 3, "files": {}}\n', encoding="utf-8"
    )
    paths["manifest"] = folder / "manifest.json"
    return paths


@pytest.fixture(scope="session")
def sft_checkpoint(exports, tmp_path_factory):
    """A tiny model fine-tuned on the addition task: the starting point for RM and PPO tests."""
    from trainer.config import SFTConfig
    from trainer.sft import train_sft

    out = tmp_path_factory.mktemp("sft")
    cfg = SFTConfig(
        data=str(exports["sft"]), model="tiny", out=str(out), max_steps=300, lr=3e-3, batch_size=32, eval_every=0
    )
    result = train_sft(cfg)
    return {"path": out, "result": result}
