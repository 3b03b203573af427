"""The mount's wiring: builds every part of a mounted drive, runs them, and shuts them down.

Owns the root trio nursery of a mount and the order of its life:

1. Start: the device home, held by this process (``Home.hold``: a second mount of it
   fails) and its session (``load_session``), ``Remote`` (which asks the home for a newer
   session when the server refuses its own), the LMDB ``ObjectCache`` (budget from
   ``--cache-size``), ``Journal``, the home namespace (from the server; offline, the one
   the journal remembers a view of), ``Staging`` (sweeping the staged files a crash left
   that no journal entry names), ``Fetcher``, ``Uploader``, ``StagePool``, the
   ``FileSystemModel`` (``start`` loads the head, or offline the head the view last
   showed), the ``Syncer`` (subscribed to the uploader's answers), then
   ``fuse_ops.init_session`` with ``fsname=boxfs``, ``subtype=boxfs``,
   ``default_permissions``, ``allow_other`` only when asked, and the user's ``-o``
   options (1 MiB requests come from libfuse's ``max_pages``, a 1 MiB ``st_blksize`` and,
   where permitted, a 1 MiB read-ahead on the mount's backing device; ``max_read`` cannot
   be set through pyfuse3, see ``fuse_ops.mount_options``). One nursery
   runs ``fuse_ops.run_session`` (pyfuse3.main), ``Fetcher.run``, ``Uploader.run``,
   ``Syncer.run`` (the event stream and the view following it), ``Notifier.run`` (kernel
   invalidations, from worker threads), ``SharedFolders`` (each shared folder's fetcher,
   uploader and syncer, opened when the view first meets its mount entry, or at the start
   for one the journal holds entries of) and the signal watcher.
2. Stop, on SIGTERM / SIGINT / SIGHUP or an external ``fusermount3 -u``: a signal first
   unmounts the normal way (``fusermount3 -u``, so the kernel flushes dirty pages and sends
   the last releases while the session still serves them); while the mount is busy this is
   retried for ``BUSY_UNMOUNT_RETRY_S``; after that, or on a second signal, the session is
   terminated and detached lazily (dirty pages the kernel still held for files open at
   that moment are then lost; what was closed or fsynced is journaled). Once the session
   has ended no request is accepted; the uploaders (the home's and each shared folder's)
   then get ``drain_timeout_s`` to empty the journal (none after ``NO_WAIT_SIGNAL``, what
   ``boxfs unmount --no-wait`` sends).
   What it could not send stays journaled (logged, with the count) and the next mount
   resumes it: nothing is dropped. Then the background tasks are cancelled, the session
   closed (unmounting if still mounted), and the journal, cache and HTTP client closed.

Must not: import pyfuse3 (``boxfs.fuse_ops`` wraps what is needed), hold filesystem logic
(that is ``boxfs.view``), or end the process on a failing background task (the uploader
and fetcher never let failures escape ``run``).

Who calls it: ``python -m boxfs.mount`` (what ``boxfs mount`` starts, detached, for a
background mount) and ``boxfs mount --foreground`` through ``run_mount``, on the main
thread; everything here runs on that one trio loop.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import trio

from boxfs import fuse_ops
from boxfs.errors import BoxfsError, UsageError
from boxfs.fetcher import Fetcher
from boxfs.home import Home, Session
from boxfs.journal import Journal
from boxfs.notifier import Notifier
from boxfs.remote import Remote
from boxfs.shared_folders import SharedFolders
from boxfs.stage_pool import StagePool
from boxfs.staging import Staging
from boxfs.uploader import Uploader
from boxfs.view import FileSystemModel, NamespacePorts
from boxfs.view.syncer import Syncer
from store import protocol
from store.cache import ObjectCache
from store.errors import StoreError
from store.ids import NamespaceId

log = logging.getLogger(__name__)

FS_NAME: Final = "boxfs"
JOURNAL_FILE_NAME: Final = "journal.sqlite3"
MOUNT_LOG_NAME: Final = "mount.log"  # the background mount's log, in the home's data dir
# Written in the home's data dir while a mount of that home serves: "PID\nMOUNTPOINT\n"
# (read by `boxfs status` and `boxfs sync`); removed when the mount ends.
MOUNT_PID_NAME: Final = "mount.pid"
DEFAULT_CACHE_BYTES: Final = 2 * 1024**3
DEFAULT_DRAIN_TIMEOUT_S: Final = 30.0
DRAIN_PROGRESS_EVERY_S: Final = 2.0
BUSY_UNMOUNT_RETRY_S: Final = 10.0
UNMOUNT_COMMAND: Final = "fusermount3"
LAST_HEAD_TIMEOUT_S: Final = 5.0  # showing the server's head once more at unmount
READ_AHEAD_KB: Final = 1024  # the kernel then sends 1 MiB read requests (max_pages is 256)
# `boxfs unmount --no-wait` sends this: unmount, and leave what is pending in the journal.
NO_WAIT_SIGNAL: Final = signal.SIGUSR1

_SIZE_PATTERN: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)?\s*$", re.IGNORECASE)
_SIZE_UNITS: Final = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """``"512M"``, ``"2G"``, ``"1.5GiB"``, ``"1048576"`` → bytes (binary units). A size
    that is not one, or is zero, is a ``UsageError``."""
    match = _SIZE_PATTERN.match(text)
    if match is None:
        raise UsageError(f"not a size: {text!r} (try 512M or 2G)")
    size_bytes = math.floor(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])
    if size_bytes <= 0:
        raise UsageError(f"the size must be positive: {text!r}")
    return size_bytes


@dataclass(frozen=True, slots=True)
class MountConfig:
    mountpoint: Path
    cache_size_bytes: int = DEFAULT_CACHE_BYTES
    allow_other: bool = False
    preserve_ownership: bool = False
    options: tuple[str, ...] = field(default_factory=tuple)  # the user's -o options
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    nonempty: bool = False  # mount over a folder that has files (they are hidden meanwhile)


def _unescape_mountinfo(text: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as octal.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


@dataclass(frozen=True, slots=True)
class MountInfo:
    mountpoint: str
    fstype: str
    device_minor: int  # N in /sys/fs/fuse/connections/N


def find_mount(mountpoint: os.PathLike[str] | str) -> MountInfo | None:
    """The last mount at ``mountpoint`` in /proc/self/mountinfo, if any."""
    # Resolve the parent only: a stat of the mountpoint itself would go to the mount, and
    # hang if its session no longer answers.
    absolute = os.path.abspath(mountpoint)
    wanted = os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))
    found: MountInfo | None = None
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as lines:
        for line in lines:
            fields = line.split()
            # id parent major:minor root mountpoint options [optional...] - fstype source ...
            if len(fields) < 7 or "-" not in fields:
                continue
            separator = fields.index("-")
            if _unescape_mountinfo(fields[4]) != wanted or separator + 1 >= len(fields):
                continue
            minor = int(fields[2].split(":")[1])
            found = MountInfo(wanted, fields[separator + 1], minor)
    return found


def is_boxfs_mount(mountpoint: os.PathLike[str] | str) -> bool:
    info = find_mount(mountpoint)
    return info is not None and info.fstype in (f"fuse.{FS_NAME}", "fuse")


def check_mountpoint(mountpoint: Path, *, nonempty: bool = False) -> Path:
    """The absolute mountpoint, or a ``UsageError`` naming what is wrong with it. A folder
    with files in it is refused unless ``nonempty`` (the drive would hide them, as fuse
    refuses without its ``nonempty`` option)."""
    path = mountpoint.expanduser().absolute()
    if is_boxfs_mount(path):  # checked first: a stat of a dead mount fails with ENOTCONN
        raise UsageError(
            f"{path}: a boxfs drive is already mounted there (`boxfs unmount {path}` "
            "if its process is gone)"
        )
    if not path.is_dir():
        raise UsageError(f"{path}: not a directory (create it first)")
    if not nonempty:
        try:
            with os.scandir(path) as entries:
                has_files = next(entries, None) is not None
        except OSError as exc:
            raise UsageError(f"{path}: cannot read it: {exc.strerror}") from exc
        if has_files:
            raise UsageError(
                f"{path}: the folder is not empty; the drive would hide its files "
                "(empty it, pick another folder, or pass --nonempty)"
            )
    return path


async def _unmount_externally(mountpoint: Path) -> bool:
    """``fusermount3 -u``: the kernel flushes and releases while the session serves.
    False if it failed (busy, or the tool is missing)."""
    tool = shutil.which(UNMOUNT_COMMAND)
    if tool is None:
        return False
    result = await trio.run_process([tool, "-u", str(mountpoint)], check=False, capture_stderr=True)
    if result.returncode != 0:
        log.warning("%s -u failed: %s", UNMOUNT_COMMAND, result.stderr.decode(errors="replace"))
    return result.returncode == 0


@dataclass
class _Stop:
    """How the mount is asked to end."""

    requested: trio.Event = field(default_factory=trio.Event)
    no_wait: bool = False  # leave pending uploads journaled instead of draining them


async def _follow(
    scope: trio.CancelScope, syncer: Syncer, shared: SharedFolders, model: FileSystemModel
) -> None:
    """The syncers (the home's, the shared folders') and the notifier, until ``scope`` is
    cancelled."""
    notifier = Notifier(model, fuse_ops.invalidate_entry, fuse_ops.invalidate_inode)
    with scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(syncer.run)
            nursery.start_soon(shared.follow)
            nursery.start_soon(notifier.run)


def _drain_timeout_s(config: MountConfig, stop: _Stop) -> float:
    if stop.no_wait:
        log.info("asked not to wait for uploads: what is pending stays journaled")
        return 0.0
    return config.drain_timeout_s


async def _watch_signals(mountpoint: Path, stop: _Stop) -> None:
    """First SIGTERM/SIGINT/SIGHUP (or ``NO_WAIT_SIGNAL``: the same, without draining the
    uploads afterwards): unmount cleanly, retrying while the mount is busy (open files, a
    shell inside) for up to ``BUSY_UNMOUNT_RETRY_S``, then terminate the session. Second
    signal: terminate at once."""
    stopping = stop.requested
    watched = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, NO_WAIT_SIGNAL)
    with trio.open_signal_receiver(*watched) as signals:
        async with trio.open_nursery() as nursery:
            async for signum in signals:
                if signum == NO_WAIT_SIGNAL:
                    stop.no_wait = True
                if not stopping.is_set():
                    stopping.set()
                    log.info("%s: unmounting %s", signal.Signals(signum).name, mountpoint)
                    nursery.start_soon(_unmount_or_terminate, mountpoint)
                    continue
                log.info("a second signal: terminating the session")
                fuse_ops.terminate_session()
                nursery.cancel_scope.cancel()
                return


async def _unmount_or_terminate(mountpoint: Path) -> None:
    with trio.move_on_after(BUSY_UNMOUNT_RETRY_S):
        while not await _unmount_externally(mountpoint):
            log.info("the mount is busy; retrying (signal again to force)")
            await trio.sleep(1.0)
        return  # run_session returns once the kernel lets go
    log.warning("still busy after %.0f s: terminating the session", BUSY_UNMOUNT_RETRY_S)
    fuse_ops.terminate_session()


async def _swept_staging(home: Home, journal: Journal) -> Staging:
    """The staging directory, without the files a crash left that no journal entry names."""
    staging = Staging(home.staging_dir)
    swept = await trio.to_thread.run_sync(lambda: staging.sweep(journal.staged_names()))
    if swept:
        log.info("removed %d staged files no journal entry names", len(swept))
    return staging


def _worker_limiter() -> trio.CapacityLimiter:
    """Threads for CPU work and LMDB/SQLite: one per CPU, at least two."""
    return trio.CapacityLimiter(max(2, os.cpu_count() or 2))


async def run_mount(
    config: MountConfig,
    *,
    home: Home | None = None,
    on_mounted: Callable[[], None] | None = None,
) -> int:
    """Mount the home drive at ``config.mountpoint`` and serve it until unmounted.
    Returns the number of operations left journaled (0: everything reached the server)."""
    home = home or Home.from_env()
    mountpoint = check_mountpoint(config.mountpoint, nonempty=config.nonempty)
    # Before anything of the home is touched: a second mount of it would sweep the staged
    # files of the first away (`Staging.sweep` knows only its own journal's names).
    with home.hold(f"the mount at {mountpoint}"):
        return await _run_held(config, home, mountpoint, on_mounted)


async def _run_held(
    config: MountConfig, home: Home, mountpoint: Path, on_mounted: Callable[[], None] | None
) -> int:
    session = home.load_session()
    limiter = _worker_limiter()
    remote = Remote(session.server_url, session.token, renew=_stored_token(home, session))
    cache: ObjectCache | None = None
    journal: Journal | None = None
    mounted = False
    left = 0
    try:
        cache = await trio.to_thread.run_sync(
            ObjectCache.open, home.cache_dir, config.cache_size_bytes
        )
        opened_journal = await trio.to_thread.run_sync(
            Journal, home.journal_dir / JOURNAL_FILE_NAME
        )
        journal = opened_journal
        namespace_id = await _home_namespace(remote, opened_journal)
        fetcher, uploader, syncer, model, stage_pool, shared = await _build_drive(
            config, home, remote, cache, opened_journal, namespace_id=namespace_id, limiter=limiter
        )
        async with trio.open_nursery() as nursery:
            await _start_drive(nursery, fetcher, model, uploader, stage_pool, shared=shared)
            fuse_ops.init_session(fuse_ops.BoxfsOperations(model), mountpoint, _options(config))
            nursery.start_soon(_raise_read_ahead, mountpoint)
            # Following the server ends before the session closes: the notifier must not
            # talk to a session being torn down.
            following = trio.CancelScope()
            nursery.start_soon(_follow, following, syncer, shared, model)
            mounted = _record_mounted(home, mountpoint)
            log.info("mounted %s (%s) at %s", session.username, session.server_url, mountpoint)
            if on_mounted is not None:
                on_mounted()
            stop = _Stop()
            nursery.start_soon(_watch_signals, mountpoint, stop)
            await fuse_ops.run_session()  # until unmounted or terminated
            stop.requested.set()
            following.cancel()
            # Close at once: after a terminate the kernel may still hold requests that only
            # closing the session's /dev/fuse descriptor answers (ENOTCONN).
            mounted = False
            fuse_ops.close_session(unmount=find_mount(mountpoint) is not None)
            log.info("the session ended; no more requests are accepted")
            timeout_s = _drain_timeout_s(config, stop)
            left = await _drain(uploader, journal, namespace_id, timeout_s)
            left += await shared.drain(timeout_s)
            await syncer.show_latest(LAST_HEAD_TIMEOUT_S)
            await shared.show_latest(LAST_HEAD_TIMEOUT_S)
            nursery.cancel_scope.cancel()
    finally:
        _remove_pid_file(home)
        if mounted:
            fuse_ops.close_session(unmount=find_mount(mountpoint) is not None)
        if journal is not None:
            journal.close()
        if cache is not None:
            cache.close()
        with trio.CancelScope(shield=True):
            await remote.aclose()
    return left


async def _start_drive(
    nursery: trio.Nursery,
    fetcher: Fetcher,
    model: FileSystemModel,
    uploader: Uploader,
    stage_pool: StagePool,
    *,
    shared: SharedFolders,
) -> None:
    """The drive's background jobs, and its view, before the session serves a request."""
    await nursery.start(fetcher.run)
    await nursery.start(shared.run)
    # The model replays the journal's unconfirmed entries onto the head view first; an
    # uploader already running could confirm some in between and they would be missing
    # from the view.
    await model.start()
    nursery.start_soon(uploader.run)
    nursery.start_soon(stage_pool.run)
    await shared.open_pending()


async def _raise_read_ahead(mountpoint: Path) -> None:
    """Let the kernel read ahead ``READ_AHEAD_KB`` on this mount (its default is 128 KiB,
    so sequential reads would arrive as 128 KiB requests), where permitted (root, or a
    writable /sys); elsewhere the default stays and reads still work. Only once the kernel
    has the session's INIT reply (a stat of the mountpoint, served by this loop, returns):
    processing that reply caps the read-ahead at what INIT negotiated."""
    try:
        await trio.to_thread.run_sync(os.stat, mountpoint)
    except OSError as exc:
        log.info("kernel read-ahead left at its default (stat: %s)", exc.strerror)
        return
    info = find_mount(mountpoint)
    if info is None:
        return
    path = Path(f"/sys/class/bdi/0:{info.device_minor}/read_ahead_kb")
    try:
        await trio.to_thread.run_sync(path.write_text, f"{READ_AHEAD_KB}\n")
    except OSError as exc:
        log.info("kernel read-ahead left at its default (%s: %s)", path, exc.strerror)


async def _build_drive(
    config: MountConfig,
    home: Home,
    remote: Remote,
    cache: ObjectCache,
    journal: Journal,
    *,
    namespace_id: NamespaceId,
    limiter: trio.CapacityLimiter,
) -> tuple[Fetcher, Uploader, Syncer, FileSystemModel, StagePool, SharedFolders]:
    """The home namespace's fetcher, uploader and syncer, the filesystem model, the stage
    pool, and the shared folders (each opened with its own fetcher, uploader and syncer,
    on the same remote, cache and journal, when the view first meets its mount entry)."""
    staging = await _swept_staging(home, journal)
    fetcher = Fetcher(remote, namespace_id, cache, limiter)
    uploader = Uploader(journal, staging, remote, namespace_id, limiter)
    stage_pool = StagePool(staging, limiter)
    shared = SharedFolders(
        home_id=namespace_id, remote=remote, cache=cache, journal=journal, staging=staging,
        limiter=limiter,
    )  # fmt: skip
    model = FileSystemModel(
        home=NamespacePorts(
            namespace_id=namespace_id, remote=remote, fetcher=fetcher, uploader=uploader
        ),
        journal=journal,
        staging=staging,
        limiter=limiter,
        uid=os.getuid(),
        gid=os.getgid(),
        preserve_ownership=config.preserve_ownership,
        stage_pool=stage_pool,
        open_namespace=shared.open,
    )
    shared.bind(model)
    # The model needs the uploader (to nudge it), the syncer the model; the syncer hears
    # the uploader's answers through the relay the uploader made.
    syncer = Syncer(model, remote, namespace_id, uploads=uploader.answers)
    return fetcher, uploader, syncer, model, stage_pool, shared


async def _home_namespace(remote: Remote, journal: Journal) -> NamespaceId:
    """The account's home namespace; with the server unreachable, the one this device's
    view was last shown for (an offline start), if there is exactly one."""
    try:
        return (await remote.home()).namespace_id
    except protocol.UnavailableError:
        remembered = await trio.to_thread.run_sync(journal.view_namespaces)
        if len(remembered) != 1:
            raise
        log.warning("the server is unreachable: mounting offline from this device's view")
        return remembered[0]


def _stored_token(home: Home, session: Session) -> Callable[[], str | None]:
    """What the mount asks when the server refuses its session (logged out, or revoked
    from another device): the token of a newer ``boxfs login`` of the same account on the
    same server, if this home holds one. The file is a few hundred bytes: read on the loop."""

    def token() -> str | None:
        try:
            stored = home.read_state().session
        except BoxfsError:
            return None
        if stored is None or (stored.server_url, stored.username) != (
            session.server_url,
            session.username,
        ):
            return None
        return stored.token

    return token


def _record_mounted(home: Home, mountpoint: Path) -> bool:
    """Write the pid file (``MOUNT_PID_NAME``) of a mount now serving; True."""
    path = home.data_dir / MOUNT_PID_NAME
    temporary = path.with_name(f"{MOUNT_PID_NAME}.{os.getpid()}.tmp")
    temporary.write_text(f"{os.getpid()}\n{mountpoint}\n", encoding="utf-8")
    os.replace(temporary, path)
    return True


def _remove_pid_file(home: Home) -> None:
    """Only this process's pid file: a newer mount of the home may have written its own."""
    path = home.data_dir / MOUNT_PID_NAME
    try:
        if path.read_text(encoding="utf-8").split("\n", 1)[0] == str(os.getpid()):
            path.unlink()
    except (OSError, ValueError):
        pass


def _options(config: MountConfig) -> set[str]:
    return fuse_ops.mount_options(
        subtype=FS_NAME,
        allow_other=config.allow_other,
        extra=config.options,
    )


async def _drain(
    uploader: Uploader, journal: Journal, namespace_id: NamespaceId, timeout_s: float
) -> int:
    """Wait (bounded) for the journal to empty, logging progress every few seconds; the
    number of operations left in it."""

    async def report() -> None:
        while True:
            await trio.sleep(DRAIN_PROGRESS_EVERY_S)
            progress = await uploader.progress()
            log.info(
                "waiting for uploads: %d operations, %d bytes staged%s",
                progress.pending_ops,
                progress.bytes_to_upload,
                "" if progress.online else " (the server is unreachable)",
            )

    with trio.move_on_after(timeout_s):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(report)
            await uploader.wait_idle()
            nursery.cancel_scope.cancel()
    left: int = await trio.to_thread.run_sync(journal.count, namespace_id)
    if left:
        log.warning(
            "%d operations are not on the server yet; they stay journaled and upload on "
            "the next mount",
            left,
        )
    else:
        log.info("every change is on the server")
    return left


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m boxfs.mount", description="Mount the home drive (in the foreground)."
    )
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("--cache-size", default=None, help="object cache budget, e.g. 2G")
    parser.add_argument("--allow-other", action="store_true")
    parser.add_argument("--preserve-ownership", action="store_true")
    parser.add_argument("-o", dest="options", action="append", default=[], metavar="OPT")
    parser.add_argument("--drain-timeout", type=float, default=DEFAULT_DRAIN_TIMEOUT_S)
    parser.add_argument("--nonempty", action="store_true", help="mount over a folder with files")
    parser.add_argument("--debug", action="store_true", help="log every detail")
    return parser


def config_from(
    mountpoint: Path,
    *,
    cache_size: str | None,
    allow_other: bool,
    preserve_ownership: bool,
    options: Sequence[str],
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
    nonempty: bool = False,
) -> MountConfig:
    split = tuple(opt for group in options for opt in group.split(",") if opt)
    # fuse 2's `-o nonempty`, which libfuse 3 no longer knows: the same as --nonempty.
    nonempty = nonempty or "nonempty" in split
    return MountConfig(
        nonempty=nonempty,
        mountpoint=mountpoint,
        cache_size_bytes=parse_size(cache_size) if cache_size else DEFAULT_CACHE_BYTES,
        allow_other=allow_other,
        preserve_ownership=preserve_ownership,
        options=tuple(opt for opt in split if opt != "nonempty"),
        drain_timeout_s=drain_timeout_s,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Foreground mount: 0 after a clean unmount, 1 on an error (one line on stderr)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.debug:  # one line per HTTP request would grow a background mount's log fast
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        config = config_from(
            args.mountpoint,
            cache_size=args.cache_size,
            allow_other=args.allow_other,
            preserve_ownership=args.preserve_ownership,
            options=args.options,
            drain_timeout_s=args.drain_timeout,
            nonempty=args.nonempty,
        )
        trio.run(run_mount, config)
    except (BoxfsError, StoreError, OSError) as exc:  # a user's or the server's problem
        print(f"boxfs: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the mount was up (after, SIGINT unmounts)
        print("boxfs: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
