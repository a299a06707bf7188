from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from app.prompts.schemas import ImportReport, Split


class RecordFormat(StrEnum):
    """What one record of the input is: the export formats that carry completions (trainer/formats.py)."""

    sft = "sft"
    rm = "rm"
    pairs = "pairs"
    sft_chat = "sft_chat"
    pairs_chat = "pairs_chat"


class RecordImportReport(ImportReport):
    """The prompt import's report, per line, with what the lines stored.

    `inserted` counts the lines that stored something new; `duplicates` the lines whose prompt,
    answers and ranking were all there already (in the dataset or on an earlier line)."""

    format: RecordFormat
    file: str = Field(description="The file name recorded as provenance.")
    sha256: str = Field(description="sha256 of the input, recorded as provenance.")
    split: Split | None = Field(description="The split given to the prompts this import created.")
    prompts_created: int = 0
    prompts_reused: int = Field(0, description="Prompts of the dataset with the same text, used as they are.")
    completions_created: int = 0
    completions_reused: int = Field(0, description="Completions of the prompt with the same text, used as they are.")
    rankings_created: int = 0
    unmerged_pair_prompts: int = Field(
        0, description="Prompts whose pairs are not the pairs of one ranking: stored as one 2-way ranking per pair."
    )
