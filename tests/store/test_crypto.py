"""Encryption at rest: sealing frames, wrapping data keys, rotating the master key."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from store.crypto import (
    SEALED_HEADER_BYTES,
    WRAPPED_KEY_BYTES,
    Keyring,
    MasterKey,
    rewrap,
    unwrap_key,
)
from store.errors import CryptoError, FormatError, IntegrityError
from store.frames import decode_frame, encode_frame
from store.ids import chunk_id_of

DATA = b"a chunk's plaintext " * 100
CHUNK = chunk_id_of(DATA)
FRAME = encode_frame(DATA)


def fresh_ring() -> tuple[MasterKey, Keyring, bytes]:
    master = MasterKey.generate()
    ring = Keyring()
    wrapped = ring.new_data_key(master)
    return master, ring, wrapped


def test_sealed_frame_opens_to_the_same_frame() -> None:
    _, ring, _ = fresh_ring()
    sealed = ring.seal(CHUNK, FRAME)
    assert FRAME not in sealed
    assert ring.open(CHUNK, sealed) == FRAME
    assert decode_frame(ring.open(CHUNK, sealed), CHUNK) == DATA


def test_sealing_twice_gives_different_bytes() -> None:
    _, ring, _ = fresh_ring()
    assert ring.seal(CHUNK, FRAME) != ring.seal(CHUNK, FRAME)


def test_sealed_frame_under_another_chunk_id_fails_authentication() -> None:
    _, ring, _ = fresh_ring()
    sealed = ring.seal(CHUNK, FRAME)
    with pytest.raises(IntegrityError):
        ring.open(chunk_id_of(b"other"), sealed)


def test_tampered_sealed_frame_fails_authentication() -> None:
    _, ring, _ = fresh_ring()
    sealed = bytearray(ring.seal(CHUNK, FRAME))
    sealed[SEALED_HEADER_BYTES + 3] ^= 1
    with pytest.raises(IntegrityError):
        ring.open(CHUNK, bytes(sealed))


def test_frame_sealed_with_an_unknown_key_is_a_clear_error() -> None:
    _, ring, _ = fresh_ring()
    _, other, _ = fresh_ring()
    with pytest.raises(CryptoError, match="unknown key"):
        other.open(CHUNK, ring.seal(CHUNK, FRAME))


def test_truncated_sealed_frame_is_a_format_error() -> None:
    _, ring, _ = fresh_ring()
    with pytest.raises(FormatError):
        ring.open(CHUNK, ring.seal(CHUNK, FRAME)[:10])


def test_rotating_the_master_key_keeps_every_sealed_frame_readable() -> None:
    old_master, ring, first = fresh_ring()
    sealed_first = ring.seal(CHUNK, FRAME)
    second = ring.new_data_key(old_master)
    sealed_second = ring.seal(CHUNK, FRAME)

    new_master = MasterKey.generate()
    rewrapped = [rewrap(old_master, new_master, wrapped) for wrapped in (first, second)]
    assert all(len(wrapped) == WRAPPED_KEY_BYTES for wrapped in rewrapped)
    reopened = Keyring.unwrap(new_master, rewrapped)
    assert reopened.open(CHUNK, sealed_first) == FRAME
    assert reopened.open(CHUNK, sealed_second) == FRAME
    # the newest data key is the one that seals
    assert reopened.seal(CHUNK, FRAME)[1:17] == sealed_second[1:17]
    with pytest.raises(CryptoError, match="wrapped by master"):
        Keyring.unwrap(old_master, rewrapped)


def test_a_forged_wrapped_key_is_refused() -> None:
    master, _, wrapped = fresh_ring()
    forged = bytearray(wrapped)
    forged[-1] ^= 1
    with pytest.raises(CryptoError, match="fails authentication"):
        unwrap_key(master, bytes(forged))


def test_an_empty_keyring_cannot_seal() -> None:
    ring = Keyring()
    assert ring.needs_new_key
    with pytest.raises(CryptoError):
        ring.seal(CHUNK, FRAME)


def test_master_key_file_is_owner_only_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    master = MasterKey.generate()
    master.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert MasterKey.load(path) == master
    with pytest.raises(FileExistsError):
        MasterKey.generate().save(path)
    assert "secret" not in repr(master)
    assert master.secret.hex() not in repr(master)


def test_garbage_master_key_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_text("not a key\n")
    with pytest.raises(CryptoError, match="master key"):
        MasterKey.load(path)
