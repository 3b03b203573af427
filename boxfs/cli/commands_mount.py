"""``mount`` and ``unmount``: hand the drive over to ``boxfs.mount`` and back.

``boxfs.mount`` pulls in pyfuse3 and the filesystem, which no other command needs: it is
imported inside these commands only. A background mount is ``python -m boxfs.mount``
started detached, its log in the home's data directory; ``mount`` waits until the mount
appears or the child fails. ``unmount`` runs ``fusermount3 -u`` and then watches the
journal (read-only, ``boxfs.cli.device_state``) while the mount process uploads what is
pending, bounded; ``--no-wait`` signals the process to leave it journaled instead. Called
by ``parser.main``, in one ``trio.run``.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Final

import trio

from boxfs.cli.device_state import journal_count, journal_path_of, running_mount
from boxfs.cli.exit_codes import ExitCode
from boxfs.cli.output import Context, count
from boxfs.errors import BoxfsError, UsageError

MOUNT_WAIT_S: Final = 60.0  # how long `boxfs mount` waits for a background mount to appear


def _mount_child_command(args: argparse.Namespace, mountpoint: Path) -> list[str]:
    """``python -m boxfs.mount`` with this command's options: the background mount."""
    command = [sys.executable, "-m", "boxfs.mount", str(mountpoint)]
    if args.cache_size:
        command += ["--cache-size", args.cache_size]
    if args.allow_other:
        command.append("--allow-other")
    if args.preserve_ownership:
        command.append("--preserve-ownership")
    if args.nonempty:
        command.append("--nonempty")
    for option in args.options:
        command += ["-o", option]
    return command


async def cmd_mount(args: argparse.Namespace, ctx: Context) -> ExitCode:
    # Imported here: the mount pulls in pyfuse3 and the filesystem, which no other
    # command needs.
    from boxfs import mount  # noqa: PLC0415

    ctx.home.load_session()  # not logged in: one line now, not a dead background child
    config = mount.config_from(
        Path(args.mountpoint),
        cache_size=args.cache_size,
        allow_other=args.allow_other,
        preserve_ownership=args.preserve_ownership,
        options=args.options,
        nonempty=args.nonempty,
    )
    mountpoint = mount.check_mountpoint(config.mountpoint, nonempty=config.nonempty)
    ctx.home.check_free()  # mounted already from this home: one line now, as above
    if args.foreground:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per request
        left = await mount.run_mount(
            config, home=ctx.home, on_mounted=lambda: ctx.say(f"mounted at {mountpoint}")
        )
        if left:
            ctx.say(f"{count(left, 'operation')} left journaled: they upload on the next mount")
        return ExitCode.OK
    log_path = ctx.home.data_dir / mount.MOUNT_LOG_NAME
    with log_path.open("ab") as log_file:
        child = await trio.lowlevel.open_process(
            _mount_child_command(args, mountpoint),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,  # detached: a closed terminal does not end the mount
        )
    with trio.move_on_after(MOUNT_WAIT_S):
        while child.poll() is None:
            if mount.is_boxfs_mount(mountpoint):
                ctx.result(f"mounted at {mountpoint} (pid {child.pid}, log: {log_path})")
                return ExitCode.OK
            await trio.sleep(0.05)
        raise BoxfsError(f"the mount failed: {_last_line(log_path)} (log: {log_path})")
    raise BoxfsError(f"no mount at {mountpoint} after {MOUNT_WAIT_S:.0f} s; see {log_path}")


def _last_line(log_path: Path) -> str:
    """The background mount's last words (its one-line error), from the end of its log."""
    try:
        with log_path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 4096))
            lines = log.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1].removeprefix("boxfs: ") if lines else "no output"


async def cmd_unmount(args: argparse.Namespace, ctx: Context) -> ExitCode:
    from boxfs import mount  # noqa: PLC0415  (as in cmd_mount)

    mountpoint = Path(args.mountpoint).expanduser().absolute()
    if not mount.is_boxfs_mount(mountpoint):
        raise UsageError(f"{mountpoint}: no boxfs drive is mounted there")
    if args.no_wait:
        return await _unmount_no_wait(ctx, mountpoint)
    result = await trio.run_process(
        [mount.UNMOUNT_COMMAND, "-u", str(mountpoint)], check=False, capture_stderr=True
    )
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip().splitlines()
        raise BoxfsError(f"cannot unmount {mountpoint}: {reason[-1] if reason else 'failed'}")
    ctx.say(f"unmounted {mountpoint}")
    journal_path = journal_path_of(ctx.home)
    left = await _wait_for_uploads(ctx, journal_path, mount.DEFAULT_DRAIN_TIMEOUT_S + 5.0)
    if left:
        ctx.say(f"{count(left, 'operation')} left journaled: they upload on the next mount")
    return ExitCode.OK


UNMOUNT_NO_WAIT_S: Final = 30.0  # how long `unmount --no-wait` waits for the process to end


async def _unmount_no_wait(ctx: Context, mountpoint: Path) -> ExitCode:
    """Ask this home's mount process to unmount and end without uploading what is pending
    (``mount.NO_WAIT_SIGNAL``); it stays in the journal for the next mount."""
    from boxfs import mount  # noqa: PLC0415  (as in cmd_mount)

    running = running_mount(ctx.home)
    if running is None or Path(running.mountpoint) != mountpoint:
        raise UsageError(
            f"{mountpoint} is not mounted from this device's home ({ctx.home.data_dir}); "
            "set BOXFS_HOME to the home that mounted it"
        )
    os.kill(running.pid, mount.NO_WAIT_SIGNAL)
    with trio.move_on_after(UNMOUNT_NO_WAIT_S):
        while running_mount(ctx.home) is not None:
            await trio.sleep(0.05)
        ctx.say(f"unmounted {mountpoint}")
        left = await trio.to_thread.run_sync(journal_count, journal_path_of(ctx.home))
        if left:
            ctx.say(f"{count(left, 'operation')} left journaled: they upload on the next mount")
        else:
            ctx.say("nothing was pending: every change is on the server")
        return ExitCode.OK
    raise BoxfsError(f"the mount process {running.pid} has not ended after {UNMOUNT_NO_WAIT_S} s")


async def _wait_for_uploads(ctx: Context, journal_path: Path, timeout_s: float) -> int:
    """Watch this home's journal (read-only) while the unmounted drive's process uploads
    what is pending, bounded; the number of operations still pending at the end."""
    left = await trio.to_thread.run_sync(journal_count, journal_path)
    shown = -1
    with trio.move_on_after(timeout_s):
        while left:
            if left != shown:
                ctx.say(f"waiting for {count(left, 'pending operation')} to upload")
                shown = left
            await trio.sleep(0.2)
            left = await trio.to_thread.run_sync(journal_count, journal_path)
    return left
