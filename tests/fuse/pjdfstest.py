"""pjdfstest, the public POSIX filesystem test suite, built and run on a real mount.

The suite's source is a tarball in the shared ``third_party`` folder beside the checkout
(``../shared/third_party/pjdfstest-*.tar.gz``, or the path in ``BOXFS_PJDFSTEST_TARBALL``);
it is not part of the project. ``build`` unpacks and builds it (``autoreconf -ifs &&
./configure && make pjdfstest``, as its README says) into a directory of the caller's.
``run`` executes ``.t`` files, each from a new empty directory inside the filesystem under
test, as root, as ``prove`` would (each file is a ``/bin/sh`` script printing TAP), and
parses their TAP output: the plan, each ``ok`` / ``not ok``, and a ``Bail out!`` (a ``not
ok`` marked ``# TODO``, a failure the suite expects on this system, passes, as prove counts
it). Files run ``jobs`` at a time.

Who uses it: ``tests/fuse/test_pjdfstest.py`` (every folder, checked against
``EXPECTED_FAILURES`` with ``unexpected_failures`` and ``passing_now``) and
``scripts/bench_posix.py`` (the same run with a per-folder table).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.fuse.pjdfstest_expected import Expected

REPO_ROOT = Path(__file__).resolve().parents[2]
THIRD_PARTY = REPO_ROOT.parent / "shared" / "third_party"
FILE_TIMEOUT_S = 600.0

_PLAN = re.compile(r"^1\.\.(\d+)")
_RESULT = re.compile(r"^(not )?ok (\d+)")
# A subtest the suite marks as a known failure on this system passes either way, as prove
# counts it (``not ok 5 # TODO Linux doesn't clear ...``).
_TODO = re.compile(r"#\s*TODO\b", re.IGNORECASE)


def find_tarball() -> Path | None:
    """The pjdfstest source tarball, or None when this checkout has none beside it."""
    explicit = os.environ.get("BOXFS_PJDFSTEST_TARBALL")
    if explicit:
        path = Path(explicit)
        return path if path.is_file() else None
    found = sorted(THIRD_PARTY.glob("pjdfstest-*.tar.gz"))
    return found[-1] if found else None


def missing_reason() -> str | None:
    if find_tarball() is None:
        return (
            f"pjdfstest's source is not here ({THIRD_PARTY}/pjdfstest-*.tar.gz, or "
            "BOXFS_PJDFSTEST_TARBALL): the POSIX suite was not run"
        )
    if os.geteuid() != 0:
        return "pjdfstest switches users and must run as root: the POSIX suite was not run"
    return None


def build(tarball: Path, dest: Path) -> Path:
    """Unpack and build pjdfstest under ``dest``; its source directory (with ``tests/``
    and the ``pjdfstest`` program). A directory already built is reused."""
    source = dest / "pjdfstest"
    if (source / "pjdfstest").is_file():
        return source
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-xzf", str(tarball), "-C", str(dest)], check=True)
    log = dest / "build.log"
    with log.open("wb") as out:
        for step in (["autoreconf", "-ifs"], ["./configure"], ["make", "pjdfstest"]):
            done = subprocess.run(
                step, check=False, cwd=source, stdout=out, stderr=subprocess.STDOUT
            )
            if done.returncode != 0:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"building pjdfstest failed at {' '.join(step)}:\n{tail}")
    return source


def suite_files(source: Path, folders: Iterable[str] | None = None) -> list[str]:
    """The ``.t`` files of the named folders (all when None), as ``folder/NN.t``, sorted."""
    tests = source / "tests"
    names = (
        sorted(folders)
        if folders is not None
        else sorted(entry.name for entry in tests.iterdir() if entry.is_dir())
    )
    return [f"{name}/{path.name}" for name in names for path in sorted((tests / name).glob("*.t"))]


@dataclass
class FileResult:
    """One ``.t`` file's outcome. ``planned`` is its plan (0 when it printed none);
    subtests it planned but never reported count as failed."""

    name: str
    planned: int = 0
    failed: list[int] = field(default_factory=list)
    bailed: str | None = None
    seconds: float = 0.0
    output: str = ""

    @property
    def folder(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def passed(self) -> int:
        return self.planned - len(self.failed)

    @property
    def ok(self) -> bool:
        return self.planned > 0 and not self.failed and self.bailed is None


def parse_tap(name: str, output: str) -> FileResult:
    result = FileResult(name, output=output)
    seen: dict[int, bool] = {}
    for line in output.splitlines():
        if (plan := _PLAN.match(line)) is not None:
            result.planned = int(plan.group(1))
        elif (outcome := _RESULT.match(line)) is not None:
            seen[int(outcome.group(2))] = outcome.group(1) is None or bool(_TODO.search(line))
        elif line.startswith("Bail out!"):
            result.bailed = line
    result.failed = [
        number for number in range(1, result.planned + 1) if not seen.get(number, False)
    ]
    return result


def run_file(source: Path, name: str, workdir: Path) -> FileResult:
    """One ``.t`` file, from a new directory under ``workdir`` (inside the mount)."""
    here = workdir / name.replace("/", "-")
    here.mkdir()
    started = time.monotonic()
    try:
        done = subprocess.run(
            ["/bin/sh", str(source / "tests" / name)],
            cwd=here,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=FILE_TIMEOUT_S,
            check=False,
        )
        output = done.stdout.decode(errors="replace")
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode(errors="replace")
        output += f"\nBail out! timed out after {FILE_TIMEOUT_S:.0f} s\n"
    result = parse_tap(name, output)
    result.seconds = time.monotonic() - started
    subprocess.run(["rm", "-rf", str(here)], check=False, capture_output=True)
    return result


def run(source: Path, names: list[str], workdir: Path, jobs: int = 2) -> Iterator[FileResult]:
    """Every named file, ``jobs`` at a time; results in the order named."""
    workdir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_file, source, name, workdir) for name in names]
        for future in futures:
            yield future.result()


@dataclass
class FolderTally:
    files: int = 0
    files_failed: int = 0
    subtests: int = 0
    subtests_failed: int = 0


def tally(results: Iterable[FileResult]) -> dict[str, FolderTally]:
    folders: dict[str, FolderTally] = {}
    for result in results:
        folder = folders.setdefault(result.folder, FolderTally())
        folder.files += 1
        folder.files_failed += not result.ok
        folder.subtests += max(result.planned, 1)
        folder.subtests_failed += len(result.failed) if result.planned else 1
    return folders


def unexpected_failures(
    results: Iterable[FileResult], expected: Mapping[str, Expected]
) -> dict[str, list[int]]:
    """Each file that failed outside ``expected``, with the subtests that did (all of its
    failures for an unlisted file or a bail-out, else those the list does not name)."""
    found: dict[str, list[int]] = {}
    for result in results:
        if result.ok:
            continue
        allowed = expected.get(result.name)
        if allowed is None or result.bailed is not None or result.planned == 0:
            found[result.name] = result.failed
        elif allowed.subtests is not None:
            beyond = [number for number in result.failed if number not in allowed.subtests]
            if beyond:
                found[result.name] = beyond
    return found


def passing_now(results: Iterable[FileResult], expected: Mapping[str, Expected]) -> list[str]:
    """The listed files that passed: the list should drop them."""
    return sorted(result.name for result in results if result.ok and result.name in expected)
