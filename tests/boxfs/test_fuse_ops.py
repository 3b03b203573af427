"""The pyfuse3 adapter without a kernel: handlers called directly over a small in-memory
fake of the model's API, pinning the translation (``FsError`` → ``FUSEError`` with the
same errno, any other exception → logged and EIO), attribute conversion, the open flags
and ``forget`` passing counts through without ever raising."""

from __future__ import annotations

import errno
import logging
import stat
from types import SimpleNamespace
from typing import Any, cast

import pyfuse3  # noqa: TID251  (the adapter's own test needs FUSEError and its types)
import pytest
import trio

from boxfs.fuse_ops import BLOCK_SIZE, BoxfsOperations, mount_options
from boxfs.view import ROOT_INODE, Attr, FileSystemModel, FsError, StatFs

# The adapter reads only who is asking (for a new entry's owner).
CTX = cast(pyfuse3.RequestContext, SimpleNamespace(uid=1000, gid=1000, pid=1, umask=0o022))


def attr(inode: int, mode: int, size: int = 0) -> Attr:
    return Attr(
        inode=inode, mode=mode, nlink=1, uid=1000, gid=1000, size=size, rdev=0,
        atime_ns=1, mtime_ns=2_000_000_001, ctime_ns=3, blocks=(size + 511) // 512,
    )  # fmt: skip


class FakeModel:
    """Just enough of ``FileSystemModel``: one file ``hello`` in the root."""

    def __init__(self) -> None:
        self.forgotten: list[tuple[int, int]] = []
        self.file = attr(2, stat.S_IFREG | 0o644, 5)

    async def lookup(self, parent: int, name: bytes) -> Attr:
        if parent == ROOT_INODE and name == b"hello":
            return self.file
        if len(name) > 255:
            raise FsError(errno.ENAMETOOLONG)
        if name == b"boom":
            raise RuntimeError("a bug in the model")
        raise FsError(errno.ENOENT)

    def forget(self, inode: int, nlookup: int) -> None:
        if inode == 99:
            raise KeyError(inode)
        self.forgotten.append((inode, nlookup))

    async def getattr(self, inode: int) -> Attr:
        return self.file

    async def open(self, inode: int, flags: int) -> tuple[int, bool]:
        return 7, inode == 2

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        return b"hello"[offset : offset + size]

    async def mkdir(
        self, parent: int, name: bytes, mode: int, owner: tuple[int, int] | None = None
    ) -> Attr:
        assert owner == (1000, 1000)  # the request's uid and gid
        raise FsError(errno.EROFS)

    async def statfs(self) -> StatFs:
        return StatFs(block_size=4096, blocks=100, blocks_free=50, files=10, files_free=5,
                      name_max=255)  # fmt: skip


def ops() -> tuple[BoxfsOperations, FakeModel]:
    model = FakeModel()
    return BoxfsOperations(cast(FileSystemModel, model)), model


def call(handler: Any, *args: Any) -> Any:
    async def main() -> Any:
        return await handler(*args)

    return trio.run(main)


def test_lookup_converts_every_attribute_field() -> None:
    adapter, _ = ops()
    entry = call(adapter.lookup, ROOT_INODE, b"hello", CTX)
    assert entry.st_ino == 2
    assert entry.st_mode == stat.S_IFREG | 0o644
    assert (entry.st_size, entry.st_uid, entry.st_gid, entry.st_nlink) == (5, 1000, 1000, 1)
    assert entry.st_mtime_ns == 2_000_000_001
    assert entry.st_blocks == 1
    assert entry.st_blksize == BLOCK_SIZE
    assert entry.entry_timeout > 0 and entry.attr_timeout > 0


@pytest.mark.parametrize(
    ("name", "expected"),
    [(b"missing", errno.ENOENT), (b"n" * 256, errno.ENAMETOOLONG)],
)
def test_a_model_fs_error_becomes_fuse_error_with_the_same_errno(
    name: bytes, expected: int
) -> None:
    adapter, _ = ops()
    with pytest.raises(pyfuse3.FUSEError) as raised:
        call(adapter.lookup, ROOT_INODE, name, CTX)
    assert raised.value.errno == expected


def test_an_unexpected_exception_is_logged_and_becomes_eio(
    caplog: pytest.LogCaptureFixture,
) -> None:
    adapter, _ = ops()
    with caplog.at_level(logging.ERROR), pytest.raises(pyfuse3.FUSEError) as raised:
        call(adapter.lookup, ROOT_INODE, b"boom", CTX)
    assert raised.value.errno == errno.EIO
    assert "a bug in the model" in caplog.text  # the traceback is in the log
    # The adapter still answers afterwards.
    assert call(adapter.getattr, 2, CTX).st_ino == 2


def test_erofs_from_the_model_reaches_the_kernel() -> None:
    adapter, _ = ops()
    with pytest.raises(pyfuse3.FUSEError) as raised:
        call(adapter.mkdir, ROOT_INODE, b"x", 0o755, CTX)
    assert raised.value.errno == errno.EROFS


def test_open_returns_the_handle_and_keep_cache_from_the_model() -> None:
    adapter, _ = ops()
    info = call(adapter.open, 2, 0, CTX)
    assert (info.fh, info.keep_cache, info.direct_io) == (7, True, False)
    assert not call(adapter.open, 3, 0, CTX).keep_cache
    assert call(adapter.read, 7, 1, 3) == b"ell"


def test_forget_passes_counts_through_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    adapter, model = ops()
    with caplog.at_level(logging.ERROR):
        call(adapter.forget, [(2, 3), (99, 1), (4, 1)])
    assert model.forgotten == [(2, 3), (4, 1)]
    assert "forget(99, 1)" in caplog.text


def test_statfs_maps_every_field() -> None:
    adapter, _ = ops()
    data = call(adapter.statfs, CTX)
    assert (data.f_bsize, data.f_frsize, data.f_blocks) == (4096, 4096, 100)
    assert (data.f_bfree, data.f_bavail, data.f_files, data.f_ffree) == (50, 50, 10, 5)
    assert data.f_namemax == 255


def test_mount_options_name_the_filesystem_and_pass_user_options() -> None:
    options = mount_options(subtype="boxfs", allow_other=False, extra=("noatime",))
    assert {"fsname=boxfs", "subtype=boxfs", "default_permissions", "noatime"} <= options
    assert "allow_other" not in options
    assert "allow_other" in mount_options(subtype="boxfs", allow_other=True, extra=())
