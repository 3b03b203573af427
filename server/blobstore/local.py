"""Blobs as files in a directory, sharded by the first two bytes of the id.

Layout: ``ROOT/ab/cd/abcd…(64 hex)``. A put writes a temporary file beside the target,
fsyncs it, renames it into place and fsyncs the directory, so a crash leaves either the
old state or the whole new blob, plus at most a stray ``.tmp-*`` file that ``sweep_temp``
removes at start. Blocking; safe from several threads (each put has its own temp file).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from store.errors import NotFoundError
from store.ids import ChunkId

_TEMP_PREFIX = ".tmp-"


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, chunk_id: ChunkId) -> Path:
        text = chunk_id.hex()
        return self.root / text[:2] / text[2:4] / text

    def put(self, chunk_id: ChunkId, blob: bytes) -> None:
        target = self._path(chunk_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.parent / f"{_TEMP_PREFIX}{secrets.token_hex(8)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(temp, target)
        _fsync_dir(target.parent)

    def get(self, chunk_id: ChunkId) -> bytes:
        try:
            return self._path(chunk_id).read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError("chunk", chunk_id.hex()) from exc

    def exists(self, chunk_id: ChunkId) -> bool:
        return self._path(chunk_id).exists()

    def delete(self, chunk_id: ChunkId) -> None:
        self._path(chunk_id).unlink(missing_ok=True)

    def ids(self) -> Iterator[ChunkId]:
        for path in self.root.glob("??/??/*"):
            if not path.name.startswith(_TEMP_PREFIX) and len(path.name) == 64:
                yield ChunkId.from_hex(path.name)

    def ids_older_than(self, cutoff_ns: int) -> Iterator[ChunkId]:
        # A put renames a new file into place, so a blob's mtime is when it was written.
        for path in self.root.glob("??/??/*"):
            if path.name.startswith(_TEMP_PREFIX) or len(path.name) != 64:
                continue
            try:
                written_ns = path.stat().st_mtime_ns
            except FileNotFoundError:
                continue
            if written_ns < cutoff_ns:
                yield ChunkId.from_hex(path.name)

    def sweep_temp(self) -> int:
        """Remove temporary files a crash left behind; returns how many."""
        removed = 0
        for path in self.root.glob(f"??/??/{_TEMP_PREFIX}*"):
            path.unlink(missing_ok=True)
            removed += 1
        return removed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
