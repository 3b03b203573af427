"""The device home: where it is, the session file's modes, atomic rewrites, corrupt and
missing files, the isolation of two homes, and the bases of later puts."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from boxfs import home as home_module
from boxfs.errors import HomeError, NotLoggedInError
from boxfs.home import Home, HomeState, Session, default_device_name
from store.ids import NamespaceId, content_hash_of

SESSION = Session(
    server_url="http://127.0.0.1:8470",
    token="t" * 43,
    session_id="0" * 32,
    username="alice",
    device_name="laptop",
)


def mode_of(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_boxfs_home_holds_everything_when_set(tmp_path: Path) -> None:
    home = Home.from_env({"BOXFS_HOME": str(tmp_path / "dev"), "HOME": str(tmp_path)})
    assert home.config_dir == home.data_dir == tmp_path / "dev"
    assert home.session_path == tmp_path / "dev" / "session.json"
    assert home.cache_dir == tmp_path / "dev" / "cache"


def test_without_boxfs_home_config_and_data_follow_xdg(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")}
    home = Home.from_env(env)
    assert home.config_dir == tmp_path / ".config" / "boxfs"
    assert home.data_dir == tmp_path / "data" / "boxfs"
    relative = Home.from_env({"HOME": str(tmp_path), "XDG_CONFIG_HOME": "relative/dir"})
    assert relative.config_dir == tmp_path / ".config" / "boxfs"  # the XDG spec ignores it
    assert relative.data_dir == tmp_path / ".local" / "share" / "boxfs"


def test_session_file_is_0600_in_a_0700_directory(tmp_path: Path) -> None:
    home = Home(tmp_path / "dev")
    home.save_session(SESSION)
    assert mode_of(home.session_path) == 0o600
    assert mode_of(home.config_dir) == 0o700
    assert home.load_session() == SESSION
    assert SESSION.token not in repr(SESSION)


def test_an_existing_loose_home_directory_is_tightened_to_0700(tmp_path: Path) -> None:
    loose = tmp_path / "dev"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    Home(loose).save_session(SESSION)
    assert mode_of(loose) == 0o700


def test_cache_journal_and_staging_dirs_are_created_0700_on_demand(tmp_path: Path) -> None:
    home = Home(tmp_path / "config", tmp_path / "data")
    assert not (tmp_path / "data").exists()
    for directory in (home.cache_dir, home.journal_dir, home.staging_dir):
        assert directory.parent == tmp_path / "data"
        assert directory.is_dir()
        assert mode_of(directory) == 0o700
    assert mode_of(tmp_path / "data") == 0o700


def test_a_rewrite_replaces_the_file_whole_and_leaves_no_temp(tmp_path: Path) -> None:
    home = Home(tmp_path / "dev")
    home.save_session(SESSION)
    inode_before = home.session_path.stat().st_ino
    other = Session(SESSION.server_url, "u" * 43, "1" * 32, "bob", "phone")
    home.save_session(other)
    assert home.load_session() == other
    assert home.session_path.stat().st_ino != inode_before  # renamed over, not edited
    assert [p.name for p in home.config_dir.iterdir()] == ["session.json"]


def test_a_rewrite_that_fails_keeps_the_old_file_and_removes_its_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Home(tmp_path / "dev")
    home.save_session(SESSION)

    def failing_replace(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(HomeError, match=r"session\.json"):
        home.save_session(Session(SESSION.server_url, "u" * 43, "1" * 32, "bob", "phone"))
    monkeypatch.undo()
    assert home.load_session() == SESSION
    assert [p.name for p in home.config_dir.iterdir()] == ["session.json"]


def test_a_missing_session_file_is_not_logged_in_with_a_login_hint(tmp_path: Path) -> None:
    with pytest.raises(NotLoggedInError, match="boxfs login"):
        Home(tmp_path / "dev").load_session()


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe",
        b"[]",
        b'{"format": 99, "session": null}',
        b'{"format": 1, "server_url": "http://x", "session": {"token": "abc"}}',
        b'{"format": 1, "server_url": 7, "session": null}',
    ],
)
def test_a_corrupt_session_file_is_a_home_error_naming_the_file(
    tmp_path: Path, content: bytes
) -> None:
    home = Home(tmp_path / "dev")
    home.config_dir.mkdir(mode=0o700)
    home.session_path.write_bytes(content)
    home.session_path.chmod(0o600)
    with pytest.raises(HomeError) as caught:
        home.load_session()
    assert str(home.session_path) in str(caught.value)


def test_a_session_file_others_can_read_is_refused(tmp_path: Path) -> None:
    home = Home(tmp_path / "dev")
    home.save_session(SESSION)
    home.session_path.chmod(0o644)
    with pytest.raises(HomeError, match="chmod 600"):
        home.load_session()


def test_logout_forgets_the_session_but_remembers_the_server(tmp_path: Path) -> None:
    home = Home(tmp_path / "dev")
    home.save_session(SESSION)
    assert home.clear_session() == SESSION
    assert home.read_state() == HomeState(SESSION.server_url, None)
    with pytest.raises(NotLoggedInError):
        home.load_session()
    assert home.clear_session() is None
    document = json.loads(home.session_path.read_text())
    assert SESSION.token not in home.session_path.read_text()
    assert document["session"] is None


def test_two_homes_chosen_by_boxfs_home_are_isolated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOXFS_HOME", str(tmp_path / "laptop"))
    laptop = Home.from_env()
    monkeypatch.setenv("BOXFS_HOME", str(tmp_path / "phone"))
    phone = Home.from_env()
    laptop.save_session(SESSION)
    with pytest.raises(NotLoggedInError):
        phone.load_session()
    phone_session = Session(SESSION.server_url, "p" * 43, "2" * 32, "alice", "phone")
    phone.save_session(phone_session)
    assert laptop.load_session() == SESSION
    assert phone.load_session() == phone_session
    assert laptop.cache_dir != phone.cache_dir
    assert laptop.journal_dir.is_relative_to(tmp_path / "laptop")


def test_the_default_device_name_is_the_host_name_made_fit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "my/box\tname")
    assert default_device_name() == "my-box-name"
    monkeypatch.setattr(socket, "gethostname", lambda: "x" * 300)
    assert default_device_name() == "x" * 64
    monkeypatch.setattr(socket, "gethostname", lambda: "")
    assert default_device_name() == "device"


NAMESPACE = NamespaceId(bytes(16))


def test_bases_remember_the_newest_hash_per_path_within_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bases = Home(tmp_path / "dev").bases
    assert bases.get(NAMESPACE, b"a.txt") is None
    one, two = content_hash_of(b"one"), content_hash_of(b"two")
    bases.record(NAMESPACE, {b"a.txt": one, b"dir/b.txt": two})
    bases.record(NAMESPACE, {b"a.txt": two})
    assert bases.get(NAMESPACE, b"a.txt") == two
    assert bases.get_many(NAMESPACE, [b"dir/b.txt", b"c"]) == {b"dir/b.txt": two}
    assert bases.get(NamespaceId(b"\x01" * 16), b"a.txt") is None  # per namespace
    assert mode_of(bases.path) == 0o600

    monkeypatch.setattr(home_module, "MAX_BASES", 2)
    bases.record(NAMESPACE, {b"new.txt": one})
    assert bases.get(NAMESPACE, b"dir/b.txt") is None  # the oldest went first
    assert bases.get(NAMESPACE, b"a.txt") == two


def test_corrupt_bases_are_a_home_error_naming_the_file(tmp_path: Path) -> None:
    bases = Home(tmp_path / "dev").bases
    bases.path.write_text('{"format": 1, "bases": {"x": 3}}')
    with pytest.raises(HomeError, match=r"bases\.json"):
        bases.get(NAMESPACE, b"x")
    bases.path.write_text(json.dumps({"format": 1, "bases": {f"{NAMESPACE.hex()}/x": "zz"}}))
    with pytest.raises(HomeError, match=r"bases\.json"):
        bases.get(NAMESPACE, b"x")
