"""Split groups: prompts that must land in one split, so that no near-copy of a training prompt
is validated or tested on.

A group is a connected set of prompts joined by near-duplicate pairs (app/prompts/dedup.py's
clusters over the stored band keys, at the configured threshold) and by evol lineage (a child
and its `provenance.parent_prompt_id`). Its split: the explicit `split` of its members if they
set one; if members set different ones, the most held-out of them (test, then validation, then
train), since a near-copy of a test prompt in train is exactly the leak groups exist to prevent;
the manifest lists every such conflict. With no explicit split, the seeded hash of the group's
root (its oldest prompt) decides, as it decides for a prompt on its own. The groups are worked
out once per export and passed to the export SQL as three arrays (only grouped prompts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.exports.repository import Groups, split_of
from app.exports.schemas import SplitSpec
from app.prompts import dedup
from app.prompts import repository as prompts

HELD_OUT_FIRST = ("test", "validation", "train")
REPORT_GROUPS = 1000
RULE = (
    "near-duplicate clusters (MinHash LSH candidates, word-shingle Jaccard >= threshold) and evol lineages share a "
    "split: the members' explicit split (conflicting ones: test over validation over train), else the seeded hash of "
    "the group's oldest prompt"
)


@dataclass
class SplitGroups:
    threshold: float
    groups: dict[int, list[int]] = field(default_factory=dict)
    split_of_group: dict[int, str] = field(default_factory=dict)
    near_pairs: list[tuple[int, int]] = field(default_factory=list)
    lineage: list[tuple[int, int]] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    unkeyed: int = 0

    def params(self) -> Groups:
        ids, roots, splits = [], [], []
        for root, members in self.groups.items():
            for m in members:
                ids.append(m)
                roots.append(root)
                splits.append(self.split_of_group[root])
        return ids, roots, splits

    def report(self) -> dict[str, Any]:
        listed = sorted(self.groups.items())[:REPORT_GROUPS]
        return {
            "rule": RULE,
            "near_duplicate_threshold": self.threshold,
            "groups": len(self.groups),
            "grouped_prompts": sum(len(m) for m in self.groups.values()),
            "near_duplicate_pairs": len(self.near_pairs),
            "lineage_links": len(self.lineage),
            "prompts_without_lsh_keys": self.unkeyed,
            "conflicts": self.conflicts[:REPORT_GROUPS],
            "list": [{"root": root, "split": self.split_of_group[root], "members": members} for root, members in listed],
        }


async def split_groups(
    session: AsyncSession, dataset_id: int, spec: SplitSpec, threshold: float, *, for_manifest: bool = True
) -> SplitGroups:
    """The dataset's split groups and their splits (`for_manifest`: also count the prompts
    without band keys, which the manifest reports and a live stream does not need)."""
    clusters = await dedup.cluster(session, dataset_id, threshold, count_unkeyed=for_manifest)
    lineage, explicit = await prompts.lineage_and_splits(session, dataset_id)
    near = [(a, b) for a, b, _ in clusters.pairs]
    out = SplitGroups(threshold, dedup.group(near + lineage), near_pairs=near, lineage=lineage, unkeyed=clusters.unkeyed)
    for root, members in out.groups.items():
        chosen = {m: explicit[m] for m in members if m in explicit}
        if not chosen:
            out.split_of_group[root] = split_of(spec.seed, root, spec)
            continue
        split = next(s for s in HELD_OUT_FIRST if s in chosen.values())
        out.split_of_group[root] = split
        if len(set(chosen.values())) > 1:
            overridden = sorted(m for m, s in chosen.items() if s != split)
            out.conflicts.append({"root": root, "split": split, "explicit": {str(m): s for m, s in chosen.items()},
                                  "overridden": overridden})
    return out
