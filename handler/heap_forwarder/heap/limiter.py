"""Client-side pacing for Heap's event rate limits: a token bucket counted in events.

Heap caps bulk track at 15,000 events per minute per ``app_id``, shared by every sender of
that app. Each forwarder process takes a configured share of it. A token bucket admits at
most ``burst + events_per_minute * minutes`` events over any window, so a sender that must
stay under a cap per minute should be given ``events_per_minute + burst <= its share``
(see :meth:`RateLimiter.for_share`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

HEAP_EVENTS_PER_MINUTE_PER_APP = 15_000

# Float slack so that a refill computed after sleeping exactly the predicted wait counts as enough.
_EPSILON = 1e-9


class RateLimiter:
    """Token bucket of events per minute with a burst allowance.

    The bucket starts full (``burst`` tokens) and refills continuously. A request of ``n``
    events waits until ``min(n, burst)`` tokens are present and then takes all ``n``: a
    request larger than the burst drives the bucket negative (debt), which later requests
    pay back by waiting. So a 1000-item request is never impossible, only paced.
    """

    def __init__(
        self,
        events_per_minute: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not events_per_minute > 0:
            raise ValueError(f"events_per_minute must be positive, got {events_per_minute!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        self.events_per_minute = float(events_per_minute)
        self.burst = burst
        self._rate = self.events_per_minute / 60.0  # tokens per second
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._updated = clock()
        # Lambda runs one invocation at a time, but a shared limiter in a threaded caller must
        # not hand the same tokens out twice. Waiting while holding the lock queues callers.
        self._lock = threading.Lock()

    @classmethod
    def for_share(
        cls,
        share: float,
        burst: int,
        *,
        events_per_minute_cap: float = HEAP_EVENTS_PER_MINUTE_PER_APP,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> RateLimiter:
        """A limiter that keeps this sender within ``share`` (0..1] of the per-minute cap.

        The burst is carved out of the share, so no 60-second window exceeds it.
        """
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share!r}")
        allowance = share * events_per_minute_cap
        if burst >= allowance:
            raise ValueError(f"burst {burst} leaves no sustained rate within {allowance:.0f} events/min")
        return cls(allowance - burst, burst, clock=clock, sleep=sleep)

    @property
    def tokens(self) -> float:
        """Tokens available now (negative while in debt)."""
        with self._lock:
            self._refill()
            return self._tokens

    def acquire(self, n: int, deadline: float | None) -> bool:
        """Wait until ``n`` events may be sent, then take them; False if that would pass ``deadline``.

        ``deadline`` is an absolute time on this limiter's clock (None: wait as long as needed).
        On False nothing is taken, and the wait never reaches past ``deadline``.
        """
        if n <= 0:
            return True
        need = float(min(n, self.burst))
        with self._lock:
            while True:
                now = self._refill()
                if self._tokens + _EPSILON >= need:
                    self._tokens -= n
                    return True
                wait = (need - self._tokens) / self._rate
                if deadline is not None and now + wait > deadline:
                    return False
                self._sleep(wait)

    def _refill(self) -> float:
        now = self._clock()
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(float(self.burst), self._tokens + elapsed * self._rate)
            self._updated = now
        return now
