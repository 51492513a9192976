"""RateLimiter: a token bucket of events per minute, on fake time."""

from __future__ import annotations

import pytest

from heap_forwarder.heap.limiter import HEAP_EVENTS_PER_MINUTE_PER_APP, RateLimiter


def test_burst_is_available_at_once(kit) -> None:
    clock = kit.FakeClock()
    limiter = RateLimiter(600, 100, clock=clock, sleep=clock.sleep)
    assert limiter.acquire(60, None)
    assert limiter.acquire(40, None)
    assert clock.sleeps == []
    assert limiter.tokens == pytest.approx(0)


def test_waits_for_refill_when_the_bucket_is_short(kit) -> None:
    clock = kit.FakeClock()
    limiter = RateLimiter(600, 100, clock=clock, sleep=clock.sleep)  # 10 tokens per second
    assert limiter.acquire(100, None)
    assert limiter.acquire(20, None)
    assert sum(clock.sleeps) == pytest.approx(2.0)


def test_refill_never_exceeds_the_burst(kit) -> None:
    clock = kit.FakeClock()
    limiter = RateLimiter(600, 100, clock=clock, sleep=clock.sleep)
    assert limiter.acquire(100, None)
    clock.advance(3600)
    assert limiter.tokens == pytest.approx(100)


def test_a_request_larger_than_the_burst_goes_into_debt(kit) -> None:
    clock = kit.FakeClock()
    limiter = RateLimiter(600, 100, clock=clock, sleep=clock.sleep)
    assert limiter.acquire(1000, None)  # allowed at once: the bucket was full
    assert clock.sleeps == []
    assert limiter.tokens == pytest.approx(-900)
    # The debt is paid back before anything else goes: 900 tokens + 10 more at 10/s.
    assert limiter.acquire(10, None)
    assert sum(clock.sleeps) == pytest.approx(91.0)


def test_oversized_request_waits_for_a_full_bucket(kit) -> None:
    clock = kit.FakeClock()
    limiter = RateLimiter(600, 100, clock=clock, sleep=clock.sleep)
    assert limiter.acquire(50, None)
    assert limiter.acquire(1000, None)
    assert sum(clock.sleeps) == pytest.approx(5.0)  # 50 missing tokens at 10/s


def test_deadline_refuses_without_waiting_or_taking(kit) -> None:
    clock = kit.FakeClock()
    limiter = RateLimiter(600, 100, clock=clock, sleep=clock.sleep)
    assert limiter.acquire(100, None)
    assert not limiter.acquire(50, clock.now + 4.9)  # needs 5 s
    assert clock.sleeps == []
    assert limiter.tokens == pytest.approx(0)
    assert limiter.acquire(50, clock.now + 5.0)
    assert sum(clock.sleeps) == pytest.approx(5.0)


def test_deadline_in_the_past_still_allows_what_is_available(kit) -> None:
    clock = kit.FakeClock()
    limiter = RateLimiter(600, 100, clock=clock, sleep=clock.sleep)
    assert limiter.acquire(10, clock.now - 1)


def test_zero_is_free(kit) -> None:
    clock = kit.FakeClock()
    limiter = RateLimiter(60, 1, clock=clock, sleep=clock.sleep)
    assert limiter.acquire(1, None)
    assert limiter.acquire(0, clock.now)


@pytest.mark.parametrize(("rate", "burst"), [(0, 10), (-1, 10), (60, 0)])
def test_rejects_nonsense(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate, burst)


def test_for_share_carves_the_burst_out_of_the_share() -> None:
    limiter = RateLimiter.for_share(0.5, 500)
    assert limiter.events_per_minute + limiter.burst == pytest.approx(HEAP_EVENTS_PER_MINUTE_PER_APP / 2)
    with pytest.raises(ValueError):
        RateLimiter.for_share(0.01, 1000)
    with pytest.raises(ValueError):
        RateLimiter.for_share(1.5, 10)


def test_keeps_a_sustained_burst_under_heaps_cap(kit) -> None:
    """Ten simulated minutes of 1000-event requests as fast as allowed: no 60 s window over 15,000."""
    clock = kit.FakeClock()
    limiter = RateLimiter.for_share(1.0, 1000, clock=clock, sleep=clock.sleep)
    sent: list[tuple[float, int]] = []
    while clock.now < 1_000 + 600:
        assert limiter.acquire(1000, None)
        sent.append((clock.now, 1000))
    total_time = sent[-1][0] - sent[0][0]
    assert len(sent) * 1000 >= 14_000 * total_time / 60  # and it does not crawl either
    for start, _ in sent:
        in_window = sum(n for t, n in sent if start <= t < start + 60)
        assert in_window <= HEAP_EVENTS_PER_MINUTE_PER_APP


def test_mixed_sizes_stay_under_the_cap_in_every_window(kit) -> None:
    clock = kit.FakeClock()
    limiter = RateLimiter.for_share(1.0, 1000, clock=clock, sleep=clock.sleep)
    sizes = [1, 1000, 250, 7, 999, 1000, 3, 500] * 60
    sent: list[tuple[float, int]] = []
    for n in sizes:
        assert limiter.acquire(n, None)
        sent.append((clock.now, n))
    for start, _ in sent:
        assert sum(n for t, n in sent if start <= t < start + 60) <= HEAP_EVENTS_PER_MINUTE_PER_APP
