"""Writing a version's files in one pass: each chunk of a file is hashed, written and, when the
version has an archive, gzip-compressed at once, on one writer thread that works while the
next rows arrive (hashlib and zlib-ng release the GIL on large buffers).

A file's compressed body (its tar padding included) is kept in an anonymous temporary file
beside the version, because files are written interleaved (all formats and splits of a row at
once) while a tar holds one member after another. Closing the writer assembles the `.tar.gz` as
a series of gzip members: per file its tar header, then its body as compressed while it was
written (copied, not compressed again), then the manifest and the end of the archive. A gzip
stream of several members is one stream to every reader (gzip, tar, Python's tarfile), and
every byte is fixed by the files and the version's creation time: a version's archive is the
same each time it is written.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tarfile
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from zlib_ng import zlib_ng as zlib

# gzip level of the archive, compressed by zlib-ng (the same deflate format, other code): its level
# 2 compresses the bench's rows at 1,300 MB/s to 4.0% against zlib's level 3 at 390 MB/s to 4.2%
# (and zlib's 6, the default, at 190 MB/s to 3.8%)
GZIP_LEVEL = 2
# chunks handed to the writer thread and not yet written: memory stays at about this many
PENDING = 2


def _gzip(data: bytes, level: int = GZIP_LEVEL) -> bytes:
    z = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return z.compress(data) + z.flush()


def _padding(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


class _File:
    """One file of the version: written, hashed and (with an archive) compressed as it goes."""

    def __init__(self, path: Path, archived: bool, scratch: Path):
        self.path = path
        self.fh: IO[bytes] = path.open("wb")
        self.digest = hashlib.sha256()
        self.size = 0
        self.body: IO[bytes] | None = tempfile.TemporaryFile(dir=scratch) if archived else None
        self.z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS) if archived else None

    def write(self, data: bytes) -> None:
        self.fh.write(data)
        self.digest.update(data)
        self.size += len(data)
        if self.body is not None:
            self.body.write(self.z.compress(data))

    def close(self) -> None:
        self.fh.close()
        if self.body is not None:
            self.body.write(self.z.compress(_padding(self.size)) + self.z.flush())

    def discard(self) -> None:
        self.fh.close()
        if self.body is not None:
            self.body.close()


class VersionWriter:
    """The files of one version under `out_dir` (and its archive, `archive` = (path, root folder,
    mtime)). `write` queues bytes for a file; `finish` waits for the writes, closes the files and
    writes the archive; `abort` drops everything written."""

    def __init__(self, out_dir: Path, archive: tuple[Path, str, int] | None = None):
        self.out_dir = out_dir
        self.archive = archive
        self.files: dict[str, _File] = {}
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="export-writer")
        self.pending: list[Future[None]] = []

    async def write(self, batch: list[tuple[str, bytes]]) -> None:
        """Queue (file name, bytes) pairs; returns once at most PENDING batches wait."""
        self.pending.append(self.pool.submit(self._write, batch))
        while len(self.pending) > PENDING:
            await asyncio.wrap_future(self.pending.pop(0))

    def _write(self, batch: list[tuple[str, bytes]]) -> None:
        for name, data in batch:
            f = self.files.get(name)
            if f is None:
                path = self.out_dir / name
                path.parent.mkdir(parents=True, exist_ok=True)
                f = self.files[name] = _File(path, self.archive is not None, self.out_dir.parent)
            f.write(data)

    def info(self, name: str) -> dict[str, Any]:
        f = self.files[name]
        return {"bytes": f.size, "sha256": f.digest.hexdigest()}

    async def finish(self) -> None:
        """Every queued write done, every file closed."""
        for future in self.pending:
            await asyncio.wrap_future(future)
        self.pending = []
        await asyncio.wrap_future(self.pool.submit(lambda: [f.close() for f in self.files.values()]))

    def write_archive(self, names: list[str], extra: list[str]) -> None:
        """The archive (after `finish`): `names` from their compressed bodies, in this order, then
        the files `extra` (the manifest, written whole) read from out_dir. Blocking."""
        assert self.archive is not None
        path, root, mtime = self.archive
        with path.open("wb") as out:
            for name in names:
                f = self.files[name]
                out.write(_gzip(self._header(f"{root}/{name}", f.size, mtime)))
                f.body.seek(0)
                shutil.copyfileobj(f.body, out, 1 << 20)
                f.body.close()
                f.body = None
            for name in extra:
                data = (self.out_dir / name).read_bytes()
                out.write(_gzip(self._header(f"{root}/{name}", len(data), mtime) + data + _padding(len(data))))
            out.write(_gzip(b"\0" * (2 * tarfile.BLOCKSIZE)))  # the end of the archive

    @staticmethod
    def _header(name: str, size: int, mtime: int) -> bytes:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, mtime, 0o644
        return info.tobuf(tarfile.PAX_FORMAT)

    def close(self) -> None:
        """Let go of the thread and any compressed bodies left (after a failure too)."""
        self.pool.shutdown(wait=True)
        for f in self.files.values():
            if f.body is not None:
                f.discard()
            elif not f.fh.closed:
                f.fh.close()
