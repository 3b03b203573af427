"""The syncer: keeps one namespace's part of the view in step with the server's head.

Owns two tasks under ``run``:

- the listener holds the server's event stream (``Remote.events``) open. Each time the
  stream is (re)connected it asks for a catch-up (the head may have moved while it was
  away: events are hints, the commit chain is the record); each event for this namespace
  with a sequence newer than the last one seen names the head to show. A broken or refused
  stream is reopened after a backoff (``boxfs.backoff.Backoff``: ``backoff_min_s`` doubling
  to ``backoff_max_s``);
  while it is down the syncer reports itself offline.
- the applier shows the newest head wanted (``FileSystemModel.apply_head``: diff, update,
  queue kernel invalidations). Heads that arrive while one is applied are coalesced: only
  the newest is applied next. It also rechecks the names a sync left alone for local
  changes (``FileSystemModel.recheck``) when the uploader reports a batch answered
  (``batch_done``), and every ``recheck_every_s`` while any are left. A reply to this device's
  own batch names a head too (``confirmed``): the view then never goes back to an older
  one, which would lack what the batch just confirmed.

Failures never end ``run``: a failed apply (even a bug) is logged and retried after the
backoff.

Every call into the model names the syncer's namespace (``apply_head``, ``recheck``,
``raise_floor``, ``head_of``, ``deferred_in``, ``set_role`` with the role each event
carries), so a view of several namespaces is followed by one syncer per namespace, each
with that namespace's uploader relay: the home's, and one per shared folder
(``boxfs.shared_folders``), all on the one ``Remote`` and journal.

Who calls it: ``boxfs.mount`` starts ``run`` in its root nursery after the model's
``start``. The syncer is an ``UploadListener``: it subscribes, when it is built, to the
uploader's ``answers`` (the ``UploadRelay`` passed as ``uploads``), which call
``confirmed`` and ``batch_done`` on the loop for each answered batch. Must not:
talk to the kernel (the notifier does), or block the loop.
"""

from __future__ import annotations

import logging
import math
from typing import Final

import trio

from boxfs.backoff import Backoff
from boxfs.remote import Remote
from boxfs.upload_relay import UploadRelay
from boxfs.view.model import FileSystemModel
from boxfs.view.nodes import FsError, SyncError
from store import protocol
from store.errors import StoreError
from store.ids import CommitId, NamespaceId

_log = logging.getLogger(__name__)

RECHECK_EVERY_S: Final = 1.0


class Syncer:
    def __init__(
        self,
        model: FileSystemModel,
        remote: Remote,
        namespace_id: NamespaceId,
        *,
        uploads: UploadRelay,
        backoff_min_s: float = 0.2,
        backoff_max_s: float = 5.0,
        recheck_every_s: float = RECHECK_EVERY_S,
    ) -> None:
        self.model = model
        self.remote = remote
        self.namespace_id = namespace_id
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = max(backoff_max_s, backoff_min_s)
        self.recheck_every_s = recheck_every_s
        self._wake = trio.Event()
        self._wanted: CommitId | None = None  # the newest head an event named
        self._sequence = -1  # the newest sequence seen for this namespace
        self._catch_up = False  # ask the server for its head on the next round
        self._recheck = False
        self._connected = False
        uploads.subscribe(self)  # last: it may call in as soon as it is subscribed

    # --- the public face -----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the event stream is open (the view follows the server live)."""
        return self._connected

    def confirmed(self, head: CommitId | None, sequence: int) -> None:
        """The server answered one of this device's batches with this head: show it (or a
        newer one), never an older one (it would lack what the batch just confirmed)."""
        self.model.raise_floor(sequence, namespace_id=self.namespace_id)
        if sequence > self._sequence:
            self._sequence = sequence
            self._wanted = head
            self._wake.set()

    def batch_done(self) -> None:
        """The uploader had a batch answered: look again at names left alone for it."""
        self._recheck = True
        self._wake.set()

    async def show_latest(self, timeout_s: float) -> None:
        """One last round, with ``run`` stopped (at unmount, after the uploads drained):
        show the server's head, so the view an offline start begins from holds every
        change of this device the server confirmed. Bounded; a failure is logged."""
        self._catch_up = True
        with trio.move_on_after(timeout_s):
            try:
                await self._round()
            except (
                protocol.UnavailableError, protocol.ProtocolError, StoreError, SyncError, FsError
            ) as exc:  # fmt: skip
                _log.info(
                    "the last head is not shown (an offline start shows an older one): %s", exc
                )

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._listen)
            nursery.start_soon(self._apply)

    # --- the listener ----------------------------------------------------------------------

    def _on_connected(self) -> None:
        if not self._connected:
            _log.info("following the server's changes")
        self._connected = True
        self._catch_up = True
        self._wake.set()

    async def _listen(self) -> None:
        backoff = Backoff(self.backoff_min_s, self.backoff_max_s)
        while True:
            try:
                async for event in self.remote.events(on_connected=self._on_connected):
                    if event.namespace_id != self.namespace_id:
                        continue
                    self.model.set_role(self.namespace_id, event.role)
                    if event.sequence <= self._sequence:
                        continue  # already seen (a replay after reconnecting)
                    self._sequence = event.sequence
                    self._wanted = event.head
                    self._wake.set()
            except protocol.UnavailableError as exc:
                if self._connected:
                    _log.warning("the event stream is down; reconnecting: %s", exc)
            except (protocol.ProtocolError, StoreError) as exc:
                _log.error(
                    "the event stream was refused; retrying in %.1f s: %s", backoff.delay_s, exc
                )
            except Exception:  # noqa: BLE001  (a bug: logged; the mount stays up, DESIGN.md §7)
                _log.exception("unexpected error on the event stream; reconnecting")
            if self._connected:  # it was up: reconnect soon, then back off again
                backoff.reset()
            self._connected = False
            await trio.sleep(backoff.next_delay_s())

    # --- the applier -----------------------------------------------------------------------

    async def _apply(self) -> None:
        backoff = Backoff(self.backoff_min_s, self.backoff_max_s)
        while True:
            deferred = self.model.deferred_in(self.namespace_id)
            timeout_s = self.recheck_every_s if deferred else math.inf
            with trio.move_on_after(timeout_s):
                await self._wake.wait()
            self._wake = trio.Event()
            try:
                await self._round()
            except (protocol.UnavailableError, protocol.ProtocolError, StoreError) as exc:
                _log.warning("cannot follow the server's head now; retrying: %s", exc)
            except (SyncError, FsError) as exc:
                _log.error("cannot show the server's head; retrying: %s", exc)
            except Exception:  # noqa: BLE001  (a bug: logged; the mount stays up, DESIGN.md §7)
                _log.exception("unexpected error following the server's head; retrying")
            else:
                backoff.reset()
                continue
            self._wake.set()  # try again after the delay
            await trio.sleep(backoff.next_delay_s())

    async def _round(self) -> None:
        if self._catch_up:
            self._catch_up = False
            try:
                head = await self.remote.head(self.namespace_id)
            except BaseException:
                self._catch_up = True
                raise
            if head.sequence > self._sequence:
                self._sequence = head.sequence
                self._wanted = head.head
        wanted, sequence = self._wanted, self._sequence
        model, namespace_id = self.model, self.namespace_id
        if wanted is not None and wanted != model.head_of(namespace_id):
            await model.apply_head(wanted, sequence, namespace_id=namespace_id)
        if self._recheck or model.deferred_in(namespace_id):
            self._recheck = False
            await model.recheck(namespace_id=namespace_id)
