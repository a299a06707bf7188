"""A version's folder as a Hugging Face dataset repository: a `README.md` dataset card whose YAML
`configs:` name one config per format with its splits, so `datasets.load_dataset(folder, "rm")`
loads that format alone (without it every `*.train.jsonl` would fall into one split), and
Parquet beside the JSONL on request.

The card says what the folder holds (formats, rows per split, judge models and templates,
review figures, licence, the manifest's sha256) and how to publish it; nothing here reaches
the network."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import InvalidInput

CARD = "README.md"

_JUDGES = text(
    """
    SELECT r.judge_model, r.template_version, count(*) AS n FROM ranking r
    JOIN export_item e ON e.prompt_id = r.prompt_id AND e.export_id = :export_id
    WHERE r.ranker_kind = 'judge' AND r.review_status <> 'rejected'
    GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2
    """
)
_REVIEW = text(
    """
    SELECT 'prompt' AS what, p.review_status, count(*) FROM export_item e JOIN prompt p ON p.id = e.prompt_id
    WHERE e.export_id = :export_id GROUP BY 2
    UNION ALL
    SELECT 'ranking', r.review_status, count(*) FROM ranking r
    JOIN export_item e ON e.prompt_id = r.prompt_id AND e.export_id = :export_id GROUP BY 2
    ORDER BY 1, 2
    """
)


def parquet_available() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


def require_parquet() -> None:
    if not parquet_available():
        raise InvalidInput(
            "parquet needs pyarrow, which is not installed here: pip install 'rlhf-forge[parquet]'",
            details={"field": "parquet"},
        )


def write_parquet(jsonl: Path) -> Path:
    """`x.jsonl` -> `x.parquet` beside it (pyarrow reads the JSON lines, nested lists included)."""
    from pyarrow import json as pa_json
    from pyarrow import parquet as pq

    target = jsonl.with_suffix(".parquet")
    pq.write_table(pa_json.read_json(jsonl), target)
    return target


async def figures(session: AsyncSession, export_id: int) -> dict[str, Any]:
    """The judges and review figures of a version's prompts. A version just frozen has no
    statistics yet (Postgres guesses 1 row for its export_id), so the planner would probe
    `prompt` once per item in a nested loop (1M items: 1.3 s); merged in prompt order, 0.9 s."""
    await session.execute(text("SET LOCAL enable_nestloop = off"))
    judges = [
        {"model": m, "template": t, "rankings": n}
        for m, t, n in await session.execute(_JUDGES, {"export_id": export_id})
    ]
    review: dict[str, dict[str, int]] = {}
    for what, status, n in await session.execute(_REVIEW, {"export_id": export_id}):
        review.setdefault(what, {})[status] = n
    return {"judges": judges, "review": review}


def _configs(files: dict[str, dict[str, Any]], suffix: str) -> list[dict[str, Any]]:
    by_kind: dict[str, list[dict[str, str]]] = {}
    for name, info in sorted(files.items(), key=lambda kv: (kv[1]["kind"], ("train", "validation", "test").index(kv[1]["split"]))):
        by_kind.setdefault(info["kind"], []).append({"split": info["split"], "path": name.removesuffix(".jsonl") + suffix})
    return [{"config_name": kind, "data_files": splits} for kind, splits in by_kind.items()]


def _yaml(value: Any, indent: int = 0) -> list[str]:
    """The small YAML subset the card header needs (maps, lists, scalars as JSON strings)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)):
                lines.append(f"{pad}{k}:")
                lines += _yaml(v, indent + 2)
            else:
                lines.append(f"{pad}{k}: {json.dumps(v)}")
    elif isinstance(value, list):
        for item in value:
            sub = _yaml(item, indent + 2)
            lines.append(f"{pad}- {sub[0].strip()}")
            lines += sub[1:]
    else:
        lines.append(f"{pad}{json.dumps(value)}")
    return lines


def write_card(
    out_dir: Path, manifest: dict[str, Any], facts: dict[str, Any], *, license_id: str | None, parquet: bool,
    shown_as: Path | None = None,
) -> Path:
    """README.md for the folder as it stands (call after manifest.json is written); `shown_as`:
    the folder's name in the card's commands (where it will lie once published)."""
    manifest_sha = hashlib.sha256((out_dir / "manifest.json").read_bytes()).hexdigest()
    files = manifest["files"]
    configs = _configs(files, ".parquet" if parquet else ".jsonl")
    if configs:
        configs[0]["default"] = True
    header = {"license": license_id or "other", "pretty_name": manifest["dataset"], "tags": ["rlhf", "rlhf-forge"],
              "configs": configs}
    name = f"{manifest['dataset']} v{manifest['dataset_version']}"
    rows = ["| format | " + " | ".join(("train", "validation", "test")) + " |", "|---|---|---|---|"]
    for kind, counts in manifest["counts"].items():
        rows.append(f"| `{kind}` | " + " | ".join(str(counts.get(s, 0)) for s in ("train", "validation", "test")) + " |")
    judges = [f"- `{j['model']}` with template `{j['template']}`: {j['rankings']} rankings" for j in facts["judges"]] or ["- none"]
    review = [
        f"- {what}s: " + ", ".join(f"{status} {n}" for status, n in sorted(counts.items()))
        for what, counts in sorted(facts["review"].items())
    ] or ["- none"]
    first = configs[0]["config_name"] if configs else "sft"
    body = [
        "---", *_yaml(header), "---", "",
        f"# {name}", "",
        f"Made by rlhf-forge (export format {manifest['format_version']}). Each format is its own config, "
        "with its splits:", "",
        *rows, "",
        "Files are JSON lines, one record a line, as `trainer/formats.py` defines them"
        + (", with the same rows as Parquet beside them (the configs point at the Parquet)." if parquet else "."),
        "",
        "## Judges", "", *judges, "",
        "## Review", "", *review, "",
        "## Licence", "",
        f"`{license_id}`" if license_id else "Not set: give the export a `license` (an SPDX id) before publishing.", "",
        "## Provenance", "",
        f"- manifest.json sha256: `{manifest_sha}`",
        f"- filters: `{json.dumps(manifest['filters'], sort_keys=True)}`",
        f"- split: `{json.dumps(manifest['split'], sort_keys=True)}`", "",
        "## Use", "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("{shown_as or out_dir}", "{first}")   # or the Hub repository, once uploaded',
        "```", "",
        "## Publish", "",
        "The folder is a dataset repository as it stands:", "",
        "```bash",
        f"huggingface-cli upload <user>/<name> {shown_as or out_dir} . --repo-type dataset",
        "```", "",
    ]
    card = out_dir / CARD
    card.write_text("\n".join(body), encoding="utf-8")
    return card
