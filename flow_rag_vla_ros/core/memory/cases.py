"""Failure cases: the record type of the failure memory, its near-duplicate merge and its (de)serialisation
(JSON journal records with base64 float32 arrays; column tables for snapshots and exports)."""
from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass

import numpy as np

from flow_rag_vla_ros.core.memory.config import MemoryConfig

FORMAT_VERSION = 1


def _enc(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a, dtype='<f4')
    return {'shape': list(a.shape), 'f32': base64.b64encode(a.tobytes()).decode()}


def _dec(d: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d['f32']), dtype='<f4').reshape(d['shape']).astype(np.float32)


@dataclass
class FailureCase:
    embedding: np.ndarray                      # (D,) state embedding (stored L2-normalised for cosine)
    failed_chunk: np.ndarray                   # (H, 4) the chunk being executed when the failure happened
    failure_type: str                          # one of spec.FAILURE_TYPES
    correction_chunk: np.ndarray | None = None  # (H, 4) a chunk that succeeded from a similar state
    confidence: float | None = None            # None -> config.initial_confidence
    seen: int = 1
    corrected_success: int = 0
    corrected_failure: int = 0
    task: str = ''
    id: int = -1
    created: float = 0.0
    updated: float = 0.0

    @property
    def utility(self) -> float:
        return max(float(self.confidence or 0.0), 0.05) * (self.seen + self.corrected_success)

    def to_record(self) -> dict:
        d = {k: getattr(self, k) for k in ('failure_type', 'confidence', 'seen', 'corrected_success',
                                            'corrected_failure', 'task', 'id', 'created', 'updated')}
        d['embedding'] = _enc(self.embedding)
        d['failed_chunk'] = _enc(self.failed_chunk)
        d['correction_chunk'] = None if self.correction_chunk is None else _enc(self.correction_chunk)
        return d

    @classmethod
    def from_record(cls, d: dict) -> 'FailureCase':
        d = dict(d)
        for k in ('embedding', 'failed_chunk'):
            d[k] = _dec(d[k])
        d['correction_chunk'] = None if d.get('correction_chunk') is None else _dec(d['correction_chunk'])
        return cls(**d)

    def copy(self) -> 'FailureCase':
        return dataclasses.replace(self)


def merge_cases(old: FailureCase, new: FailureCase, now: float) -> FailureCase:
    """Near-duplicate merge: counts add up, the failed chunk becomes the seen-weighted mean, an existing
    correction (and the confidence earned with it) is kept unless the new case brings a correction with a higher
    confidence (a fresh success where the stored chunk has since failed)."""
    total = old.seen + new.seen
    failed = (old.failed_chunk * old.seen + new.failed_chunk * new.seen) / total
    take_new = new.correction_chunk is not None and (
        old.correction_chunk is None or (new.confidence or 0.0) > (old.confidence or 0.0))
    return dataclasses.replace(
        old, failed_chunk=failed.astype(np.float32), seen=total,
        correction_chunk=new.correction_chunk if take_new else old.correction_chunk,
        confidence=new.confidence if take_new else old.confidence,
        corrected_success=old.corrected_success + new.corrected_success,
        corrected_failure=old.corrected_failure + new.corrected_failure,
        task=old.task or new.task, updated=now)


def cases_to_tables(cases: list[FailureCase], c: MemoryConfig) -> tuple[dict[str, np.ndarray], dict]:
    n = len(cases)
    zeros = np.zeros((c.horizon, 4), np.float32)
    tensors = {
        'ids': np.array([k.id for k in cases], np.int64),
        'embeddings': np.stack([k.embedding for k in cases]) if n else np.zeros((0, c.dim), np.float32),
        'failed_chunks': np.stack([k.failed_chunk for k in cases]) if n else np.zeros((0, c.horizon, 4), np.float32),
        'correction_chunks': np.stack([zeros if k.correction_chunk is None else k.correction_chunk for k in cases])
        if n else np.zeros((0, c.horizon, 4), np.float32),
        'has_correction': np.array([k.correction_chunk is not None for k in cases], np.uint8),
        'confidence': np.array([k.confidence for k in cases], np.float64),
        'counts': np.array([[k.seen, k.corrected_success, k.corrected_failure] for k in cases], np.int64).reshape(n, 3),
        'times': np.array([[k.created, k.updated] for k in cases], np.float64).reshape(n, 2),
    }
    meta = {'version': FORMAT_VERSION, 'dim': c.dim, 'metric': c.metric, 'horizon': c.horizon,
            'failure_types': [k.failure_type for k in cases], 'tasks': [k.task for k in cases]}
    return tensors, meta


def cases_from_tables(t: dict[str, np.ndarray], meta: dict) -> list[FailureCase]:
    return [FailureCase(
        embedding=t['embeddings'][i].copy(), failed_chunk=t['failed_chunks'][i].copy(),
        failure_type=meta['failure_types'][i], task=meta['tasks'][i],
        correction_chunk=t['correction_chunks'][i].copy() if t['has_correction'][i] else None,
        confidence=float(t['confidence'][i]), seen=int(t['counts'][i, 0]),
        corrected_success=int(t['counts'][i, 1]), corrected_failure=int(t['counts'][i, 2]),
        id=int(t['ids'][i]), created=float(t['times'][i, 0]), updated=float(t['times'][i, 1]))
        for i in range(len(t['ids']))]
