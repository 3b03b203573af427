"""The drive on a real FUSE mount, with a real server process: ordinary tools (cp, cmp,
mkdir, mv, rm -r, ls) on the mount, uploads reaching the server and another device,
``.versions`` hidden but reachable and read-only, hostile names, and clean unmounts
(SIGTERM of the mount process, and ``boxfs mount`` / ``boxfs unmount``).

Each test works in a folder of its own on the module's mount and removes it; every mount a
test starts is stopped in ``finally`` (``MountProcess.stop``: SIGTERM, then abort).
"""

from __future__ import annotations

import errno
import filecmp
import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from boxfs.mount import find_mount
from tests.fuse.conftest import MOUNT_STOP_TIMEOUT_S, Account, MountProcess, cli_ok, run_cli

pytestmark = pytest.mark.fuse

MIB = 1024 * 1024
UPLOAD_TIMEOUT_S = 30.0


def run(*argv: str | Path) -> None:
    subprocess.run([str(arg) for arg in argv], check=True, capture_output=True, timeout=60)


def wait_for_server(home: Path, folder: str, names: set[str]) -> None:
    """Poll the server's head (``boxfs ls`` from another device) until ``names`` are in
    ``folder``, bounded."""
    deadline = time.monotonic() + UPLOAD_TIMEOUT_S
    listed: set[str] = set()
    while time.monotonic() < deadline:
        result = run_cli(home, "ls", folder)
        if result.returncode == 0:
            listed = {line.strip().rstrip("/") for line in result.stdout.splitlines()}
            if names <= listed:
                return
        time.sleep(0.2)
    raise AssertionError(f"{sorted(names)} not on the server after {UPLOAD_TIMEOUT_S} s: {listed}")


def test_copied_files_read_back_through_the_mount_another_device_and_a_second_mount(
    drive: MountProcess, account: Account, tmp_path: Path
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello from the mount\n" * 100)
    binary = tmp_path / "blob.bin"
    binary.write_bytes(random.Random(4).randbytes(20 * MIB))
    folder = drive.mountpoint / "copied"
    folder.mkdir()
    try:
        run("cp", text, binary, folder)
        for local in (text, binary):
            assert filecmp.cmp(local, folder / local.name, shallow=False)

        phone = account.device_home(tmp_path / "phone-home", "phone")
        wait_for_server(phone, "/copied", {"notes.txt", "blob.bin"})
        fetched = tmp_path / "fetched.bin"
        cli_ok(phone, "-q", "get", "/copied/blob.bin", str(fetched))
        assert filecmp.cmp(binary, fetched, shallow=False)

        second = MountProcess(phone, tmp_path / "phone-mnt", tmp_path / "phone-mount.log")
        second.start()
        try:
            for local in (text, binary):
                copy = second.mountpoint / "copied" / local.name
                assert filecmp.cmp(local, copy, shallow=False), second.log_tail()
        finally:
            assert second.stop() == 0, second.log_tail()
        assert find_mount(second.mountpoint) is None
    finally:
        shutil.rmtree(folder)
    assert not folder.exists()


def test_the_mount_asks_the_kernel_for_1_mib_of_read_ahead(drive: MountProcess) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root may raise a mount's read-ahead (/sys/class/bdi)")
    info = find_mount(drive.mountpoint)
    assert info is not None
    read_ahead = Path(f"/sys/class/bdi/0:{info.device_minor}/read_ahead_kb")
    assert read_ahead.read_text().strip() == "1024"


def cached_bytes(path: Path) -> int:
    """How much of ``path`` the kernel's page cache holds, just after ``fincore`` opened
    it (an open answered without ``keep_cache`` drops it all)."""
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return int(out.strip())


def test_a_file_written_here_is_read_again_from_the_page_cache(drive: MountProcess) -> None:
    path = drive.mountpoint / "written.bin"
    data = random.Random(7).randbytes(3 * 1024 * 1024)
    path.write_bytes(data)
    assert path.read_bytes() == data
    assert cached_bytes(path) == len(data)  # a new open kept what the read cached
    with path.open("r+b") as edit:  # an edit in place goes through the cache too
        edit.seek(4096)
        edit.write(b"EDITED")
    edited = data[:4096] + b"EDITED" + data[4102:]
    assert path.read_bytes() == edited
    assert cached_bytes(path) == len(data)
    path.write_bytes(b"short")  # O_TRUNC: the kernel drops what lay past the new end
    assert path.read_bytes() == b"short"
    drop = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(drop, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(drop)
    assert path.read_bytes() == b"short"  # the same bytes from the mount itself


def test_a_directory_tree_is_created_renamed_and_removed(drive: MountProcess) -> None:
    top = drive.mountpoint / "tree"
    (top / "a" / "b").mkdir(parents=True)
    try:
        (top / "a" / "b" / "leaf.txt").write_bytes(b"leaf\n")
        (top / "a" / "top.txt").write_bytes(b"top\n")
        (top / "a").rename(top / "renamed")
        assert sorted(os.listdir(top)) == ["renamed"]
        assert (top / "renamed" / "b" / "leaf.txt").read_bytes() == b"leaf\n"
        assert (top / "renamed" / "top.txt").read_bytes() == b"top\n"
        run("rm", "-r", top / "renamed")
        assert os.listdir(top) == []
    finally:
        shutil.rmtree(top, ignore_errors=True)
    assert not top.exists()


def test_a_directory_larger_than_a_readdir_page_lists_every_entry_once(
    drive: MountProcess,
) -> None:
    folder = drive.mountpoint / "many"
    folder.mkdir()
    names = {f"file-{index:04d}-{'x' * 40}" for index in range(700)}
    try:
        for name in names:
            (folder / name).write_bytes(name.encode())
        listed = [entry.name for entry in os.scandir(folder)]
        assert len(listed) == len(names)
        assert set(listed) == names
        sizes = {entry.stat().st_size for entry in os.scandir(folder)}
        assert sizes == {len(next(iter(names)))}
    finally:
        shutil.rmtree(folder)
    assert not folder.exists()


def test_versions_is_not_listed_in_the_root_but_can_be_listed_by_name(
    drive: MountProcess,
) -> None:
    assert ".versions" not in os.listdir(drive.mountpoint)
    listed = subprocess.run(
        ["ls", drive.mountpoint / ".versions"], capture_output=True, text=True, check=False
    )
    assert listed.returncode == 0, listed.stderr
    assert (drive.mountpoint / ".versions").is_dir()


def test_writing_under_versions_fails_with_erofs(drive: MountProcess) -> None:
    versions = drive.mountpoint / ".versions"
    with pytest.raises(OSError) as created:
        (versions / "new.txt").write_bytes(b"no")
    assert created.value.errno == errno.EROFS
    with pytest.raises(OSError) as made:
        (versions / "new-folder").mkdir()
    assert made.value.errno == errno.EROFS


def test_a_256_byte_name_fails_with_enametoolong(drive: MountProcess) -> None:
    with pytest.raises(OSError) as raised:
        (drive.mountpoint / ("n" * 256)).write_bytes(b"x")
    assert raised.value.errno == errno.ENAMETOOLONG
    name_255 = drive.mountpoint / ("m" * 255)
    name_255.write_bytes(b"fits")
    try:
        assert name_255.read_bytes() == b"fits"
    finally:
        name_255.unlink()


def test_user_xattrs_are_kept_and_other_namespaces_are_not_supported(drive: MountProcess) -> None:
    path = drive.mountpoint / "tagged.txt"
    path.write_bytes(b"x")
    try:
        os.setxattr(path, "user.color", b"blue")
        assert os.getxattr(path, "user.color") == b"blue"
        assert os.listxattr(path) == ["user.color"]
        # ls -l asks these two of every entry; EOPNOTSUPP lets it stop after the first.
        for name in ("security.selinux", "system.posix_acl_access"):
            with pytest.raises(OSError) as raised:
                os.getxattr(path, name, follow_symlinks=False)
            assert raised.value.errno == errno.EOPNOTSUPP, name
        with pytest.raises(OSError) as raised:
            os.setxattr(path, "trusted.note", b"v")
        assert raised.value.errno == errno.EOPNOTSUPP
    finally:
        path.unlink()


def test_sigterm_waits_for_an_open_file_then_unmounts_and_leaves_no_mount_behind(
    account: Account, tmp_path: Path
) -> None:
    home = account.device_home(tmp_path / "home", "desk")
    mount = MountProcess(home, tmp_path / "mnt", tmp_path / "mount.log").start()
    try:
        (mount.mountpoint / "written-before-sigterm.txt").write_bytes(b"kept\n")
        with (mount.mountpoint / "open-during-sigterm.txt").open("wb") as held:
            held.write(b"held open\n")
            assert mount.process is not None
            mount.process.send_signal(signal.SIGTERM)
            time.sleep(1.5)  # the mount is busy: it keeps serving and retries the unmount
            assert find_mount(mount.mountpoint) is not None, mount.log_tail()
        # Closed: the next retry unmounts, with no second signal (that would force it).
        mount.process.wait(MOUNT_STOP_TIMEOUT_S)
    finally:
        code = mount.stop()
    assert code == 0, mount.log_tail()
    assert find_mount(mount.mountpoint) is None
    assert os.listdir(mount.mountpoint) == []  # the bare directory again
    for name, content in [
        ("written-before-sigterm.txt", b"kept\n"),
        ("open-during-sigterm.txt", b"held open\n"),
    ]:
        cli_ok(home, "-q", "get", f"/{name}", str(tmp_path / name))
        assert (tmp_path / name).read_bytes() == content


def test_boxfs_mount_in_the_background_and_boxfs_unmount(account: Account, tmp_path: Path) -> None:
    home = account.device_home(tmp_path / "home", "tablet")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    out = cli_ok(home, "mount", str(mountpoint), "--cache-size", "64M")
    match = re.search(r"pid (\d+)", out)
    assert match is not None, out
    pid = int(match.group(1))
    try:
        assert find_mount(mountpoint) is not None
        assert os.listdir(mountpoint) is not None
        again = run_cli(home, "mount", str(mountpoint))
        assert again.returncode == 2, again.stderr  # already mounted: a usage error
        cli_ok(home, "unmount", str(mountpoint))
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        assert not _alive(pid)
        assert find_mount(mountpoint) is None
        gone = run_cli(home, "unmount", str(mountpoint))
        assert gone.returncode == 2, gone.stderr
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
        if find_mount(mountpoint) is not None:
            MountProcess(home, mountpoint, tmp_path / "unused.log").abort()


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # not our child: ChildProcessError
    except ChildProcessError:
        pass
    else:
        if waited == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): look at its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_a_second_mount_of_the_same_device_home_is_refused_and_the_first_loses_nothing(
    account: Account, tmp_path: Path
) -> None:
    home = account.device_home(tmp_path / "home", "desk")
    first = MountProcess(home, tmp_path / "first", tmp_path / "first.log").start()
    try:
        (first.mountpoint / "before.txt").write_text("written before the second mount\n")
        staged_before = set(os.listdir(home / "staging"))
        second_point = tmp_path / "second"
        second_point.mkdir()
        # `boxfs mount` (background and --foreground) and the mount process itself.
        for argv in (
            ["mount", str(second_point)],
            ["mount", "--foreground", str(second_point)],
        ):
            refused = run_cli(home, *argv)
            assert refused.returncode == 9, (argv, refused.stdout, refused.stderr)
            assert refused.stderr.count("\n") == 1, refused.stderr
            assert "in use by another mount" in refused.stderr
            assert f"the mount at {first.mountpoint}" in refused.stderr
        direct = MountProcess(home, second_point, tmp_path / "second.log")
        with pytest.raises(RuntimeError, match="in use by another mount"):
            direct.start()
        assert find_mount(second_point) is None
        # The first mount's ready staged files are still there, and it keeps working:
        # small writes succeed, and every closed file reaches the server.
        assert staged_before <= set(os.listdir(home / "staging"))
        for number in range(20):
            (first.mountpoint / f"after-{number}.txt").write_text(f"file {number}\n")
        result = run_cli(home, "sync", "--timeout", "30")
        assert result.returncode == 0, (result.stdout, result.stderr)
        phone = account.device_home(tmp_path / "phone", "phone-of-desk")
        wait_for_server(phone, "/", {"before.txt", *(f"after-{n}.txt" for n in range(20))})
        assert "dropping the put" not in first.log_tail(400)
    finally:
        for name in ["before.txt", *(f"after-{n}.txt" for n in range(20))]:
            (first.mountpoint / name).unlink(missing_ok=True)
        assert first.stop() == 0, first.log_tail()


def test_a_folder_with_files_is_refused_as_a_mountpoint_unless_asked(
    account: Account, tmp_path: Path
) -> None:
    home = account.device_home(tmp_path / "home", "shelf")
    mountpoint = tmp_path / "full"
    mountpoint.mkdir()
    (mountpoint / "mine.txt").write_text("not to be hidden\n")
    refused = run_cli(home, "mount", str(mountpoint))
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert "not empty" in refused.stderr and "--nonempty" in refused.stderr
    assert find_mount(mountpoint) is None
    out = cli_ok(home, "mount", "--nonempty", str(mountpoint))
    match = re.search(r"pid (\d+)", out)
    assert match is not None, out
    try:
        assert "mine.txt" not in os.listdir(mountpoint)  # the drive is shown over it
    finally:
        cli_ok(home, "unmount", str(mountpoint))
        pid = int(match.group(1))
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if find_mount(mountpoint) is not None:
            MountProcess(home, mountpoint, tmp_path / "unused.log").abort()
    assert (mountpoint / "mine.txt").read_text() == "not to be hidden\n"


def test_ls_a_shows_dot_and_dotdot(drive: MountProcess) -> None:
    folder = drive.mountpoint / "dots"
    folder.mkdir()
    try:
        (folder / "file").write_text("x")
        listed = subprocess.run(
            ["ls", "-a1", str(folder)], capture_output=True, text=True, check=True
        ).stdout.split()
        assert listed == [".", "..", "file"]
        root = subprocess.run(
            ["ls", "-a1", str(drive.mountpoint)], capture_output=True, text=True, check=True
        ).stdout.split()
        assert root[:2] == [".", ".."] and "dots" in root
        assert os.stat(folder / ".").st_ino == os.stat(folder).st_ino
    finally:
        shutil.rmtree(folder)
