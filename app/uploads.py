"""Reading an import's input from a request: a multipart upload (field `file`) or the raw body,
spooled to disk past a few MB, within the configured size limit."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import IO

from fastapi import Request
from starlette.datastructures import UploadFile

from app.errors import InvalidInput, PayloadTooLarge

SPOOL_IN_MEMORY = 8 * 1024 * 1024


@dataclass
class Upload:
    file: IO[bytes]
    filename: str | None  # a multipart upload's file name
    content_type: str | None


async def spool_body(request: Request, limit: int) -> tempfile.SpooledTemporaryFile:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            spool.close()
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
        spool.write(chunk)
    spool.seek(0)
    return spool


async def open_upload(request: Request, limit: int) -> Upload:
    """The input of an import request; the caller closes `file`."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("file: a multipart upload needs a 'file' field", details={"field": "file"})
        if upload.size is not None and upload.size > limit:
            raise PayloadTooLarge(f"the file is {upload.size} bytes; the limit is {limit}")
        return Upload(upload.file, upload.filename, upload.content_type)
    return Upload(await spool_body(request, limit), None, content_type)
