"""The relay of answered batches: each call reaches every subscriber, in the order they
subscribed, and a relay nobody subscribed to does nothing."""

from __future__ import annotations

from boxfs.upload_relay import UploadListener, UploadRelay
from store.ids import CommitId


class Recorder:
    def __init__(self, name: str, calls: list[tuple[str, object]]) -> None:
        self.name = name
        self.calls = calls

    def confirmed(self, head: CommitId | None, sequence: int) -> None:
        self.calls.append((self.name, (head, sequence)))

    def batch_done(self) -> None:
        self.calls.append((self.name, "done"))


def test_every_subscriber_hears_each_answer_in_subscription_order() -> None:
    calls: list[tuple[str, object]] = []
    relay = UploadRelay()
    relay.confirmed(None, 1)  # nobody listens yet: nothing happens
    first: UploadListener = Recorder("syncer", calls)
    relay.subscribe(first)
    relay.subscribe(Recorder("status", calls))
    head = CommitId(bytes(range(32)))
    relay.confirmed(head, 7)
    relay.batch_done()
    assert calls == [
        ("syncer", (head, 7)),
        ("status", (head, 7)),
        ("syncer", "done"),
        ("status", "done"),
    ]
