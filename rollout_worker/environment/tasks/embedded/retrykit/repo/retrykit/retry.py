"""retry(): call a function until it succeeds, sleeping with exponential backoff in between."""

import random
import time


class RetryError(Exception):
    """All attempts failed; ``last_exception`` is the final failure."""

    def __init__(self, attempts, last_exception):
        super().__init__(f"gave up after {attempts} attempts: {last_exception!r}")
        self.attempts = attempts
        self.last_exception = last_exception


def backoff_delays(base=0.5, factor=2.0, max_delay=30.0, jitter=0.0, rng=None):
    """Yield delays base, base*factor, base*factor**2, ... capped at ``max_delay``.

    With ``jitter`` (a fraction, e.g. 0.1) each delay is scaled by a random factor in [1 - jitter, 1 + jitter].
    """
    if base < 0 or factor < 1 or max_delay < 0 or not 0 <= jitter < 1:
        raise ValueError("invalid backoff parameters")
    rng = rng or random.Random()
    delay = base
    while True:
        yield delay * (1 + rng.uniform(-jitter, jitter)) if jitter else delay
        delay = delay * factor


def retry(fn, attempts=3, retry_on=(Exception,), sleep=time.sleep, **backoff):
    """Call ``fn()`` up to ``attempts`` times; exceptions not in ``retry_on`` propagate immediately."""
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    delays = backoff_delays(**backoff)
    last = None
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except retry_on as exc:
            last = exc
            if attempt < attempts:
                sleep(next(delays))
    raise RetryError(attempts, last)
