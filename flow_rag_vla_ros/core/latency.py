"""Per-stage latency samples (milliseconds) and their percentile summaries."""
from __future__ import annotations

import math
from collections import deque

import numpy as np

SUMMARY_KEYS = ('p50', 'p95', 'p99', 'mean', 'max', 'n')


def summarize(samples_ms) -> dict:
    """{'p50','p95','p99','mean','max','n'} of the samples (numpy linear percentiles); values None when empty."""
    a = np.asarray(list(samples_ms), dtype=np.float64)
    if a.size == 0:
        return {'p50': None, 'p95': None, 'p99': None, 'mean': None, 'max': None, 'n': 0}
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {'p50': float(p50), 'p95': float(p95), 'p99': float(p99), 'mean': float(a.mean()),
            'max': float(a.max()), 'n': int(a.size)}


class LatencyStats:
    """Samples per stage, the most recent `max_samples` of each kept (bounded memory in a long run)."""

    def __init__(self, max_samples: int = 100_000):
        if max_samples < 1:
            raise ValueError(f'max_samples must be >= 1, got {max_samples}')
        self.max_samples = max_samples
        self._samples: dict[str, deque] = {}

    def add(self, stage: str, ms: float) -> None:
        ms = float(ms)
        if not math.isfinite(ms):
            raise ValueError(f'latency sample for {stage!r} is not finite: {ms}')
        self._samples.setdefault(stage, deque(maxlen=self.max_samples)).append(ms)

    def add_span(self, stage: str, start_ns: int, end_ns: int) -> None:
        """A sample from two nanosecond timestamps."""
        self.add(stage, (end_ns - start_ns) / 1e6)

    def stages(self) -> list[str]:
        return list(self._samples)

    def samples(self, stage: str) -> np.ndarray:
        return np.asarray(self._samples.get(stage, ()), dtype=np.float64)

    def summary(self, stage: str | None = None) -> dict:
        """One stage's summary dict, or {stage: summary} for every stage when `stage` is None."""
        if stage is not None:
            return summarize(self._samples.get(stage, ()))
        return {s: summarize(v) for s, v in self._samples.items()}

    def merge(self, *others: LatencyStats) -> LatencyStats:
        """A new LatencyStats holding this one's samples and the others' (stage by stage, in that order)."""
        out = LatencyStats(max(s.max_samples for s in (self, *others)))
        for stats in (self, *others):
            for stage, values in stats._samples.items():
                out._samples.setdefault(stage, deque(maxlen=out.max_samples)).extend(values)
        return out


def percentile_gap_interval(a_rounds, b_rounds, q: float = 99.0, limit_ms: float = 1.0,
                            resamples: int = 2000, seed: int = 0) -> dict:
    """How sure a pooled percentile difference is: q-th percentile of a's pooled samples minus b's, with a 95 %
    bootstrap interval and the share of resamples in which the gap exceeds `limit_ms`.

    `a_rounds` / `b_rounds` are lists of per-round sample lists. Each resample draws every round's samples with
    replacement from that round (stratified: a slow round stays one round's worth of frames), pools them and
    takes the gap. Why: a p99 of 900 frames rests on its ~9 slowest, so two runs of one unchanged stack differ by
    about a millisecond; the interval says how much of a measured gap that sampling alone explains. It does not
    cover what changes between separate runs (the VM's slower and faster stretches): only repeated runs show that.
    """
    rng = np.random.default_rng(seed)
    a = [np.asarray(r, dtype=np.float64) for r in a_rounds]
    b = [np.asarray(r, dtype=np.float64) for r in b_rounds]
    if not all(r.size for r in a + b) or not a or not b:
        raise ValueError('every round needs at least one sample')

    def resample(rounds):  # (R, n_r) -> one pooled resample
        return np.concatenate([r[rng.integers(0, r.size, r.size)] for r in rounds])

    gaps = np.array([np.percentile(resample(a), q) - np.percentile(resample(b), q) for _ in range(resamples)])
    lo, hi = np.percentile(gaps, [2.5, 97.5])
    gap = float(np.percentile(np.concatenate(a), q) - np.percentile(np.concatenate(b), q))
    return {'gap_ms': gap, 'ci95_ms': [float(lo), float(hi)], 'limit_ms': limit_ms,
            'share_above_limit': float(np.mean(gaps > limit_ms)), 'resamples': resamples, 'q': q}
