"""Ordinary tools on a real mount of the drive, with a real server process: ``cp -r``,
``rsync -a`` and ``diff -r`` of a tree with a large file, ``tar x`` of a real source tarball
compared byte for byte, ``git`` init/add/commit, an SQLite database, renaming and deleting
directories, an open file that is unlinked and still read, old content under
``.versions/<snapshot>/`` after an edit, the cache budget holding on a cold mount that reads
three times its size, and hostile input (a 256-byte name, writing into ``.versions``).

Byte comparisons are made three ways: right after writing (the kernel's page cache), after
dropping the page cache of the written files (the mount's read path), and through a fresh
mount of a new device with an empty cache once the uploads have landed (the server's copy).
Needs ``rsync`` and ``git`` (installed by ``scripts/_setup``).

Each test works in a folder of its own on the module's mount (``drive``) and removes it;
every extra mount a test starts is stopped in ``finally``.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import sqlite3
import subprocess
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from store.cache import ObjectCache
from tests.fuse.conftest import Account, MountProcess
from tests.fuse.test_mount import wait_for_server

pytestmark = pytest.mark.fuse

MIB = 1024 * 1024
LARGE_FILE_BYTES = 200 * MIB
TOOL_TIMEOUT_S = 120.0
VERSIONS_TIMEOUT_S = 30.0
SMALL_CACHE_BYTES = 16 * MIB
TARBALL_MTIME_S = 1_700_000_000


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(arg) for arg in argv],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
        cwd=cwd,
    )
    assert result.returncode == 0, (argv, result.stdout[-2000:], result.stderr[-2000:])
    return result.stdout


@pytest.fixture
def folder(drive: MountProcess, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A folder of the test's own on the module's mount, removed afterwards."""
    path = drive.mountpoint / request.node.name[:100]
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
    assert not path.exists()


def drop_page_cache(root: Path) -> None:
    """Drop the kernel's cached pages of every file under ``root`` (POSIX_FADV_DONTNEED), so
    the next read goes through the mount's read path, not the page cache of the writes."""
    for directory, _, names in os.walk(root):
        for name in names:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def diff_through_a_cold_mount(
    account: Account, folder: Path, tmp_path: Path, pairs: list[tuple[Path, str]]
) -> None:
    """Wait until ``folder`` has reached the server (the uploader sends in order: a marker
    written last landing means every change before it did), then ``diff -r`` each local
    tree against its path under ``folder`` on a fresh mount of a new device (empty cache:
    every byte comes from the server)."""
    (folder / "zz-uploaded.marker").write_bytes(b"last\n")
    home = account.device_home(tmp_path / "cold-home", "cold-reader")
    wait_for_server(home, f"/{folder.name}", {"zz-uploaded.marker"})
    cold = MountProcess(home, tmp_path / "cold-mnt", tmp_path / "cold-mount.log").start()
    try:
        for local, relative in pairs:
            run("diff", "-r", "--no-dereference", local, cold.mountpoint / folder.name / relative)
    finally:
        assert cold.stop() == 0, cold.log_tail()


def make_tree(root: Path, large_bytes: int) -> None:
    """Text and binary files in nested folders, one of them ``large_bytes`` long."""
    rng = random.Random(7)
    (root / "docs" / "deep" / "deeper").mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "empty").mkdir()
    for index in range(20):
        (root / "docs" / f"note-{index}.txt").write_text(f"line {index}\n" * (index * 50 + 1))
    (root / "docs" / "deep" / "deeper" / "leaf.md").write_text("# leaf\n")
    (root / "docs" / "empty.txt").write_bytes(b"")
    for index in range(5):
        (root / "bin" / f"blob-{index}.bin").write_bytes(rng.randbytes(rng.randrange(1, 3 * MIB)))
    with (root / "bin" / "large.bin").open("wb") as large:
        written = 0
        while written < large_bytes:  # random throughout: no chunk repeats
            piece = rng.randbytes(min(8 * MIB, large_bytes - written))
            large.write(piece)
            written += len(piece)
    os.chmod(root / "bin" / "blob-0.bin", 0o600)
    os.symlink("../docs/note-3.txt", root / "bin" / "note-link")


def test_cp_r_and_rsync_a_of_a_tree_with_a_large_file_compare_equal_with_diff_r(
    account: Account, folder: Path, tmp_path: Path
) -> None:
    source = tmp_path / "tree"
    source.mkdir()
    make_tree(source, LARGE_FILE_BYTES)
    run("cp", "-r", source, folder / "copied")
    run("diff", "-r", source, folder / "copied")
    run("rsync", "-a", f"{source}/", f"{folder / 'synced'}/")
    run("diff", "-r", source, folder / "synced")
    drop_page_cache(folder)
    run("diff", "-r", source, folder / "copied")
    run("diff", "-r", folder / "copied", folder / "synced")
    # rsync -a keeps the mode and the mtime.
    local = (source / "bin" / "blob-0.bin").stat()
    synced = (folder / "synced" / "bin" / "blob-0.bin").stat()
    assert synced.st_mode & 0o777 == 0o600
    assert synced.st_mtime_ns == local.st_mtime_ns
    assert os.readlink(folder / "synced" / "bin" / "note-link") == "../docs/note-3.txt"
    # A second rsync finds nothing to send; after a change and a removal, only those.
    again = run("rsync", "-a", "--itemize-changes", f"{source}/", f"{folder / 'synced'}/")
    assert again.strip() == "", again
    edited = source / "docs" / "note-5.txt"
    edited.write_text("changed\n")
    os.utime(edited, ns=(local.st_mtime_ns + 10**10, local.st_mtime_ns + 10**10))
    (source / "docs" / "note-6.txt").unlink()
    changes = run(
        "rsync", "-a", "--delete", "--itemize-changes", f"{source}/", f"{folder / 'synced'}/"
    ).split()
    assert "docs/note-5.txt" in changes and "docs/note-6.txt" in changes, changes
    run("diff", "-r", "--no-dereference", source, folder / "synced")
    shutil.rmtree(folder / "copied")
    run("cp", "-r", source, folder / "copied")
    diff_through_a_cold_mount(account, folder, tmp_path, [(source, "copied"), (source, "synced")])


@pytest.fixture(scope="module")
def source_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deterministic tarball of this interpreter's standard library sources (a few
    thousand files; no bytecode, no extension modules)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    tarball = tmp_path_factory.mktemp("tarball") / "stdlib.tar"
    run(
        "tar", "c", "-f", tarball, "--sort=name", f"--mtime=@{TARBALL_MTIME_S}", "--owner=0",
        "--group=0", "--numeric-owner", "--exclude=__pycache__", "--exclude=site-packages",
        "--exclude=lib-dynload", "--exclude=config-*", "-C", stdlib.parent, stdlib.name,
    )  # fmt: skip
    return tarball


def test_tar_x_of_a_source_tarball_matches_the_local_extraction_byte_for_byte(
    account: Account, folder: Path, tmp_path: Path, source_tarball: Path
) -> None:
    members = run("tar", "t", "-f", source_tarball).splitlines()
    files = [name for name in members if not name.endswith("/")]
    assert 2000 <= len(files) <= 5000, len(files)
    local = tmp_path / "local"
    local.mkdir()
    run("tar", "x", "-f", source_tarball, "-C", local)
    run("tar", "x", "-f", source_tarball, "-C", folder)
    run("diff", "-r", "--no-dereference", local, folder)
    drop_page_cache(folder)
    run("diff", "-r", "--no-dereference", local, folder)
    on_mount = sum(len(names) for _, _, names in os.walk(folder))
    assert on_mount == len(files)
    # tar x sets each member's mtime (the tarball's, fixed) and mode.
    for directory, _, names in os.walk(folder):
        for name in names[:3]:
            extracted = os.lstat(os.path.join(directory, name))
            original = os.lstat(local / os.path.relpath(directory, folder) / name)
            assert extracted.st_mtime_ns == original.st_mtime_ns == TARBALL_MTIME_S * 10**9
            assert extracted.st_mode == original.st_mode
    (top,) = os.listdir(local)
    diff_through_a_cold_mount(account, folder, tmp_path, [(local / top, top)])


def test_git_init_add_and_commit_inside_the_mount_leave_a_clean_status(folder: Path) -> None:
    repo = folder / "repo"
    repo.mkdir()
    (repo / "src").mkdir()
    (repo / "README.md").write_text("# a repo on the drive\n")
    (repo / "src" / "main.py").write_text("print('hello')\n")
    (repo / "src" / "data.bin").write_bytes(random.Random(3).randbytes(300_000))
    git = ("git", "-c", "user.name=Box Test", "-c", "user.email=box@example.com")
    run(*git, "init", "-q", "-b", "main", cwd=repo)
    run(*git, "add", "-A", cwd=repo)
    run(*git, "commit", "-q", "-m", "first commit on the drive", cwd=repo)
    assert run(*git, "status", "--porcelain", cwd=repo) == ""
    log = run(*git, "log", "--oneline", cwd=repo)
    assert "first commit on the drive" in log
    assert len(log.splitlines()) == 1
    run(*git, "fsck", "--strict", cwd=repo)
    # A second commit on top, after an edit.
    (repo / "README.md").write_text("# a repo on the drive\nedited\n")
    assert "README.md" in run(*git, "status", "--porcelain", cwd=repo)
    run(*git, "commit", "-q", "-am", "second", cwd=repo)
    assert run(*git, "status", "--porcelain", cwd=repo) == ""
    assert len(run(*git, "log", "--oneline", cwd=repo).splitlines()) == 2
    # Repacking (new pack files, loose objects removed) and a clone, both on the mount.
    run(*git, "gc", "-q", cwd=repo)
    run(*git, "fsck", "--strict", cwd=repo)
    run("git", "clone", "-q", "--no-local", repo, folder / "clone")
    assert (folder / "clone" / "README.md").read_text() == "# a repo on the drive\nedited\n"


def test_an_sqlite_database_on_the_mount_keeps_its_rows_and_passes_integrity_check(
    folder: Path,
) -> None:
    path = folder / "app.sqlite3"
    db = sqlite3.connect(path)
    try:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, payload BLOB)")
        rng = random.Random(5)
        for batch in range(10):
            with db:  # one transaction per 100 rows
                db.executemany(
                    "INSERT INTO items (name, payload) VALUES (?, ?)",
                    [(f"item-{batch}-{n}", rng.randbytes(200)) for n in range(100)],
                )
    finally:
        db.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT count(*) FROM items").fetchone() == (1000,)
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT name FROM items WHERE id = 1000").fetchone() == ("item-9-99",)
    finally:
        db.close()
    assert not (folder / "app.sqlite3-journal").exists()


def test_directories_are_renamed_and_deleted_with_their_contents(folder: Path) -> None:
    (folder / "a" / "b" / "c").mkdir(parents=True)
    (folder / "a" / "b" / "c" / "leaf.txt").write_bytes(b"leaf\n")
    (folder / "a" / "one.txt").write_bytes(b"one\n")
    (folder / "other").mkdir()
    (folder / "a").rename(folder / "other" / "moved")
    assert sorted(os.listdir(folder)) == ["other"]
    assert (folder / "other" / "moved" / "b" / "c" / "leaf.txt").read_bytes() == b"leaf\n"
    run("mv", folder / "other" / "moved" / "b", folder / "b-renamed")
    assert (folder / "b-renamed" / "c" / "leaf.txt").read_bytes() == b"leaf\n"
    assert os.listdir(folder / "other" / "moved") == ["one.txt"]
    # Replacing an empty directory by rename; a non-empty one refuses.
    (folder / "empty-target").mkdir()
    os.rename(folder / "b-renamed", folder / "empty-target")
    assert (folder / "empty-target" / "c" / "leaf.txt").read_bytes() == b"leaf\n"
    with pytest.raises(OSError) as not_empty:
        os.rename(folder / "other", folder / "empty-target")
    assert not_empty.value.errno in (errno.ENOTEMPTY, errno.EEXIST)
    with pytest.raises(OSError) as rmdir_full:
        os.rmdir(folder / "other")
    assert rmdir_full.value.errno == errno.ENOTEMPTY
    run("rm", "-r", folder / "other", folder / "empty-target")
    assert os.listdir(folder) == []


def test_a_file_opened_then_unlinked_is_still_read_until_closed(folder: Path) -> None:
    path = folder / "doomed.bin"
    content = random.Random(11).randbytes(3 * MIB)
    path.write_bytes(content)
    with path.open("rb") as held:
        assert held.read(10) == content[:10]
        path.unlink()
        assert not path.exists()
        assert os.listdir(folder) == []
        assert held.read() == content[10:]
        held.seek(0)
        assert held.read() == content
        assert os.fstat(held.fileno()).st_size == len(content)
    assert os.listdir(folder) == []


def _snapshots_holding(versions: Path, relative: Path, content: bytes) -> list[str]:
    found = []
    for snapshot in sorted(os.listdir(versions)):
        try:
            if (versions / snapshot / relative).read_bytes() == content:
                found.append(snapshot)
        except OSError:
            continue
    return found


def _poll_snapshots(versions: Path, relative: Path, content: bytes) -> list[str]:
    deadline = time.monotonic() + VERSIONS_TIMEOUT_S
    while time.monotonic() < deadline:
        found = _snapshots_holding(versions, relative, content)
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{relative} with {content!r} in no snapshot of {versions}")


def test_the_content_before_an_edit_is_found_under_versions(
    drive: MountProcess, folder: Path
) -> None:
    versions = drive.mountpoint / ".versions"
    path = folder / "draft.txt"
    relative = path.relative_to(drive.mountpoint)
    path.write_bytes(b"first draft\n")
    first = _poll_snapshots(versions, relative, b"first draft\n")
    with path.open("r+b") as edited:
        edited.seek(0)
        edited.write(b"final")
    assert path.read_bytes() == b"final draft\n"
    second = _poll_snapshots(versions, relative, b"final draft\n")
    assert not set(first) & set(second)
    # The old content is still there, read-only, in the snapshot that had it.
    assert (versions / first[0] / relative).read_bytes() == b"first draft\n"
    with pytest.raises(OSError) as written:
        (versions / first[0] / relative).write_bytes(b"no")
    assert written.value.errno == errno.EROFS


def test_the_cache_budget_holds_on_a_cold_mount_reading_three_times_its_size(
    drive: MountProcess, account: Account, folder: Path, tmp_path: Path
) -> None:
    rng = random.Random(13)
    contents = {f"part-{index}.bin": rng.randbytes(8 * MIB) for index in range(6)}
    assert sum(map(len, contents.values())) == 3 * SMALL_CACHE_BYTES
    for name, content in contents.items():
        (folder / name).write_bytes(content)
    home = account.device_home(tmp_path / "cold-home", "cold")
    wait_for_server(home, f"/{folder.name}", set(contents))

    cold = MountProcess(
        home, tmp_path / "cold-mnt", tmp_path / "cold-mount.log", cache_size="16M"
    ).start()
    try:
        for name, content in contents.items():
            assert (cold.mountpoint / folder.name / name).read_bytes() == content, cold.log_tail()
    finally:
        assert cold.stop() == 0, cold.log_tail()
    cache = ObjectCache.open(home / "cache", readonly=True)
    try:
        stats = cache.stats()
        cache.verify()
    finally:
        cache.close()
    assert stats.budget_bytes == SMALL_CACHE_BYTES
    assert 0 < stats.stored_bytes <= SMALL_CACHE_BYTES, stats
    assert (home / "cache" / "data.mdb").stat().st_size <= 4 * SMALL_CACHE_BYTES + 64 * MIB


def test_hostile_input_a_256_byte_name_and_writes_into_versions_fail(
    drive: MountProcess, folder: Path
) -> None:
    for make in (
        lambda: (folder / ("n" * 256)).write_bytes(b"x"),
        (folder / ("d" * 256)).mkdir,
        lambda: (folder / ("s" * 256)).symlink_to("target"),
    ):
        with pytest.raises(OSError) as too_long:
            make()
        assert too_long.value.errno == errno.ENAMETOOLONG
    (folder / "ok.txt").write_bytes(b"ok")
    with pytest.raises(OSError) as renamed:
        os.rename(folder / "ok.txt", folder / ("r" * 256))
    assert renamed.value.errno == errno.ENAMETOOLONG
    assert os.listdir(folder) == ["ok.txt"]

    versions = drive.mountpoint / ".versions"
    for make in (
        lambda: (versions / "new.txt").write_bytes(b"no"),
        (versions / "new-folder").mkdir,
        lambda: os.rename(folder / "ok.txt", versions / "ok.txt"),
    ):
        with pytest.raises(OSError) as read_only:
            make()
        assert read_only.value.errno == errno.EROFS
    snapshots = os.listdir(versions)
    if snapshots:
        snapshot = versions / snapshots[0]
        with pytest.raises(OSError) as inside:
            (snapshot / "new.txt").write_bytes(b"no")
        assert inside.value.errno == errno.EROFS
        with pytest.raises(OSError) as removed:
            shutil.rmtree(snapshot)
        assert removed.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
