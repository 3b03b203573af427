"""The device home: where one device keeps its server, its session and its local state.

A home is chosen once per process: ``BOXFS_HOME`` if it is set (everything then lives under
that one directory, so tests and power users can run several devices on one machine), else
the platform's directories: configuration under ``$XDG_CONFIG_HOME/boxfs``
(``~/.config/boxfs``) and data under ``$XDG_DATA_HOME/boxfs`` (``~/.local/share/boxfs``).

Layout (``docs/cli.md``)::

    <config>/session.json   server URL and session (token, session id, username, device)
    <data>/bases.json       the content hash this device last saw at each drive path it
                            read or wrote without a mount (``get``, ``put``): the base of
                            its next ``put`` there (``Bases``)
    <data>/cache/           the LMDB object cache (store.cache.ObjectCache)
    <data>/journal/         the durable journal of pending operations
    <data>/staging/         files staged for writing
    <data>/home.lock        held (``flock``, exclusive) by the one mount of this home;
                            holds "PID\nWHAT\n" of the holder for the error of a second

One process at a time owns the journal, staging and cache of a home: a mount takes
``Home.hold`` before it touches any of them, and a second mount of the same home fails with
``HomeInUseError`` instead of sweeping the first one's staged files away.

Invariants: every directory the home creates is mode 0700 and ``session.json`` is mode
0600, because the token in it is a secret; the session file is replaced atomically (a temp
file in the same directory, fsync, rename, fsync of the directory), so a crash leaves the
old file or the new one, never a mix. A session file readable by others is refused, as
ssh refuses such a key.

It owns paths and the session file only: it must not open the cache or the journal (their
modules do) and does no network I/O. Called from the CLI and the mount's wiring at start,
on the trio thread (the file is a few hundred bytes; reading it does not need a worker).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from boxfs.errors import HomeError, HomeInUseError, NotLoggedInError
from store import protocol
from store.errors import FormatError
from store.ids import ContentHash, NamespaceId

HOME_ENV: Final = "BOXFS_HOME"
SESSION_FILE_NAME: Final = "session.json"
SESSION_FORMAT: Final = 1  # the "format" field of session.json; a change is a new number
DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600
# A session file is a few hundred bytes; anything far larger is not ours.
_MAX_SESSION_FILE_BYTES: Final = 64 * 1024
_FALLBACK_DEVICE_NAME: Final = "device"
_DEVICE_NAME_BAD_CHARS: Final = re.compile(r"[/\\\x00-\x1f\x7f]+")
_LOGIN_HINT: Final = "run `boxfs login --server URL USERNAME`"
BASES_FILE_NAME: Final = "bases.json"
LOCK_FILE_NAME: Final = "home.lock"
# Bases kept, newest last; older ones are dropped (a put there then takes the head as base).
MAX_BASES: Final = 20_000
_MAX_BASES_FILE_BYTES: Final = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Session:
    """A device's login on one server, as ``boxfs login`` stored it."""

    server_url: str
    token: str
    session_id: str
    username: str
    device_name: str

    def __repr__(self) -> str:  # never show the token
        return (
            f"Session(server_url={self.server_url!r}, username={self.username!r}, "
            f"device_name={self.device_name!r}, session_id={self.session_id!r})"
        )


@dataclass(frozen=True, slots=True)
class HomeState:
    """What ``session.json`` holds: the server last used, and the session if logged in.
    ``session`` is ``None`` after a logout (the server is remembered for the next login)."""

    server_url: str | None
    session: Session | None


def default_device_name() -> str:
    """The host name, made fit for a device name (no ``/``, ``\\`` or control characters,
    at most ``protocol.MAX_DEVICE_NAME_BYTES`` bytes); ``"device"`` if nothing is left."""
    name = _DEVICE_NAME_BAD_CHARS.sub("-", socket.gethostname()).strip()
    encoded = name.encode("utf-8", "replace")[: protocol.MAX_DEVICE_NAME_BYTES]
    name = encoded.decode("utf-8", "ignore").strip()
    return name or _FALLBACK_DEVICE_NAME


def _xdg_dir(environ: Mapping[str, str], variable: str, fallback: Path) -> Path:
    # The XDG spec: a relative path in the variable is invalid and is ignored.
    value = environ.get(variable, "")
    return Path(value) if value and os.path.isabs(value) else fallback


class Home:
    """One device home. ``config_dir`` holds the session file, ``data_dir`` the cache,
    journal and staging directories (the same directory when ``BOXFS_HOME`` is set)."""

    def __init__(self, config_dir: Path, data_dir: Path | None = None) -> None:
        self.config_dir = Path(config_dir)
        self.data_dir = Path(data_dir) if data_dir is not None else self.config_dir

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Home:
        """The home this process uses: ``BOXFS_HOME``, else the XDG directories."""
        env = os.environ if environ is None else environ
        explicit = env.get(HOME_ENV, "")
        if explicit:
            return cls(Path(explicit).expanduser().absolute())
        user_home = Path(env.get("HOME") or Path.home())
        config = _xdg_dir(env, "XDG_CONFIG_HOME", user_home / ".config")
        data = _xdg_dir(env, "XDG_DATA_HOME", user_home / ".local" / "share")
        return cls(config / "boxfs", data / "boxfs")

    def __repr__(self) -> str:
        return f"Home(config_dir={str(self.config_dir)!r}, data_dir={str(self.data_dir)!r})"

    # --- paths ----------------------------------------------------------------------------

    @property
    def session_path(self) -> Path:
        return self.config_dir / SESSION_FILE_NAME

    @property
    def cache_dir(self) -> Path:
        """The object cache's directory (created, mode 0700)."""
        return self._subdir("cache")

    @property
    def journal_dir(self) -> Path:
        """The journal's directory (created, mode 0700)."""
        return self._subdir("journal")

    @property
    def staging_dir(self) -> Path:
        """The staging directory for files open for writing (created, mode 0700)."""
        return self._subdir("staging")

    @property
    def bases(self) -> Bases:
        """What this device last saw at the drive paths it read or wrote."""
        _ensure_private_dir(self.data_dir)
        return Bases(self.data_dir / BASES_FILE_NAME)

    @contextmanager
    def hold(self, purpose: str) -> Iterator[None]:
        """Hold this home for the calling process while the block runs (an exclusive,
        non-blocking ``flock`` on ``home.lock``, released when the process ends, however it
        ends). ``HomeInUseError``, naming the holder, if another process holds it."""
        _ensure_private_dir(self.data_dir)
        path = self.data_dir / LOCK_FILE_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            raise HomeError(f"cannot open {path}: {exc.strerror or exc}") from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").split("\n")
                who = f" (pid {holder[0]}: {holder[1]})" if len(holder) > 1 else ""
                raise HomeInUseError(
                    f"this device home ({self.data_dir}) is in use by another mount{who}: "
                    "unmount it first, or set BOXFS_HOME to another home"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n{purpose}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    def check_free(self) -> None:
        """``HomeInUseError`` if another process holds this home now (a probe: the home is
        not held afterwards)."""
        with self.hold("a probe"):
            pass

    def _subdir(self, name: str) -> Path:
        path = self.data_dir / name
        _ensure_private_dir(self.data_dir)
        _ensure_private_dir(path)
        return path

    # --- the session file -----------------------------------------------------------------

    def read_state(self) -> HomeState:
        """What the session file says; an empty state if there is none. ``HomeError``
        (naming the file) if it cannot be read, is corrupt, or is readable by others."""
        path = self.session_path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return HomeState(None, None)
        except OSError as exc:
            raise HomeError(f"cannot read {path}: {exc.strerror}") from exc
        with open(fd, "rb") as stream:
            info = os.fstat(stream.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise HomeError(f"{path} is not a regular file")
            if stat.S_IMODE(info.st_mode) & 0o077:
                raise HomeError(
                    f"{path} is readable or writable by others "
                    f"(mode {stat.S_IMODE(info.st_mode):04o}): run `chmod 600 {path}`"
                )
            raw = stream.read(_MAX_SESSION_FILE_BYTES + 1)
        if len(raw) > _MAX_SESSION_FILE_BYTES:
            raise HomeError(f"{path} is corrupt: over {_MAX_SESSION_FILE_BYTES} bytes")
        return _parse_state(raw, path)

    def load_session(self) -> Session:
        """The stored session: ``NotLoggedInError`` if there is none, ``HomeError`` if the
        file is unusable."""
        state = self.read_state()
        if state.session is None:
            raise NotLoggedInError(
                f"not logged in on this device ({self.config_dir}): {_LOGIN_HINT}"
            )
        return state.session

    def write_state(self, state: HomeState) -> None:
        """Replace the session file atomically (mode 0600, in a 0700 directory)."""
        document: dict[str, object] = {"format": SESSION_FORMAT, "server_url": state.server_url}
        if state.session is not None:
            session = state.session
            document["session"] = {
                "server_url": session.server_url,
                "token": session.token,
                "session_id": session.session_id,
                "username": session.username,
                "device_name": session.device_name,
            }
        else:
            document["session"] = None
        data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
        try:
            _ensure_private_dir(self.config_dir)
            _write_atomically(self.session_path, data)
        except OSError as exc:
            raise HomeError(f"cannot write {self.session_path}: {exc.strerror or exc}") from exc

    def save_session(self, session: Session) -> None:
        self.write_state(HomeState(session.server_url, session))

    def clear_session(self) -> Session | None:
        """Forget the session (the server URL is kept for the next login); the session that
        was stored, if any."""
        state = self.read_state()
        if state.session is not None:
            self.write_state(HomeState(state.server_url, None))
        return state.session


def _parse_state(raw: bytes, path: Path) -> HomeState:
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HomeError(f"{path} is corrupt (not JSON: {exc}): delete it and log in again") from exc
    if not isinstance(document, dict) or document.get("format") != SESSION_FORMAT:
        raise HomeError(f"{path} is corrupt or of an unknown format: delete it and log in again")
    server_url = document.get("server_url")
    if server_url is not None and not isinstance(server_url, str):
        raise HomeError(f"{path} is corrupt: server_url is not text")
    raw_session = document.get("session")
    if raw_session is None:
        return HomeState(server_url, None)
    fields = ("server_url", "token", "session_id", "username", "device_name")
    if not isinstance(raw_session, dict) or not all(
        isinstance(raw_session.get(name), str) and raw_session[name] for name in fields
    ):
        raise HomeError(f"{path} is corrupt: the session lacks {', '.join(fields)}")
    session = Session(**{name: raw_session[name] for name in fields})
    return HomeState(server_url or session.server_url, session)


def _ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) with mode 0700; tighten it if it is looser."""
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        info = path.lstat()
        if not stat.S_ISDIR(info.st_mode):
            raise HomeError(f"{path} is not a directory")
        if stat.S_IMODE(info.st_mode) != DIR_MODE:
            path.chmod(DIR_MODE)
    except OSError as exc:
        raise HomeError(f"cannot create {path}: {exc.strerror or exc}") from exc


def _write_atomically(path: Path, data: bytes) -> None:
    """Temp file (mode 0600) in the same directory, fsync, rename over ``path``, fsync the
    directory: readers see the old content or the new, never a torn file."""
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with open(fd, "wb") as stream:
            os.fchmod(stream.fileno(), FILE_MODE)
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Bases:
    """The content hash each drive path had when this device last downloaded or uploaded
    it without a mount: the ``base`` of its next put there, so an edit made elsewhere in
    between is merged or kept as a conflicted copy instead of being replaced.

    One JSON object ``{"format": 1, "bases": {"<namespace hex>/<path>": "<hash hex>"}}``,
    oldest first, at most ``MAX_BASES`` entries. Updates are read-modify-write under an
    exclusive ``flock`` on ``bases.json.lock`` and replace the file atomically, so two
    commands of one home never lose each other's updates.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def _key(namespace_id: NamespaceId, drive_path: bytes) -> str:
        return f"{namespace_id.hex()}/{drive_path.decode('utf-8', 'surrogateescape')}"

    def get(self, namespace_id: NamespaceId, drive_path: bytes) -> ContentHash | None:
        return self.get_many(namespace_id, [drive_path]).get(drive_path)

    def get_many(
        self, namespace_id: NamespaceId, drive_paths: Iterable[bytes]
    ) -> dict[bytes, ContentHash]:
        """The bases known for these paths (one read of the file)."""
        bases = self._read()
        found: dict[bytes, ContentHash] = {}
        for drive_path in drive_paths:
            value = bases.get(self._key(namespace_id, drive_path))
            if value is not None:
                found[drive_path] = self._parse_hash(value)
        return found

    def record(self, namespace_id: NamespaceId, seen: Mapping[bytes, ContentHash]) -> None:
        """Remember ``seen`` (drive path → content hash) as the newest bases."""
        if not seen:
            return
        with self._locked():
            bases = self._read()
            for drive_path, content_hash in seen.items():
                key = self._key(namespace_id, drive_path)
                bases.pop(key, None)  # re-inserted last: the newest
                bases[key] = content_hash.hex()
            for key in list(bases)[: max(0, len(bases) - MAX_BASES)]:
                del bases[key]
            data = json.dumps({"format": SESSION_FORMAT, "bases": bases}).encode()
            try:
                _write_atomically(self.path, data)
            except OSError as exc:
                raise HomeError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    @contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            raise HomeError(f"cannot open {lock_path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _read(self) -> dict[str, str]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise HomeError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        problem = f"{self.path} is corrupt: delete it (puts then take the head as their base)"
        if len(raw) > _MAX_BASES_FILE_BYTES:
            raise HomeError(problem)
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HomeError(problem) from exc
        if not isinstance(document, dict) or document.get("format") != SESSION_FORMAT:
            raise HomeError(problem)
        bases = document.get("bases")
        if not isinstance(bases, dict) or not all(isinstance(v, str) for v in bases.values()):
            raise HomeError(problem)
        return bases

    def _parse_hash(self, value: str) -> ContentHash:
        try:
            return ContentHash.from_hex(value)
        except FormatError as exc:
            raise HomeError(f"{self.path} is corrupt: delete it ({exc})") from exc
