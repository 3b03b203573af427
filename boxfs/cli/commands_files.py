"""``ls``, ``get``, ``put``, ``mkdir``, ``mv`` and ``rm``: the drive at its head, through the
server, no mount needed.

A path may lead into a shared folder (``boxfs.drive.Drives.at``): the command then reads
and changes that folder's namespace, shows its paths as paths of the home, and refuses a
change where the caller only views before anything is sent (``require_writable``). A move
stays within one namespace. Each command parses its paths (``boxfs.cli.paths``), reads and
changes the drive through ``boxfs.cli.drive`` and prints what happened: outcomes even with
``--quiet``, summaries without it. Its own exit code comes only from op results
(``exit_for_results``); every other failure is an exception for ``parser.main``, which runs
each command in one ``trio.run``. It must not speak the protocol beyond building ops.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import trio

from boxfs.cli.drive import (
    ChunkUploader,
    UploadStats,
    base_for_put,
    deletes_below,
    download_to,
    mkdir_op,
    opened_drives,
    outer_results,
    remember,
    remember_puts,
    require_writable,
    same_leaf,
    scan_file,
    session_remote,
)
from boxfs.cli.exit_codes import ExitCode, exit_for_results
from boxfs.cli.output import (
    Context,
    count,
    describe_result,
    format_time_ns,
    human_size,
    show_bytes,
    show_path,
)
from boxfs.cli.paths import RemoteTarget, child_path, local_name, not_found, parse_remote_path
from boxfs.drive import Drive, Drives, Location
from boxfs.errors import UsageError
from store import protocol
from store.errors import ConflictError, NotFoundError
from store.ids import ContentHash, NamespaceId
from store.merkle import MemoryTrees, build_tree, walk
from store.objects import EntryKind, FileEntry
from store.ops import Attrs, Delete, Mkdir, Move, Op, Put

_KIND_FLAG: Final = {
    EntryKind.FILE: stat.S_IFREG,
    EntryKind.DIR: stat.S_IFDIR,
    EntryKind.SYMLINK: stat.S_IFLNK,
    EntryKind.FIFO: stat.S_IFIFO,
    EntryKind.SOCKET: stat.S_IFSOCK,
    EntryKind.BLOCK_DEVICE: stat.S_IFBLK,
    EntryKind.CHAR_DEVICE: stat.S_IFCHR,
    EntryKind.MOUNT: stat.S_IFDIR,  # a shared folder shows as a folder
}
# What ``ls -l`` calls each kind: a mount entry is a shared folder.
_KIND_SHOWN: Final = {EntryKind.MOUNT: "shared"}


def _long_line(entry: FileEntry, shown_name: str) -> str:
    mode = stat.filemode(_KIND_FLAG[entry.kind] | entry.mode)
    kind = _KIND_SHOWN.get(entry.kind, entry.kind.name.lower())
    size = "-" if entry.kind in (EntryKind.DIR, EntryKind.MOUNT) else str(entry.size)
    name = shown_name
    if entry.kind is EntryKind.SYMLINK:
        name += f" -> {show_bytes(entry.target)}"
    return f"{mode}  {kind:<7} {size:>12}  {format_time_ns(entry.mtime_ns)}  {name}"


async def cmd_ls(args: argparse.Namespace, ctx: Context) -> ExitCode:
    target = parse_remote_path(args.path)
    session = ctx.home.load_session()
    async with (
        session_remote(session) as remote,
        opened_drives(ctx.home, remote, ctx.limiter) as drives,
    ):
        view, where = await drives.at(target.path)
        listed: list[tuple[FileEntry, str]]
        if where.path is None:
            listed = [(e, show_bytes(e.name)) for e in await view.tree(view.root)]
        else:
            entry = await view.lookup(where.path)
            if entry is None:
                raise not_found(target.path)
            if entry.kind is EntryKind.DIR:
                assert entry.tree_id is not None
                listed = [(e, show_bytes(e.name)) for e in await view.tree(entry.tree_id)]
            else:
                listed = [(entry, show_path(target.path))]
    for entry, shown in listed:
        ctx.result(_long_line(entry, shown) if args.long else shown)
    return ExitCode.OK


async def cmd_get(args: argparse.Namespace, ctx: Context) -> ExitCode:
    source = parse_remote_path(args.remote_path)
    if source.path is None:
        raise UsageError("get needs the path of a file on the drive, not its root")
    to_stdout = args.local_path == "-"
    if not to_stdout and not Path(args.local_path).absolute().parent.is_dir():
        raise NotFoundError("local folder", str(Path(args.local_path).parent))
    session = ctx.home.load_session()
    async with (
        session_remote(session) as remote,
        opened_drives(ctx.home, remote, ctx.limiter) as drives,
    ):
        view, where = await drives.at(source.path)
        if where.path is None:  # a shared folder itself
            entry: FileEntry | None = where.root_entry(view.root)
        else:
            entry = await view.lookup(where.path)
        if entry is None:
            raise not_found(source.path)
        if entry.kind is EntryKind.DIR and args.recursive and not to_stdout:
            return await _get_folder(
                ctx, view, where.path, entry, Path(args.local_path), shown=show_path(source.path)
            )
        if entry.kind is not EntryKind.FILE:
            kind = "a folder" if entry.kind is EntryKind.DIR else f"a {entry.kind.name.lower()}"
            hint = " (get -r downloads a folder)" if entry.kind is EntryKind.DIR else ""
            raise UsageError(f"{show_path(source.path)} is {kind}: get downloads one file{hint}")
        assert where.path is not None  # a file: never a namespace's root
        with ctx.transfer(f"get {show_bytes(entry.name)}", entry.size) as transfer:
            if to_stdout:
                out = sys.stdout.buffer
                await view.read(entry, out.write, transfer.advance)
                await trio.to_thread.run_sync(out.flush)
                remember(ctx.home, view, {bytes(where.path): entry.content_hash})
                return ExitCode.OK
            destination = Path(args.local_path)
            if destination.is_dir():
                destination = destination / os.fsdecode(entry.name)
            await download_to(view, entry, destination, transfer, ctx.limiter)
        remember(ctx.home, view, {bytes(where.path): entry.content_hash})
    ctx.say(f"got {show_path(source.path)} -> {destination} ({human_size(entry.size)})")
    return ExitCode.OK


async def _get_folder(
    ctx: Context,
    view: Drive,
    source: protocol.DrivePath | None,
    folder: FileEntry,
    destination: Path,
    *,
    shown: str,
) -> ExitCode:
    """``get -r``: the folder and everything below it, into ``destination`` (or into
    ``destination/NAME`` if that is an existing folder, as ``cp -r`` does). Each file is
    verified and renamed into place as ``get`` does; symlinks, FIFOs and (as root) device
    nodes are made as such, sockets skipped (they mean nothing without their process).
    ``source`` is the folder's path in ``view`` (``None``: a shared folder's root);
    ``shown``, as the user named it."""
    if destination.is_dir():
        destination = destination / os.fsdecode(folder.name)
    assert folder.tree_id is not None
    below = sorted((await view.subtree(folder.tree_id)).items())  # a folder before its content
    total = sum(entry.size for _, entry in below if entry.kind is EntryKind.FILE)
    seen: dict[bytes, ContentHash | None] = {}
    destination.mkdir(exist_ok=True)
    folders = [(destination, folder)]
    with ctx.transfer(f"get {show_bytes(folder.name)}", total) as transfer:
        for relative, entry in below:
            local = destination / os.fsdecode(relative)
            if entry.kind is EntryKind.DIR:
                local.mkdir(exist_ok=True)
                folders.append((local, entry))
            elif entry.kind is EntryKind.FILE:
                await download_to(view, entry, local, transfer, ctx.limiter)
                seen[relative if source is None else bytes(source) + b"/" + relative] = (
                    entry.content_hash
                )
            elif entry.kind is EntryKind.SOCKET:
                ctx.say(f"skipped the socket {shown}/{show_bytes(relative)}")
            else:
                if local.is_symlink() or local.exists():
                    local.unlink()
                if entry.kind is EntryKind.SYMLINK:
                    os.symlink(entry.target, local)
                elif entry.kind is EntryKind.FIFO:
                    os.mkfifo(local, entry.mode & 0o777)
                else:
                    try:
                        os.mknod(local, _KIND_FLAG[entry.kind] | entry.mode & 0o777, entry.rdev)
                    except PermissionError:  # only root makes device nodes
                        ctx.say(f"skipped the device node {shown}/{show_bytes(relative)}")
    for local, entry in reversed(folders):  # after their content: a read-only folder too
        os.chmod(local, entry.mode & 0o777)
        os.utime(local, ns=(time.time_ns(), entry.mtime_ns))
    remember(ctx.home, view, seen)
    files = sum(entry.kind is EntryKind.FILE for _, entry in below)
    ctx.say(f"got {shown} -> {destination} ({count(files, 'file')}, "
            f"{human_size(total)})")  # fmt: skip
    return ExitCode.OK


async def cmd_put(args: argparse.Namespace, ctx: Context) -> ExitCode:
    target = parse_remote_path(args.remote_path)
    local = Path(args.local_path)
    try:
        info = local.stat()
    except FileNotFoundError:
        raise NotFoundError("local file", str(local)) from None
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        raise UsageError(f"{local}: put takes a regular file or a folder")
    name = local_name(local)
    session = ctx.home.load_session()
    async with (
        session_remote(session) as remote,
        opened_drives(ctx.home, remote, ctx.limiter) as drives,
    ):
        view, where = await drives.at(target.path)
        require_writable(where)
        inner = RemoteTarget(where.path, target.inside or where.path is None, target.text)
        put = _put_tree if stat.S_ISDIR(info.st_mode) else _put_file
        return await put(ctx, view=view, where=where, local=local, info=info, name=name,
                         target=inner)  # fmt: skip


async def _put_file(
    ctx: Context,
    *,
    view: Drive,
    where: Location,
    local: Path,
    info: os.stat_result,
    name: bytes,
    target: RemoteTarget,
) -> ExitCode:
    """One file into ``target``, a path of ``view`` (``where`` shows it as the home's)."""
    destination = target.path
    existing = await view.lookup(destination) if destination is not None else None
    if destination is None or target.inside or (existing and existing.kind is EntryKind.DIR):
        destination = child_path(destination, name)
        existing = await view.lookup(destination)
    if existing is not None and existing.kind is EntryKind.DIR:
        raise ConflictError(show_path(where.outer(destination)), "is a folder on the drive")
    parents = await view.missing_parents(destination)
    remote_name = destination.name
    with ctx.transfer(f"put {local.name}", info.st_size) as transfer:
        uploader = ChunkUploader(view.remote, view.namespace_id, ctx.limiter, transfer)
        entry = await uploader.scan(lambda on_chunk: scan_file(local, remote_name, on_chunk))
    if existing is not None and same_leaf(existing, entry):
        remember(ctx.home, view, {bytes(destination): existing.content_hash})
        ctx.result(f"unchanged: {show_path(where.outer(destination))}")
        return ExitCode.OK
    seen = ctx.home.bases.get(view.namespace_id, bytes(destination))
    base = base_for_put(seen, existing)
    changes: list[Put | Mkdir] = [mkdir_op(parent) for parent in parents]
    changes.append(Put(destination, entry, base))
    results = await view.apply(changes)
    remember_puts(ctx.home, view, changes, results)
    shown = outer_results(where, results)
    ctx.result(describe_result(shown[-1]))
    for result in shown[:-1]:  # a parent folder that could not be made
        if result.status == "rejected":
            ctx.result(describe_result(result))
    ctx.say(_upload_summary(uploader.stats))
    return exit_for_results(results)


def _upload_summary(stats: UploadStats) -> str:
    return (
        f"sent {human_size(stats.sent_bytes)} in {count(stats.new_chunks, 'new chunk')} "
        f"({count(stats.chunks, 'chunk')}, {human_size(stats.scanned_bytes)} in all)"
    )


def _tree_size(local: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(local):
        for file_name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, file_name)).st_size
    return total


async def _put_tree(
    ctx: Context,
    *,
    view: Drive,
    where: Location,
    local: Path,
    info: os.stat_result,
    name: bytes,
    target: RemoteTarget,
) -> ExitCode:
    """A local folder mirrored into ``target``: created if missing, merged into if it
    exists (new and changed files put, unchanged ones left, nothing deleted). A target
    written with a trailing ``/`` or the root receives the folder under its own name."""
    destination = target.path
    if destination is None or target.inside:
        destination = child_path(destination, name)
    existing = await view.lookup(destination)
    if existing is not None and existing.kind is not EntryKind.DIR:
        raise ConflictError(
            show_path(where.outer(destination)), "exists on the drive and is not a folder"
        )
    remote_entries: dict[bytes, FileEntry] = {}
    changes: list[Put | Mkdir] = []
    if existing is None:
        changes.extend(mkdir_op(parent) for parent in await view.missing_parents(destination))
        changes.append(mkdir_op(destination, info))
    else:
        assert existing.tree_id is not None
        remote_entries = await view.subtree(existing.tree_id)
    total = _tree_size(local) if ctx.shows_progress else None
    with ctx.transfer(f"put {local.name}", total) as transfer:
        uploader = ChunkUploader(view.remote, view.namespace_id, ctx.limiter, transfer)
        built = await uploader.scan(lambda on_chunk: build_tree(local, on_chunk))
    files = folders = unchanged = 0
    local_entries = list(walk(MemoryTrees(built.new_trees), built.root))
    prefix = bytes(destination) + b"/"
    seen = ctx.home.bases.get_many(
        view.namespace_id, [prefix + relative for relative, _ in local_entries]
    )
    kept: dict[bytes, ContentHash | None] = {}
    for relative, entry in local_entries:
        path = protocol.DrivePath((*destination.components, *relative.split(b"/")))
        there = remote_entries.get(relative)
        if entry.kind is EntryKind.DIR:
            folders += 1
            if there is None or there.kind is not EntryKind.DIR:
                attrs = Attrs(entry.mode, entry.uid, entry.gid, entry.mtime_ns)
                changes.append(Mkdir(path, attrs))
            continue
        files += 1
        if there is not None and same_leaf(there, entry):
            unchanged += 1
            kept[bytes(path)] = there.content_hash
            continue
        base = base_for_put(seen.get(bytes(path)), there)
        changes.append(Put(path, entry, base))
    results = await view.apply(changes) if changes else []
    remember_puts(ctx.home, view, changes, results, also=kept)
    for result in outer_results(where, results):
        if result.status != "applied":
            ctx.result(describe_result(result))
    ctx.say(
        f"put {count(files, 'file')} and {count(folders, 'folder')} "
        f"into {show_path(where.outer(destination))}"
        + (f" ({unchanged} unchanged)" if unchanged else "")
    )
    ctx.say(_upload_summary(uploader.stats))
    return exit_for_results(results)


def _named_path(text: str, what: str) -> protocol.DrivePath:
    """A drive path that is not the root (which cannot be made, moved or removed)."""
    target = parse_remote_path(text)
    if target.path is None:
        raise UsageError(f"{what} needs a path on the drive, not its root")
    return target.path


def _report(
    ctx: Context, results: Sequence[protocol.OpResult], where: Location | None = None
) -> ExitCode:
    shown = results if where is None else outer_results(where, results)
    for result in shown:
        if result.status != "applied":
            ctx.result(describe_result(result))
    return exit_for_results(results)


async def _grouped(
    drives: Drives, paths: Sequence[protocol.DrivePath], *, follow_last: bool
) -> list[tuple[Drive, Location, list[Location]]]:
    """Each path's location, grouped by the namespace it is in (in the order first named):
    a drive, the location of its first path, and every location in it. A change in a shared
    folder one only views is refused here, before anything is sent."""
    groups: dict[NamespaceId, tuple[Drive, Location, list[Location]]] = {}
    for path in paths:
        view, where = await drives.at(path, follow_last=follow_last)
        require_writable(where)
        groups.setdefault(where.namespace_id, (view, where, []))[2].append(where)
    return list(groups.values())


async def cmd_mkdir(args: argparse.Namespace, ctx: Context) -> ExitCode:
    paths = [_named_path(text, "mkdir") for text in args.paths]
    session = ctx.home.load_session()
    code = ExitCode.OK
    async with (
        session_remote(session) as remote,
        opened_drives(ctx.home, remote, ctx.limiter) as drives,
    ):
        for view, first, locations in await _grouped(drives, paths, follow_last=True):
            wanted: dict[protocol.DrivePath, None] = {}
            for where in locations:
                path = where.path
                if path is None:  # a shared folder itself
                    if args.parents:
                        continue
                    raise ConflictError(show_path(where.mount_path), "exists already")
                entry = await view.lookup(path)
                if entry is not None:
                    if entry.kind is EntryKind.DIR and args.parents:
                        continue
                    raise ConflictError(show_path(where.outer(path)), "exists already")
                missing = await view.missing_parents(path)
                if missing and not args.parents:
                    raise NotFoundError("drive folder", show_path(where.outer(missing[-1])))
                wanted.update((folder, None) for folder in [*missing, path])
            results = await view.apply([mkdir_op(path) for path in wanted])
            for path in wanted:
                ctx.say(f"made {show_path(first.outer(path))}")
            code = max(code, _report(ctx, results, first))
    return code


async def cmd_mv(args: argparse.Namespace, ctx: Context) -> ExitCode:
    named = _named_path(args.source, "mv")
    target = parse_remote_path(args.destination)
    session = ctx.home.load_session()
    async with (
        session_remote(session) as remote,
        opened_drives(ctx.home, remote, ctx.limiter) as drives,
    ):
        # A shared folder named as the source is its mount entry, moved within the home.
        view, from_where = await drives.at(named, follow_last=False)
        source = from_where.path
        assert source is not None  # not the root, and a mount entry itself stays in the home
        if await view.lookup(source) is None:
            raise not_found(named)
        to_view, to_where = await drives.at(target.path)
        destination = to_where.path
        existing = None if destination is None else await to_view.lookup(destination)
        into = (
            destination is None
            or target.inside
            or (existing is not None and existing.kind is EntryKind.DIR)
        )
        if to_where.namespace_id != from_where.namespace_id:
            raise UsageError(
                f"cannot move {show_path(named)} to {target.text}: a move cannot leave "
                "or enter a shared folder (copy with get and put, then rm)"
            )
        require_writable(from_where)
        if into or destination is None:  # into a folder, under its own name, as mv(1) does
            destination = child_path(destination, source.name)
        elif (missing := await view.missing_parents(destination)) != []:
            raise NotFoundError("drive folder", show_path(to_where.outer(missing[-1])))
        if destination.is_within(source):
            raise UsageError(f"cannot move {show_path(named)} into itself")
        results = await view.apply([Move(source, destination)])
    code = _report(ctx, results, from_where)
    if code is ExitCode.OK:
        ctx.say(f"moved {show_path(named)} -> {show_path(from_where.outer(destination))}")
    return code


async def cmd_rm(args: argparse.Namespace, ctx: Context) -> ExitCode:
    paths = [_named_path(text, "rm") for text in args.paths]
    session = ctx.home.load_session()
    code = ExitCode.OK
    removed = 0
    async with (
        session_remote(session) as remote,
        opened_drives(ctx.home, remote, ctx.limiter) as drives,
    ):
        for view, first, locations in await _grouped(drives, paths, follow_last=False):
            deletes: list[Op] = []
            for where in locations:
                path = where.path
                assert path is not None  # a mount entry itself stays in the home
                shown = show_path(where.outer(path))
                entry = await view.lookup(path)
                if entry is None:
                    raise not_found(where.outer(path))
                if entry.kind is EntryKind.MOUNT:
                    raise UsageError(
                        f"{shown} is a shared folder: `boxfs leave {shown}` leaves it "
                        f"(its owner: `boxfs unshare {shown}`)"
                    )
                if entry.kind is EntryKind.DIR:
                    if not args.recursive:
                        raise UsageError(f"{shown} is a folder: rm -r removes it")
                    assert entry.tree_id is not None
                    below = await view.subtree(entry.tree_id)
                    if mounts := [rel for rel, e in below.items() if e.kind is EntryKind.MOUNT]:
                        held = show_path(where.outer(path)) + "/" + show_bytes(min(mounts))
                        raise UsageError(
                            f"{shown} holds the shared folder {held}: "
                            "move it out, leave it or unshare it first"
                        )
                    deletes.extend(deletes_below(path, below))
                deletes.append(Delete(path, entry.content_hash))
            results = await view.apply(deletes)
            code = max(code, _report(ctx, results, first))
            removed += sum(result.status == "applied" for result in results)
    ctx.say(f"removed {count(removed, 'entry')}")
    return code
