"""Encryption at rest: AES-256-GCM envelopes for frames, and data keys wrapped by a master key.

Two levels of keys, so the master key can be rotated without rewriting any chunk:

- A **data key** (256-bit, random, named by a 16-byte random ``KeyId``) seals frames.
  A sealed frame names its data key in its header and uses the chunk id as associated
  data, so a sealed frame moved under another chunk's id fails authentication.
- The **master key** (256-bit, kept outside the database) only wraps data keys. Rotating
  it unwraps every data key with the old master and wraps it again with the new one
  (``rewrap``): the sealed chunks are untouched.

Layouts (``docs/format.md``)::

    sealed frame: version u8 (1) | key id (16) | nonce (12) | AES-GCM(frame) + tag (16)
                  associated data: b"boxfs sealed frame v1" + chunk id
    wrapped key:  version u8 (1) | key id (16) | master key id (8) | nonce (12)
                  | AES-GCM(data key) + tag (16)
                  associated data: b"boxfs wrapped key v1" + key id

Nonces are 96 random bits: a data key must seal fewer than 2**32 frames (NIST SP 800-38D),
so ``Keyring`` starts a new data key after ``MAX_SEALS_PER_KEY`` seals.

Pure and synchronous; a ``Keyring`` may be shared by threads (its counters are locked).
"""

from __future__ import annotations

import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from store.errors import CryptoError, FormatError, IntegrityError
from store.ids import ChunkId

ENVELOPE_VERSION: Final = 1
KEY_BYTES: Final = 32
KEY_ID_BYTES: Final = 16
MASTER_ID_BYTES: Final = 8
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
SEALED_HEADER_BYTES: Final = 1 + KEY_ID_BYTES + NONCE_BYTES
WRAPPED_KEY_BYTES: Final = 1 + KEY_ID_BYTES + MASTER_ID_BYTES + NONCE_BYTES + KEY_BYTES + TAG_BYTES
MAX_SEALS_PER_KEY: Final = 2**31

_FRAME_AD: Final = b"boxfs sealed frame v1"
_WRAP_AD: Final = b"boxfs wrapped key v1"
_MASTER_ID_CONTEXT: Final = "boxfs master key id v1"


@dataclass(frozen=True, slots=True)
class MasterKey:
    """The key that wraps data keys. Its id (derived, not secret) tells which master
    wrapped a data key, so a wrong master gives a clear error rather than a bad tag."""

    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise CryptoError(f"a master key is {KEY_BYTES} bytes, got {len(self.secret)}")

    def __repr__(self) -> str:
        return f"MasterKey(id={self.key_id.hex()})"

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(secrets.token_bytes(KEY_BYTES))

    @property
    def key_id(self) -> bytes:
        return blake3.blake3(self.secret, derive_key_context=_MASTER_ID_CONTEXT).digest(
            MASTER_ID_BYTES
        )

    def save(self, path: Path) -> None:
        """Write the key to a new file readable by its owner only (refuses to overwrite)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, self.secret.hex().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    @classmethod
    def load(cls, path: Path) -> MasterKey:
        text = path.read_text().strip()
        try:
            return cls(bytes.fromhex(text))
        except ValueError as exc:
            raise CryptoError(f"{path} does not hold a hex master key") from exc


def wrap_key(master: MasterKey, key_id: bytes, data_key: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = AESGCM(master.secret).encrypt(nonce, data_key, _WRAP_AD + key_id)
    return bytes([ENVELOPE_VERSION]) + key_id + master.key_id + nonce + sealed


def unwrap_key(master: MasterKey, wrapped: bytes) -> tuple[bytes, bytes]:
    """(key id, data key) from a wrapped key; refuses one wrapped by another master."""
    if len(wrapped) != WRAPPED_KEY_BYTES or wrapped[0] != ENVELOPE_VERSION:
        raise FormatError("not a wrapped data key of this version")
    key_id = wrapped[1 : 1 + KEY_ID_BYTES]
    master_id = wrapped[1 + KEY_ID_BYTES : 1 + KEY_ID_BYTES + MASTER_ID_BYTES]
    if master_id != master.key_id:
        raise CryptoError(
            f"data key {key_id.hex()} is wrapped by master {master_id.hex()}, "
            f"not by {master.key_id.hex()}"
        )
    nonce_at = 1 + KEY_ID_BYTES + MASTER_ID_BYTES
    nonce = wrapped[nonce_at : nonce_at + NONCE_BYTES]
    try:
        data_key = AESGCM(master.secret).decrypt(
            nonce, wrapped[nonce_at + NONCE_BYTES :], _WRAP_AD + key_id
        )
    except InvalidTag as exc:
        raise CryptoError(f"data key {key_id.hex()} fails authentication") from exc
    return key_id, data_key


def rewrap(old: MasterKey, new: MasterKey, wrapped: bytes) -> bytes:
    """The same data key wrapped by ``new``: the master-key rotation step."""
    key_id, data_key = unwrap_key(old, wrapped)
    return wrap_key(new, key_id, data_key)


class Keyring:
    """The data keys at hand: all of them open frames; the newest one seals."""

    def __init__(self) -> None:
        self._keys: dict[bytes, AESGCM] = {}
        self._current: bytes | None = None
        self._seals = 0
        self._lock = threading.Lock()

    @classmethod
    def unwrap(cls, master: MasterKey, wrapped_keys: list[bytes]) -> Keyring:
        """A keyring of wrapped keys in the order they were made (the last one seals)."""
        ring = cls()
        for wrapped in wrapped_keys:
            key_id, data_key = unwrap_key(master, wrapped)
            ring._keys[key_id] = AESGCM(data_key)
            ring._current = key_id
        return ring

    def new_data_key(self, master: MasterKey) -> bytes:
        """Make a data key, make it the sealing one, and return it wrapped for storage."""
        key_id = secrets.token_bytes(KEY_ID_BYTES)
        data_key = AESGCM.generate_key(bit_length=256)
        with self._lock:
            self._keys[key_id] = AESGCM(data_key)
            self._current = key_id
            self._seals = 0
        return wrap_key(master, key_id, data_key)

    @property
    def needs_new_key(self) -> bool:
        return self._current is None or self._seals >= MAX_SEALS_PER_KEY

    def seal(self, chunk_id: ChunkId, frame: bytes) -> bytes:
        with self._lock:
            if self._current is None:
                raise CryptoError("the keyring has no data key to seal with")
            key_id = self._current
            self._seals += 1
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._keys[key_id].encrypt(nonce, frame, _FRAME_AD + chunk_id)
        return bytes([ENVELOPE_VERSION]) + key_id + nonce + sealed

    def open(self, chunk_id: ChunkId, sealed: bytes) -> bytes:
        """The frame inside a sealed envelope; ``IntegrityError`` if it was tampered with
        or belongs to another chunk id."""
        if len(sealed) < SEALED_HEADER_BYTES + TAG_BYTES or sealed[0] != ENVELOPE_VERSION:
            raise FormatError(f"sealed frame of chunk {chunk_id.hex()} has no valid header")
        key_id = sealed[1 : 1 + KEY_ID_BYTES]
        key = self._keys.get(key_id)
        if key is None:
            raise CryptoError(f"chunk {chunk_id.hex()} is sealed with unknown key {key_id.hex()}")
        nonce = sealed[1 + KEY_ID_BYTES : SEALED_HEADER_BYTES]
        try:
            return key.decrypt(nonce, sealed[SEALED_HEADER_BYTES:], _FRAME_AD + chunk_id)
        except InvalidTag as exc:
            raise IntegrityError(
                chunk_id.hex(), "a sealed frame that fails authentication"
            ) from exc
