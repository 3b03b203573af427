"""Typed identifiers: what an id is, how it is written, and how it is computed.

Every content id is the 32-byte BLAKE3 digest of something, written as 64 lowercase hex
characters. The type says what it names, so a tree id is never passed where a chunk id is
expected. Tree and commit ids are domain-separated (``BLAKE3(b"tree" + encoding)``); a chunk
id and a content hash are the plain BLAKE3 of the bytes, so anyone can verify a chunk or a
whole restored file with a stock ``b3sum``.

Pure functions and immutable values: safe from any thread.
"""

from __future__ import annotations

from typing import Self

import blake3

from store.errors import FormatError

DIGEST_BYTES = 32
NAMESPACE_ID_BYTES = 16
LINK_ID_BYTES = 16

TREE_DOMAIN = b"tree"
COMMIT_DOMAIN = b"commit"


class _Id(bytes):
    """A fixed-length binary id. Subclasses set ``SIZE`` and ``KIND``."""

    SIZE = DIGEST_BYTES
    KIND = "id"

    def __new__(cls, raw: bytes) -> Self:
        if len(raw) != cls.SIZE:
            raise FormatError(f"{cls.KIND} must be {cls.SIZE} bytes, got {len(raw)}")
        return super().__new__(cls, raw)

    @classmethod
    def from_hex(cls, text: str) -> Self:
        """Parse the written form; anything but ``2*SIZE`` lowercase hex digits is refused."""
        if len(text) != 2 * cls.SIZE or text.lower() != text:
            raise FormatError(
                f"{cls.KIND} must be {2 * cls.SIZE} lowercase hex digits: {text[:80]!r}"
            )
        try:
            return cls(bytes.fromhex(text))
        except ValueError as exc:
            raise FormatError(f"{cls.KIND} is not hex: {text[:80]!r}") from exc

    def __str__(self) -> str:
        return self.hex()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.hex()[:16]}…)"


class ChunkId(_Id):
    """BLAKE3 of a chunk's plaintext."""

    KIND = "chunk id"


class ContentHash(_Id):
    """BLAKE3 of a file's whole content."""

    KIND = "content hash"


class TreeId(_Id):
    """BLAKE3(b"tree" ‖ canonical tree encoding)."""

    KIND = "tree id"


class CommitId(_Id):
    """BLAKE3(b"commit" ‖ canonical commit encoding)."""

    KIND = "commit id"


class NamespaceId(_Id):
    """A namespace is named by 16 random bytes chosen by the server when it is created."""

    SIZE = NAMESPACE_ID_BYTES
    KIND = "namespace id"


class LinkId(_Id):
    """A share link is named by 16 random bytes chosen by the server (public: it is not the
    link's token, which is the secret in its URL)."""

    SIZE = LINK_ID_BYTES
    KIND = "link id"


def chunk_id_of(data: bytes | bytearray | memoryview) -> ChunkId:
    return ChunkId(blake3.blake3(data).digest())


def content_hash_of(data: bytes | bytearray | memoryview) -> ContentHash:
    return ContentHash(blake3.blake3(data).digest())


def tree_id_of(encoding: bytes) -> TreeId:
    return TreeId(blake3.blake3(TREE_DOMAIN + encoding).digest())


def commit_id_of(encoding: bytes) -> CommitId:
    return CommitId(blake3.blake3(COMMIT_DOMAIN + encoding).digest())
