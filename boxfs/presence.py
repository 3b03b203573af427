"""Who is editing, for one shared folder: this device's heartbeat and the others' files.

``Presence.run`` reports to the server, every ``protocol.EDITING_HEARTBEAT_S`` and at
once when the view says the files open for writing changed (``nudge``), the paths of the
folder this device has open for writing (``FileSystemModel.writing_paths``), and keeps
what the server answers: who else has which file open for writing. The view reads that
(``editors_of``) for the ``user.boxfs.editors`` extended attribute. A failed report is
logged once and retried at the next beat; the last answer stays until one succeeds (the
server forgets this device by itself ``protocol.EDITING_TTL_S`` after its last report).

Who calls it: ``boxfs.shared_folders`` starts ``run`` beside the folder's syncer; the
view calls ``nudge`` and ``editors_of`` on the loop. Must not block the loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import trio

from boxfs.remote import Remote
from store import protocol
from store.errors import StoreError
from store.ids import NamespaceId
from store.protocol import DrivePath

_log = logging.getLogger(__name__)


class Presence:
    def __init__(
        self,
        remote: Remote,
        namespace_id: NamespaceId,
        writing_paths: Callable[[NamespaceId], list[DrivePath]],
        *,
        every_s: float = protocol.EDITING_HEARTBEAT_S,
    ) -> None:
        self._remote = remote
        self._namespace_id = namespace_id
        self._writing_paths = writing_paths
        self._every_s = every_s
        self._wake = trio.Event()
        self._editors: dict[DrivePath, list[protocol.EditorInfo]] = {}
        self._failing = False

    def nudge(self) -> None:
        """The files open for writing changed: report at once."""
        self._wake.set()

    def editors_of(self, path: DrivePath) -> Sequence[protocol.EditorInfo]:
        return self._editors.get(path, ())

    async def run(self) -> None:
        while True:
            with trio.move_on_after(self._every_s):
                await self._wake.wait()
            self._wake = trio.Event()
            await self.report()

    async def report(self) -> None:
        """One heartbeat: what is open for writing here, and who else edits what."""
        paths = self._writing_paths(self._namespace_id)
        try:
            answer = await self._remote.report_editing(self._namespace_id, paths)
        except (protocol.ProtocolError, StoreError) as exc:
            if not self._failing:
                _log.info("cannot tell who is editing in %s now: %s", self._namespace_id, exc)
            self._failing = True
            return
        self._failing = False
        editors: dict[DrivePath, list[protocol.EditorInfo]] = {}
        for editor in answer.editors:
            editors.setdefault(editor.path, []).append(editor)
        self._editors = editors
