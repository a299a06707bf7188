"""An export version's files on disk, written so that a reader never sees half of one.

A version is rendered into a hidden sibling folder (`.v3.part-<random>`), every file and the
folder are fsynced, and only then is it renamed to `v3` (and its archive to `v3.tar.gz`): a
rename within one folder is atomic, so `v3` is either absent or complete. The export row is
marked succeeded after the rename. A worker killed mid-way leaves only `.part` leftovers, which
the next attempt at that version removes; deleting a dataset removes its whole folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

from app.config import Settings

PART = ".part-"


def dataset_dir(settings: Settings, dataset_id: int) -> Path:
    return settings.data_dir / "exports" / str(dataset_id)


def staging(final: Path) -> Path:
    """A fresh hidden folder beside `final` to render into."""
    return final.with_name(f".{final.name}{PART}{uuid.uuid4().hex[:12]}")


def discard_partials(final: Path) -> None:
    """What killed attempts at this version left behind (their folders and archives)."""
    if final.parent.is_dir():
        for leftover in final.parent.glob(f".{final.name}{PART}*"):
            remove(leftover)


def remove(path: Path) -> None:
    """Gone, whatever it was (a folder, a file, nothing)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            path.unlink()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(
    part: Path, final: Path, archive_part: Path | None = None, archive: Path | None = None, *, whole: bool = True
) -> None:
    """Make a rendered version visible: fsync its files, then rename it (and its archive) into
    place. `whole=False` (a folder the user named, which may hold other things) moves the files
    in one by one instead, the manifest last."""
    for f in part.iterdir():
        _fsync(f)
    _fsync(part)
    if archive_part is not None:
        _fsync(archive_part)
    if not whole:
        final.mkdir(parents=True, exist_ok=True)
        for f in sorted(part.iterdir(), key=lambda f: f.name == "manifest.json"):
            f.replace(final / f.name)
        remove(part)
    else:
        if final.exists():  # an earlier attempt wrote it but died before it was marked: same rows
            old = final.with_name(f".{final.name}{PART}old-{uuid.uuid4().hex[:12]}")
            final.rename(old)
            remove(old)
        part.rename(final)
    if archive_part is not None and archive is not None:
        archive_part.replace(archive)
    _fsync(final.parent)


def purge_dataset(settings: Settings, dataset_id: int) -> None:
    """A deleted dataset's export files: renamed away first (so no download finds half of
    them), then removed."""
    folder = dataset_dir(settings, dataset_id)
    if folder.exists():
        doomed = folder.with_name(f".{folder.name}{PART}deleted-{uuid.uuid4().hex[:12]}")
        folder.rename(doomed)
        remove(doomed)
