"""store: the pure, synchronous library under boxfs: formats and algorithms, no I/O framework.

Modules: ``ids`` (typed ids), ``chunking`` (FastCDC-2020), ``frames`` (zstd framing and
integrity), ``crypto`` (encryption at rest), ``objects`` (entries, trees, commits),
``paths`` (the path inside a namespace), ``ops`` (the operations on one: put, mkdir, move,
delete, setattr), ``merkle`` (build, diff, edit), ``cache`` (LMDB object cache),
``protocol`` (the wire protocol), ``errors``. Import what you need from the module that
owns it; the most used names are re-exported here.
"""

from store.errors import (
    ConflictError,
    CryptoError,
    FormatError,
    IntegrityError,
    NotFoundError,
    StoreError,
    TransientError,
)
from store.ids import ChunkId, CommitId, ContentHash, NamespaceId, TreeId

__all__ = [
    "ChunkId",
    "CommitId",
    "ConflictError",
    "ContentHash",
    "CryptoError",
    "FormatError",
    "IntegrityError",
    "NamespaceId",
    "NotFoundError",
    "StoreError",
    "TransientError",
    "TreeId",
]
