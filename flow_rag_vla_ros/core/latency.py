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
