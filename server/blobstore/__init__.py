"""Where sealed chunk frames rest: the ``BlobStore`` interface and its implementations."""

from server.blobstore.base import BlobStore
from server.blobstore.local import LocalBlobStore

__all__ = ["BlobStore", "LocalBlobStore"]
