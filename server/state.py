"""What one server process holds while it runs: settings, database, blob store, keys, events.

Built once at start-up (``ServerState.open``) and closed at shutdown by the app's lifespan;
handlers reach it through ``request.app.state.server``. Nothing here is mutable beyond the
objects' own locked state (the keyring's counters, the event hub's waiters).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, TypeVarTuple, Unpack

import anyio
import anyio.to_thread
import sqlalchemy as sa

from server import db as tables
from server.blobstore import BlobStore, LocalBlobStore
from server.db import Database
from server.events import EventHub
from server.settings import Settings
from store.crypto import Keyring, MasterKey
from store.errors import CryptoError

_log = logging.getLogger(__name__)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# Worker threads for blocking work (SQL, blob files, hashing, sealing).
WORKER_THREADS = 16


def now_ns() -> int:
    return time.time_ns()


@dataclass
class ServerState:
    settings: Settings
    db: Database
    blobs: BlobStore
    keyring: Keyring
    master: MasterKey
    events: EventHub
    limiter: anyio.CapacityLimiter

    @classmethod
    def open(cls, settings: Settings) -> ServerState:
        """Create the data directory and master key on first start, open everything."""
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        master = load_or_create_master_key(settings)
        database = Database(settings.db_url)
        blobs = LocalBlobStore(settings.blob_dir)
        swept = blobs.sweep_temp()
        if swept:
            _log.info("removed %d partial blob files left by a crash", swept)
        try:
            keyring = load_keyring(database, master)
        except CryptoError:
            # A rotation stopped between re-wrapping the data keys and renaming the new
            # master key into place (server.keys): finish it.
            pending = settings.master_key_path.with_name(settings.master_key_path.name + ".new")
            if not pending.exists():
                raise
            master = MasterKey.load(pending)
            keyring = load_keyring(database, master)
            os.replace(pending, settings.master_key_path)
        return cls(
            settings=settings,
            db=database,
            blobs=blobs,
            keyring=keyring,
            master=master,
            events=EventHub(),
            limiter=anyio.CapacityLimiter(WORKER_THREADS),
        )

    async def run(self, function: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
        """Run blocking ``function`` in a worker thread."""
        return await anyio.to_thread.run_sync(function, *args, limiter=self.limiter)

    def close(self) -> None:
        self.events.close()
        self.db.close()


def load_or_create_master_key(settings: Settings) -> MasterKey:
    path = settings.master_key_path
    if path.exists():
        return MasterKey.load(path)
    master = MasterKey.generate()
    master.save(path)
    _log.info("created master key %s", path)
    return master


def load_keyring(database: Database, master: MasterKey) -> Keyring:
    """The data keys in creation order, unwrapped; a first one is made if there is none."""
    with database.write() as connection:
        wrapped = [
            bytes(row.wrapped)
            for row in connection.execute(
                sa.select(tables.data_keys.c.wrapped).order_by(tables.data_keys.c.id)
            )
        ]
        keyring = Keyring.unwrap(master, wrapped)
        if keyring.needs_new_key:
            connection.execute(
                tables.data_keys.insert().values(
                    wrapped=keyring.new_data_key(master), created_ns=now_ns()
                )
            )
    return keyring
