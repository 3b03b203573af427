"""What the uploader tells the rest of the mount about the batches the server answered.

Owns ``UploadListener``, the two calls an answered batch makes (``confirmed`` with the
reply's head, before the batch's entries leave the journal; ``batch_done`` after), and
``UploadRelay``, which passes them on to every listener subscribed, in order. The uploader
makes its relay when it is built and calls it; the syncer, built later (it needs the
model, which needs the uploader), subscribes to it when it is built. So the loop
model → uploader → syncer → model is closed by construction, with no callback set on an
object after it was made.

Must not: await, block, or swallow what a listener raises (the uploader's round fails
and is retried, as for any failure).

Who calls it: the uploader (``confirmed``, ``batch_done``) and listeners' constructors
(``subscribe``), all on the trio loop.
"""

from __future__ import annotations

from typing import Protocol

from store.ids import CommitId


class UploadListener(Protocol):
    """Told, on the loop, about each batch of this device's the server answered."""

    def confirmed(self, head: CommitId | None, sequence: int) -> None:
        """The server answered a batch with this head (and its sequence): the view must
        never show an older one again. Called before the batch's entries leave the
        journal."""

    def batch_done(self) -> None:
        """A batch was answered and its entries left the journal."""


class UploadRelay:
    """An ``UploadListener`` that passes each call on to its subscribers, in the order
    they subscribed (none: nothing happens)."""

    __slots__ = ("_listeners",)

    def __init__(self) -> None:
        self._listeners: list[UploadListener] = []

    def subscribe(self, listener: UploadListener) -> None:
        self._listeners.append(listener)

    def confirmed(self, head: CommitId | None, sequence: int) -> None:
        for listener in self._listeners:
            listener.confirmed(head, sequence)

    def batch_done(self) -> None:
        for listener in self._listeners:
            listener.batch_done()
