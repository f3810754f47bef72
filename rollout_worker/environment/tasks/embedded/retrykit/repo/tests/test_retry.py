import random
from itertools import islice

import pytest

from retrykit import RetryError, backoff_delays, retry


class Flaky:
    def __init__(self, failures):
        self.failures = failures
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"failure {self.calls}")
        return "ok"


def test_delays_grow_exponentially():
    assert list(islice(backoff_delays(base=1, factor=2, max_delay=100), 4)) == [1, 2, 4, 8]


def test_jitter_stays_within_bounds():
    delays = list(islice(backoff_delays(base=10, factor=1, jitter=0.2, rng=random.Random(7)), 50))
    assert all(8 <= d <= 12 for d in delays) and len(set(delays)) > 1


def test_retry_succeeds_after_failures():
    slept = []
    fn = Flaky(failures=2)
    assert retry(fn, attempts=3, sleep=slept.append, base=1, factor=2) == "ok"
    assert fn.calls == 3 and slept == [1, 2]


def test_retry_gives_up():
    fn = Flaky(failures=5)
    with pytest.raises(RetryError) as info:
        retry(fn, attempts=2, sleep=lambda s: None)
    assert info.value.attempts == 2 and isinstance(info.value.last_exception, ConnectionError)


def test_other_exceptions_propagate():
    def boom():
        raise KeyError("x")

    with pytest.raises(KeyError):
        retry(boom, retry_on=(ConnectionError,), sleep=lambda s: None)
