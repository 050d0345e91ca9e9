import numpy as np
import pytest

from flow_rag_vla_ros.core.latency import SUMMARY_KEYS, LatencyStats, summarize


def test_percentiles_on_known_data():
    stats = LatencyStats()
    for ms in range(1, 101):  # 1..100 ms
        stats.add('e2e', ms)
    s = stats.summary('e2e')
    assert set(s) == set(SUMMARY_KEYS)
    assert s['p50'] == pytest.approx(50.5)
    assert s['p95'] == pytest.approx(95.05)
    assert s['p99'] == pytest.approx(99.01)
    assert s['mean'] == pytest.approx(50.5)
    assert s['max'] == 100.0 and s['n'] == 100


def test_summary_of_every_stage_and_of_an_empty_stage():
    stats = LatencyStats()
    stats.add_span('chunk', 1_000_000_000, 1_012_500_000)
    stats.add('features', 3.0)
    assert stats.summary() == {'chunk': summarize([12.5]), 'features': summarize([3.0])}
    assert stats.summary('correction') == {'p50': None, 'p95': None, 'p99': None, 'mean': None, 'max': None,
                                           'n': 0}


def test_merge_combines_stages_without_touching_the_inputs():
    a, b, c = LatencyStats(), LatencyStats(), LatencyStats()
    for v in (1.0, 2.0):
        a.add('e2e', v)
    b.add('e2e', 3.0)
    b.add('chunk', 7.0)
    c.add('chunk', 9.0)
    merged = a.merge(b, c)
    np.testing.assert_array_equal(merged.samples('e2e'), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(merged.samples('chunk'), [7.0, 9.0])
    assert merged.summary('e2e')['p50'] == pytest.approx(2.0)
    assert a.summary('e2e')['n'] == 2 and 'chunk' not in a.stages()


def test_bounded_memory_keeps_the_most_recent_samples():
    stats = LatencyStats(max_samples=3)
    for v in range(10):
        stats.add('e2e', v)
    np.testing.assert_array_equal(stats.samples('e2e'), [7.0, 8.0, 9.0])


def test_non_finite_samples_are_refused():
    stats = LatencyStats()
    with pytest.raises(ValueError):
        stats.add('e2e', float('nan'))
    with pytest.raises(ValueError):
        stats.add('e2e', float('inf'))
    assert stats.summary('e2e')['n'] == 0
