"""Backoff delays: the first at the minimum, doubling to the maximum, back to the minimum
after a success, and at least what a server asks for (Retry-After)."""

from __future__ import annotations

import pytest

from boxfs.backoff import Backoff


def delays(backoff: Backoff, count: int) -> list[float]:
    return [backoff.next_delay_s() for _ in range(count)]


def test_delays_start_at_the_minimum_and_double_up_to_the_maximum() -> None:
    # The uploader's timings (the syncer's stop at 5 s).
    backoff = Backoff(0.2, 10.0)
    assert delays(backoff, 9) == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10, 10, 10])


def test_a_reset_starts_over_from_the_minimum() -> None:
    backoff = Backoff(0.2, 5.0)
    delays(backoff, 4)
    assert backoff.delay_s == pytest.approx(3.2)
    backoff.reset()
    assert backoff.delay_s == 0.2
    assert delays(backoff, 2) == pytest.approx([0.2, 0.4])


def test_a_longer_wait_asked_for_is_kept_even_past_the_maximum_then_doubling_goes_on() -> None:
    backoff = Backoff(0.2, 10.0)
    assert backoff.next_delay_s(at_least_s=0.1) == 0.2  # shorter than the backoff: no effect
    assert backoff.next_delay_s(at_least_s=3.0) == 3.0
    assert backoff.next_delay_s() == 6.0
    assert backoff.next_delay_s(at_least_s=30.0) == 30.0  # the server's word, over max
    assert backoff.next_delay_s() == 10.0


def test_a_maximum_below_the_minimum_makes_every_delay_the_minimum() -> None:
    backoff = Backoff(2.0, 1.0)
    assert delays(backoff, 3) == [2.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="non-negative"):
        Backoff(-1.0, 1.0)
