"""The POSIX conformance run (``scripts/bench posix``): pjdfstest, every folder (or the ones
named), on a real boxfs mount set up as a user would (``--allow-other
--preserve-ownership``), beside a plain local directory when ``--local`` is given.

What runs: a real ``boxfs-server`` with its own data directory, one account, one device
home, and ``python -m boxfs.mount MOUNTPOINT --allow-other --preserve-ownership``; pjdfstest
is built from ``../shared/third_party`` (``tests/fuse/pjdfstest.py``) in the scratch
directory, and each ``.t`` file runs from a new directory inside the mount, two at a time
(``--jobs``). Every process started here is stopped by its own PID; the scratch directory
is removed at the end.

Prints, per folder, ``posix.FOLDER.subtests_passed`` / ``_failed`` and ``files_failed``,
then the totals, then each failed file with its failed subtests and the first lines of its
failures (``--verbose``: all of them). ``--expected`` compares the failures with
``tests/fuse/pjdfstest_expected.py``: the run exits 1 when a file outside that list fails.
The mount's log is kept as ``--log`` when asked.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fuse import pjdfstest
from tests.fuse.conftest import MountProcess, register
from tests.fuse.pjdfstest_expected import EXPECTED_FAILURES
from tests.integration.server_process import ServerProcess

USERNAME = "posix-bench"


def emit(name: str, value: float, unit: str) -> None:
    print(f"{name} {value:g} {unit}", flush=True)


def report(prefix: str, results: list[pjdfstest.FileResult], verbose: bool) -> None:
    folders = pjdfstest.tally(results)
    total = pjdfstest.FolderTally()
    for name, folder in sorted(folders.items()):
        emit(f"{prefix}.{name}.subtests_passed", folder.subtests - folder.subtests_failed, "tests")
        emit(f"{prefix}.{name}.subtests_failed", folder.subtests_failed, "tests")
        emit(f"{prefix}.{name}.files_failed", folder.files_failed, "files")
        total.files += folder.files
        total.files_failed += folder.files_failed
        total.subtests += folder.subtests
        total.subtests_failed += folder.subtests_failed
    emit(f"{prefix}.files", total.files, "files")
    emit(f"{prefix}.files_failed", total.files_failed, "files")
    emit(f"{prefix}.subtests", total.subtests, "tests")
    emit(f"{prefix}.subtests_failed", total.subtests_failed, "tests")
    if total.subtests:
        emit(f"{prefix}.pass_rate", 100 * (1 - total.subtests_failed / total.subtests), "%")
    for result in sorted(results, key=lambda item: item.name):
        if result.ok:
            continue
        failing = [line for line in result.output.splitlines() if line.startswith("not ok")]
        print(
            f"# {prefix} {result.name}: {len(result.failed)} of {result.planned} failed"
            f"{' (' + result.bailed + ')' if result.bailed else ''}: {result.failed[:40]}",
            file=sys.stderr,
        )
        for line in failing if verbose else failing[:3]:
            print(f"#     {line[:200]}", file=sys.stderr)


def compare_expected(results: list[pjdfstest.FileResult]) -> dict[str, list[int]]:
    """Prints and returns the failures outside the expected list; prints the listed files
    that pass now."""
    unexpected = pjdfstest.unexpected_failures(results, EXPECTED_FAILURES)
    fixed = pjdfstest.passing_now(results, EXPECTED_FAILURES)
    if fixed:
        print(f"# passing now, drop from the expected failures: {fixed}", file=sys.stderr)
    for name, subtests in sorted(unexpected.items()):
        print(f"# failing and not expected to: {name} {subtests[:40]}", file=sys.stderr)
    return unexpected


def run_on_mount(
    source: Path, names: list[str], scratch: Path, jobs: int, log: Path | None
) -> list[pjdfstest.FileResult]:
    """Starts a server, an account and a mount as a user would, runs the suite inside the
    mount, and stops them all."""
    server: ServerProcess | None = None
    mount: MountProcess | None = None
    try:
        server = ServerProcess(scratch / "server").start()
        account = register(server, USERNAME, scratch / "registrar")
        home = account.device_home(scratch / "home", "laptop")
        mount = MountProcess(
            home, scratch / "mnt", scratch / "mount.log",
            options=("--allow-other", "--preserve-ownership"),
        ).start()  # fmt: skip
        return list(pjdfstest.run(source, names, mount.mountpoint / "pjdfstest", jobs))
    finally:
        if mount is not None:
            mount.stop()
            if log is not None:
                shutil.copyfile(mount.log_path, log)
        if server is not None:
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", help="pjdfstest folders (default: all)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--local", action="store_true", help="run on a local directory too")
    parser.add_argument("--expected", action="store_true", help="fail on an unlisted failure")
    parser.add_argument("--verbose", action="store_true", help="every failing line")
    parser.add_argument("--log", type=Path, help="keep the mount's log here")
    args = parser.parse_args()
    reason = pjdfstest.missing_reason()
    if reason is None and not os.path.exists("/dev/fuse"):
        reason = "/dev/fuse is missing: this machine cannot mount FUSE"
    tarball = pjdfstest.find_tarball()
    if reason is not None or tarball is None:
        print(f"bench posix: {reason}", file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="boxfs-bench-posix-"))
    # The suite's other users (uid 65534 and the like) must reach the mount inside.
    os.chmod(scratch, 0o755)  # noqa: S103
    try:
        source = pjdfstest.build(tarball, scratch / "build")
        names = pjdfstest.suite_files(source, args.folders or None)
        print(f"# pjdfstest from {tarball.name}: {len(names)} files", file=sys.stderr)
        if args.local:
            started = time.monotonic()
            local = list(pjdfstest.run(source, names, scratch / "local", args.jobs))
            report("posix_local", local, args.verbose)
            emit("posix_local.seconds", time.monotonic() - started, "s")
        started = time.monotonic()
        results = run_on_mount(source, names, scratch, args.jobs, args.log)
        report("posix", results, args.verbose)
        emit("posix.seconds", time.monotonic() - started, "s")
        unexpected = compare_expected(results)
        return 1 if args.expected and unexpected else 0
    finally:
        if (scratch / "mnt").is_mount():
            print(f"bench posix: still mounted, not removing {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
