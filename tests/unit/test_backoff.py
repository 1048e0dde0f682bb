"""Unit tests of the worker's retry backoff."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloner.daemon.worker import backoff_s


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 10.0), (7, 10.0), (50, 10.0)],
)
def test_backoff_doubles_from_base_and_is_capped(attempt: int, expected: float) -> None:
    """Without jitter the delay is base·2^(attempt-1), never above the cap."""
    assert backoff_s(attempt, base_s=0.5, cap_s=10.0, jitter=0.0) == pytest.approx(expected)


def test_backoff_attempt_zero_uses_the_base() -> None:
    """An attempt count of 0 (never claimed) waits the base delay, not less."""
    assert backoff_s(0, base_s=1.0, cap_s=30.0, jitter=0.0) == pytest.approx(1.0)


@pytest.mark.parametrize("attempt", [1, 3, 10])
def test_backoff_jitter_stays_within_twenty_percent(attempt: int) -> None:
    """With the default jitter, delays spread over ±20% of the nominal value and no further."""
    nominal = min(30.0, 1.0 * 2 ** (attempt - 1))
    delays = [backoff_s(attempt, base_s=1.0, cap_s=30.0) for _ in range(500)]
    assert min(delays) >= nominal * 0.8
    assert max(delays) <= nominal * 1.2
    # really jittered: both halves of the band are used
    assert min(delays) < nominal * 0.95
    assert max(delays) > nominal * 1.05


@settings(max_examples=200, database=None, deadline=None)
@given(
    attempt=st.integers(min_value=1, max_value=64),
    base_s=st.floats(min_value=0.001, max_value=10.0),
    cap_factor=st.floats(min_value=1.0, max_value=1000.0),
)
def test_backoff_property_bounds(attempt: int, base_s: float, cap_factor: float) -> None:
    """For any attempt the delay is within ±20% of min(cap, base·2^(attempt-1))."""
    cap_s = base_s * cap_factor
    nominal = min(cap_s, base_s * 2 ** (attempt - 1))
    delay = backoff_s(attempt, base_s, cap_s)
    assert nominal * 0.8 - 1e-9 <= delay <= nominal * 1.2 + 1e-9
    assert delay <= cap_s * 1.2 + 1e-9
