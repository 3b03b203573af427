"""``boxfs mount`` / ``boxfs unmount`` mistakes without a kernel or a server: each is one
``boxfs: ...`` line and its documented exit code; the size parser behind ``--cache-size``;
and that the other commands run without loading the mount (and pyfuse3). (Real mounts:
tests/fuse.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from boxfs.cli import ExitCode, main
from boxfs.errors import UsageError
from boxfs.home import Home, Session
from boxfs.mount import find_mount, parse_size


def logged_in(home: Path) -> None:
    Home(home).save_session(Session("http://127.0.0.1:9", "token", "session", "someone", "laptop"))


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("boxfs: ")
    return err[0]


def test_mount_when_not_logged_in_is_an_auth_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BOXFS_HOME", str(tmp_path / "home"))
    assert main(["mount", str(tmp_path)]) == ExitCode.AUTH
    assert "not logged in" in one_line(capsys)


def test_mount_on_a_missing_directory_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    logged_in(tmp_path / "home")
    monkeypatch.setenv("BOXFS_HOME", str(tmp_path / "home"))
    assert main(["mount", str(tmp_path / "nowhere")]) == ExitCode.USAGE
    assert "not a directory" in one_line(capsys)


def test_mount_with_a_bad_cache_size_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    logged_in(tmp_path / "home")
    monkeypatch.setenv("BOXFS_HOME", str(tmp_path / "home"))
    assert main(["mount", str(tmp_path), "--cache-size", "lots"]) == ExitCode.USAGE
    assert "not a size" in one_line(capsys)


def test_unmount_of_a_directory_that_is_not_mounted_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BOXFS_HOME", str(tmp_path / "home"))
    assert main(["unmount", str(tmp_path)]) == ExitCode.USAGE
    assert "no boxfs drive is mounted" in one_line(capsys)


def test_commands_other_than_mount_run_without_loading_pyfuse3(tmp_path: Path) -> None:
    # A process of its own: this test session has imported the mount already.
    probe = (
        "import sys; from boxfs.cli import main; code = main(['whoami']); "
        "print(code, 'boxfs.mount' in sys.modules, 'pyfuse3' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={"BOXFS_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.split() == [str(int(ExitCode.AUTH)), "False", "False"]


@pytest.mark.parametrize(
    ("text", "size_bytes"),
    [("1048576", 1 << 20), ("512M", 512 << 20), ("2G", 2 << 30), ("1.5GiB", 3 << 29),
     ("64k", 64 << 10), ("1T", 1 << 40)],
)  # fmt: skip
def test_parse_size_reads_binary_units(text: str, size_bytes: int) -> None:
    assert parse_size(text) == size_bytes


@pytest.mark.parametrize("text", ["", "lots", "0", "-1G", "2X", "1.2.3M"])
def test_parse_size_refuses_what_is_not_a_positive_size(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


def test_find_mount_sees_the_root_and_not_a_plain_directory(tmp_path: Path) -> None:
    assert find_mount("/") is not None
    assert find_mount(tmp_path) is None
