"""The plain-number histogram behind callbridge_publish_latency_seconds."""

from __future__ import annotations

import pytest

from bridge.common.histogram import LATENCY_BUCKETS, Histogram


def test_a_value_on_a_bound_counts_in_that_bucket_and_buckets_are_cumulative() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 3.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]
    assert histogram.count == 5
    assert histogram.total == pytest.approx(4.65)


def test_the_latency_buckets_span_half_a_millisecond_to_ten_seconds() -> None:
    histogram = Histogram()
    assert histogram.buckets == LATENCY_BUCKETS
    assert (LATENCY_BUCKETS[0], LATENCY_BUCKETS[-1]) == (0.0005, 10.0)
    assert histogram.cumulative()[-1] == ("+Inf", 0)


@pytest.mark.parametrize("buckets", [(1.0, 0.5), (0.5, 0.5)])
def test_buckets_must_increase(buckets: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        Histogram(buckets)
