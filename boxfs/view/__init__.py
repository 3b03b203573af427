"""The mount's view of the drive, kernel-free (``boxfs.view.model``)."""

from boxfs.view.model import FileSystemModel
from boxfs.view.namespaces import NamespacePorts
from boxfs.view.nodes import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    ROOT_INODE,
    VERSIONS_NAME,
    Attr,
    FsError,
    Invalidation,
    StatFs,
    SyncError,
)
from boxfs.view.versions import version_names

__all__ = [
    "RENAME_EXCHANGE",
    "RENAME_NOREPLACE",
    "ROOT_INODE",
    "VERSIONS_NAME",
    "Attr",
    "FileSystemModel",
    "FsError",
    "Invalidation",
    "NamespacePorts",
    "StatFs",
    "SyncError",
    "version_names",
]
