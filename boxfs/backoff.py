"""Exponential backoff: how long a retrying loop waits before its next try.

Owns one policy, ``Backoff``: the first wait is ``min_s``, each further one twice the last
up to ``max_s``, and ``reset()`` (after a success) starts over from ``min_s``. A caller
with a better hint (a server's Retry-After) asks for at least that much; the doubling then
goes on from there.

Must not: sleep, or know an I/O framework: the caller waits (``trio.sleep``) and decides
what counts as success. Not thread-safe: one retrying loop owns each instance.

Who calls it: the uploader's rounds (``Uploader.run``), the syncer's listener and applier
(``Syncer``), and the headless drive's resend of a batch (``boxfs.drive.Drive.apply``).
"""

from __future__ import annotations


class Backoff:
    """Delays of ``min_s``, doubling on each failure up to ``max_s``; ``reset`` on success.

    A ``max_s`` below ``min_s`` is taken as ``min_s`` (every wait the same).
    """

    __slots__ = ("_delay_s", "max_s", "min_s")

    def __init__(self, min_s: float, max_s: float) -> None:
        if min_s < 0:
            raise ValueError(f"a backoff needs a non-negative first delay: {min_s}")
        self.min_s = min_s
        self.max_s = max(max_s, min_s)
        self._delay_s = min_s

    @property
    def delay_s(self) -> float:
        """What the next ``next_delay_s()`` returns (without a larger ``at_least_s``)."""
        return self._delay_s

    def next_delay_s(self, at_least_s: float = 0.0) -> float:
        """The wait before the next try, at least ``at_least_s`` (which may pass
        ``max_s``); the one after it doubles, up to ``max_s``."""
        delay_s = max(self._delay_s, at_least_s)
        self._delay_s = min(delay_s * 2, self.max_s)
        return delay_s

    def reset(self) -> None:
        """A try succeeded: the next wait is ``min_s`` again."""
        self._delay_s = self.min_s
