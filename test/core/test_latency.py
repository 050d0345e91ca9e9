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


def test_percentile_gap_interval_covers_zero_for_one_distribution_and_not_for_a_shifted_one():
    from flow_rag_vla_ros.core.latency import percentile_gap_interval
    rng = np.random.default_rng(1)
    rounds = lambda shift: [list(rng.gamma(9.0, 1.0, 300) + shift) for _ in range(3)]  # noqa: E731
    same = percentile_gap_interval(rounds(0.0), rounds(0.0), resamples=400)
    lo, hi = same['ci95_ms']
    assert lo < 0.0 < hi and hi - lo > 0.5  # a p99 of 900 frames is itself uncertain by about a millisecond
    shifted = percentile_gap_interval(rounds(4.0), rounds(0.0), resamples=400)
    assert 2.0 < shifted['ci95_ms'][0] <= shifted['gap_ms'] <= shifted['ci95_ms'][1]
    assert shifted['share_above_limit'] > 0.99 and same['share_above_limit'] < 0.5
    a, b = [[10.0, 11.0, 30.0]], [[10.0, 11.0, 12.0]]
    assert percentile_gap_interval(a, b, q=100.0)['gap_ms'] == pytest.approx(18.0)  # exact: pooled max minus max
    assert percentile_gap_interval(a, b, seed=3) == percentile_gap_interval(a, b, seed=3)  # seeded


def test_percentile_gap_interval_keeps_rounds_apart_and_refuses_empty_rounds():
    from flow_rag_vla_ros.core.latency import percentile_gap_interval
    # one slow round of three: a resample must keep it one round's worth of frames, so the p99 stays in its tail
    slow = [[10.0] * 100, [10.0] * 100, [30.0] * 100]
    fast = [[10.0] * 100] * 3
    r = percentile_gap_interval(slow, fast, resamples=200)
    assert r['ci95_ms'] == pytest.approx([20.0, 20.0])
    with pytest.raises(ValueError, match='at least one sample'):
        percentile_gap_interval([[1.0], []], fast)
