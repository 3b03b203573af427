"""pjdfstest, every folder, on a real mount set up as a user would (``--allow-other
--preserve-ownership``), with a real server process: the run fails when a file fails
outside ``EXPECTED_FAILURES`` (``tests/fuse/pjdfstest_expected.py``) and when a listed
file passes (the list may only shrink). A full run takes about two minutes here with two
jobs; ``scripts/bench posix`` prints the same run as a per-folder table.

pjdfstest is built from ``../shared/third_party`` (``tests/fuse/pjdfstest.py``); without
it, or without root, the test is skipped and says why. The suite switches to other users
(65534 and the like), so the mount lives in a directory they can reach, made here and
removed at the end.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuse import pjdfstest
from tests.fuse.conftest import Account, MountProcess
from tests.fuse.pjdfstest_expected import EXPECTED_FAILURES, Expected

pytestmark = pytest.mark.fuse


@pytest.fixture(scope="module")
def reachable_dir() -> Iterator[Path]:
    reason = pjdfstest.missing_reason()
    if reason is not None:
        print(f"\ntests/fuse/test_pjdfstest.py skipped: {reason}", file=sys.stderr)
        pytest.skip(reason)
    scratch = Path(tempfile.mkdtemp(prefix="boxfs-pjdfstest-"))
    # The suite's other users must reach the mount through every directory above it.
    os.chmod(scratch, 0o755)  # noqa: S103
    try:
        yield scratch
    finally:
        if (scratch / "mnt").is_mount():
            print(f"still mounted, not removing {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def describe(results: list[pjdfstest.FileResult], names: dict[str, list[int]]) -> str:
    """Each named file's unexpected subtests, its bail-out, and its first failing lines."""
    lines = []
    for result in results:
        if result.name not in names:
            continue
        bailed = f" ({result.bailed})" if result.bailed else ""
        lines.append(f"{result.name}: {names[result.name][:40]}{bailed}")
        failing = [line for line in result.output.splitlines() if line.startswith("not ok")]
        lines += [f"    {line[:200]}" for line in failing[:5]]
    return "\n".join(lines)


def test_pjdfstest_passes_every_folder_but_what_is_listed(
    account: Account, reachable_dir: Path
) -> None:
    tarball = pjdfstest.find_tarball()
    assert tarball is not None  # missing_reason said it is there
    source = pjdfstest.build(tarball, reachable_dir / "build")
    names = pjdfstest.suite_files(source)
    assert len(names) > 200, names  # the whole suite, not a folder of it
    home = account.device_home(reachable_dir / "home", "laptop")
    mount = MountProcess(
        home, reachable_dir / "mnt", reachable_dir / "mount.log",
        options=("--allow-other", "--preserve-ownership"),
    ).start()  # fmt: skip
    try:
        results = list(pjdfstest.run(source, names, mount.mountpoint / "pjdfstest", jobs=2))
    finally:
        code = mount.stop()
    assert code == 0, f"the mount did not stop cleanly ({code}):\n{mount.log_tail()}"
    assert [result.name for result in results] == names
    unexpected = pjdfstest.unexpected_failures(results, EXPECTED_FAILURES)
    assert not unexpected, "failing and not expected to:\n" + describe(results, unexpected)
    fixed = pjdfstest.passing_now(results, EXPECTED_FAILURES)
    assert not fixed, f"passing now, drop them from EXPECTED_FAILURES: {fixed}"
    subtests = sum(result.planned for result in results)
    failed = sum(len(result.failed) for result in results)
    print(f"\npjdfstest: {subtests - failed} of {subtests} subtests passed", file=sys.stderr)


def test_tap_outcomes_and_the_expected_list_are_read_as_prove_would() -> None:
    output = "1..5\nok 1\nnot ok 2 - tried\nnot ok 3 # TODO known here\nok 5\n"
    result = pjdfstest.parse_tap("rename/00.t", output)
    assert (result.planned, result.failed, result.ok) == (5, [2, 4], False)  # 4 never ran
    bailed = pjdfstest.parse_tap("open/00.t", "1..3\nok 1\nBail out! no space\n")
    assert bailed.bailed == "Bail out! no space" and bailed.failed == [2, 3]
    silent = pjdfstest.parse_tap("mkdir/00.t", "")
    expected = {"rename/00.t": Expected("a reason", frozenset({2})), "link/00.t": Expected("r")}
    assert pjdfstest.unexpected_failures([result, bailed, silent], expected) == {
        "rename/00.t": [4],
        "open/00.t": [2, 3],
        "mkdir/00.t": [],
    }
    passing = pjdfstest.parse_tap("link/00.t", "1..1\nok 1\n")
    assert passing.ok
    assert pjdfstest.passing_now([passing, result], expected) == ["link/00.t"]
