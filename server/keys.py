"""Master-key rotation: every data key re-wrapped under a new master, no chunk rewritten.

Order matters for crash safety: the new master key is written to ``master.key.new``
first, then the re-wrapped data keys in one database transaction, then the file is
renamed over ``master.key``. A crash before the transaction leaves the old key in force;
a crash after it leaves both files, and ``rotate_master_key`` (or the next start) finishes
the rename because the database already names the new master. Run with the server stopped.
"""

from __future__ import annotations

import os

import sqlalchemy as sa

from server import db as tables
from server.db import Database
from server.settings import Settings
from store.crypto import MasterKey, rewrap, unwrap_key
from store.errors import CryptoError


def rotate_master_key(settings: Settings) -> tuple[str, str, int]:
    """(old master id, new master id, data keys re-wrapped)."""
    path = settings.master_key_path
    pending = path.with_name(path.name + ".new")
    old = MasterKey.load(path)
    database = Database(settings.db_url)
    try:
        if pending.exists():
            new = MasterKey.load(pending)
        else:
            new = MasterKey.generate()
            new.save(pending)
        with database.write() as connection:
            rows = connection.execute(sa.select(tables.data_keys.c.id, tables.data_keys.c.wrapped))
            count = 0
            for row in rows.all():
                wrapped = bytes(row.wrapped)
                try:
                    rewrapped = rewrap(old, new, wrapped)
                except CryptoError:
                    unwrap_key(new, wrapped)  # already re-wrapped by an interrupted run
                    continue
                connection.execute(
                    tables.data_keys.update()
                    .where(tables.data_keys.c.id == row.id)
                    .values(wrapped=rewrapped)
                )
                count += 1
        os.replace(pending, path)
    finally:
        database.close()
    return old.key_id.hex(), new.key_id.hex(), count
