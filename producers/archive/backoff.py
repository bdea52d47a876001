"""Capped exponential back-off shared by the API client and the chat downloader.

No jitter: one collector talks to one API, so there is no herd to spread out, and fixed delays
make the retry schedule visible in tests and logs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    attempts: int = 5  # tries in all, the first included
    initial_seconds: float = 2.0
    max_seconds: float = 120.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.initial_seconds < 0 or self.max_seconds < self.initial_seconds:
            raise ValueError("need 0 <= initial_seconds <= max_seconds")

    def delay(self, failures: int, hint: float | None = None) -> float:
        """Seconds to wait after the `failures`-th failure (1-based); a server hint (Retry-After) wins
        when it is longer, but never beyond the cap."""
        delay = min(self.max_seconds, self.initial_seconds * 2 ** (failures - 1))
        if hint is not None and hint > delay:
            delay = min(self.max_seconds, hint)
        return delay

    def delays(self) -> Iterator[float]:
        """The waits between attempts: attempts - 1 of them."""
        for failures in range(1, self.attempts):
            yield self.delay(failures)
