"""FailureMemory: a durable FAISS memory of failure cases (state embedding -> failed chunk, correction).

Thread-safety: writes (add / merge / update / remove / prune / rebuild) hold the write side of a
readers-writer lock; searches hold the read side and run concurrently with each other (GPU indexes are not
thread-safe, so with a GPU index searches take the write side). Each write is journaled (and fsynced) before
the call returns; see journal.py for the on-disk protocol and index.py for index choice and similarity.

Utility (what `prune` keeps): `max(confidence, 0.05) * (seen + corrected_success)` - a case that keeps
happening and whose correction works is worth most; the 0.05 floor keeps a frequent failure whose correction
does not work yet (it still predicts risk).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time

import faiss
import numpy as np

from flow_rag_vla_ros.core.memory import index as ix
from flow_rag_vla_ros.core.memory.cases import FailureCase, cases_from_tables, cases_to_tables, merge_cases
from flow_rag_vla_ros.core.memory.config import MemoryConfig
from flow_rag_vla_ros.core.memory.journal import (Journal, lock_directory, read_snapshot, read_tables, write_snapshot,
                                                 write_tables)

log = logging.getLogger(__name__)
IMPORT_BATCH = 500


def check_embedding(meta: dict, embedding_id: str, what: str) -> None:
    """Refuse a snapshot or export whose embeddings were made another way (their similarities to this memory's
    states would mean nothing). Files from before the tag (stop 24) carry none: accepted, with a warning."""
    stored = meta.get('embedding', '')
    if stored and embedding_id and stored != embedding_id:
        raise ValueError(f'{what} holds embeddings made as {stored!r}, this memory makes {embedding_id!r} '
                         f'(see core/memory/embedding.py: set the monitor\'s embedding parameters to match)')
    if not stored and embedding_id:
        log.warning('%s does not say how its embeddings were made (written before stop 24; the monitor\'s '
                    'default embedding then was the same as now)', what)


class FailureMemory:
    """See module docstring. `FailureMemory(config)` with `config.directory` set recovers from disk.
    `embedding_id` names how the caller makes embeddings (`EmbeddingConfig.embedding_id`); snapshots and exports
    record it, and one made another way is refused. Empty: unchecked (tests, benchmarks with random vectors)."""

    def __init__(self, config: MemoryConfig | None = None, embedding_id: str = ''):
        self.config = c = config or MemoryConfig()
        self.embedding_id = embedding_id
        self._cases: dict[int, FailureCase] = {}
        self._lock = ix.RWLock()
        self._snapshot_lock = threading.Lock()
        self._next_id = 1
        self._since_snapshot = 0
        self._journal: Journal | None = None
        self._dir_lock: int | None = None  # fd holding the directory's writer lock
        self._set_index(*ix.build_index(c, np.zeros((0, c.dim), np.float32), np.zeros(0, np.int64)), trained_n=0)
        if c.directory:
            self._dir_lock = lock_directory(c.directory)
            try:
                self._recover()
            except BaseException:
                self._release_directory()
                raise

    @classmethod
    def open(cls, config: MemoryConfig, embedding_id: str = '') -> 'FailureMemory':
        """Load the latest snapshot, replay the journal (repairing a torn tail), ready for appends."""
        return cls(config, embedding_id)

    # -- recovery / snapshots -------------------------------------------------------------------
    def _recover(self) -> None:
        c = self.config
        snap = read_snapshot(c.directory)
        segment = 0
        if snap is not None:
            tensors, meta = snap
            require_same = (meta.get('dim'), meta.get('metric'))
            if require_same != (c.dim, c.metric):
                raise ValueError(f'snapshot in {c.directory} has dim/metric {require_same}, config {(c.dim, c.metric)}')
            check_embedding(meta, self.embedding_id, f'snapshot in {c.directory}')
            self.embedding_id = self.embedding_id or meta.get('embedding', '')  # unchecked open: keep the tag
            for case in cases_from_tables(tensors, meta):
                self._cases[case.id] = case
            segment, self._next_id = int(meta['segment']), int(meta['next_id'])
            if 'faiss_index' in tensors and meta.get('index_kind') == ix.choose_kind(c, len(self._cases)):
                self._set_index(faiss.deserialize_index(tensors['faiss_index']), meta['index_kind'],
                                int(meta.get('trained_n', 0)))
            else:
                self._rebuild()
        self._journal = Journal(c.directory, fsync=c.fsync)
        replayed = 0
        for record in self._journal.replay(after_segment=segment):
            self._apply(record)
            replayed += 1
        self._since_snapshot = replayed
        self._maybe_rebuild()
        log.info('failure memory %s: %d cases (%s index, %d journal records replayed)',
                 c.directory, len(self._cases), self._kind, replayed)
        if self.embedding_id and not (snap is not None and snap[1].get('embedding')):
            self.snapshot()  # record how this directory's embeddings are made before the first journal record

    def snapshot(self, blocking: bool = True) -> bool:
        """Write a snapshot and drop the journal segments it covers. Returns False if one was already running."""
        if self._journal is None or not self._snapshot_lock.acquire(blocking=blocking):
            return False
        try:
            with self._lock.write():
                tensors, meta = cases_to_tables(list(self._cases.values()), self.config)
                index = faiss.index_gpu_to_cpu(self._index) if self._on_gpu else self._index
                tensors['faiss_index'] = faiss.serialize_index(index)
                meta.update(segment=self._journal.rotate(), next_id=self._next_id, index_kind=self._kind,
                            trained_n=self._trained_n, embedding=self.embedding_id)
                self._since_snapshot = 0
            write_snapshot(self.config.directory, tensors, meta)
            with self._lock.write():
                self._journal.drop_through(meta['segment'])
            return True
        finally:
            self._snapshot_lock.release()

    def close(self) -> None:
        with self._lock.write():
            if self._journal is not None:
                self._journal.close()
                self._journal = None
            self._release_directory()

    def _release_directory(self) -> None:
        if self._dir_lock is not None:
            os.close(self._dir_lock)  # closing the fd drops the flock
            self._dir_lock = None

    # -- index management (callers hold the write lock) -----------------------------------------
    def _set_index(self, index: faiss.Index, kind: str, trained_n: int) -> None:
        self._index, self._kind, self._trained_n = index, kind, trained_n
        self._on_gpu = 'Gpu' in type(index).__name__

    def _rebuild(self) -> None:
        ids = np.fromiter(self._cases.keys(), dtype=np.int64, count=len(self._cases))
        x = np.stack([self._cases[i].embedding for i in ids]) if len(ids) else np.zeros((0, self.config.dim), np.float32)
        self._set_index(*ix.build_index(self.config, x, ids), trained_n=len(ids))

    def _maybe_rebuild(self) -> None:
        n = len(self._cases)
        if ix.choose_kind(self.config, n) != self._kind or (
                self._kind == 'ivf' and (n > 4 * self._trained_n or 4 * n < self._trained_n)):
            self._rebuild()

    def _apply(self, record: dict) -> None:
        """Apply one journal record to the table and index (no journaling)."""
        if record['op'] == 'put':
            for d in record['cases']:
                case = FailureCase.from_record(d)
                if case.id not in self._cases:
                    self._index.add_with_ids(case.embedding[None], np.array([case.id], np.int64))
                self._cases[case.id] = case
                self._next_id = max(self._next_id, case.id + 1)
        elif record['op'] == 'remove':
            ids = [i for i in record['ids'] if i in self._cases]
            for i in ids:
                del self._cases[i]
            if ids and (self._kind == 'hnsw' or self._on_gpu):
                self._rebuild()  # HNSW (and GPU copies) cannot remove ids: rebuild from the case table
            elif ids:
                self._index.remove_ids(np.asarray(ids, dtype=np.int64))
        else:
            raise ValueError(f'unknown journal op {record["op"]!r}')

    def _commit(self, record: dict) -> None:
        """Journal (durably) then apply. Caller holds the write lock."""
        if self._journal is not None:
            self._journal.append(record)
            self._since_snapshot += 1
        self._apply(record)

    def _after_write(self) -> None:
        c = self.config
        if len(self._cases) > c.max_size:
            self.prune(int(c.max_size * c.prune_fraction))
        if self._journal is not None and c.snapshot_every and self._since_snapshot >= c.snapshot_every:
            self.snapshot(blocking=False)

    # -- public API -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._cases)

    @property
    def index_kind(self) -> str:
        return self._kind

    def get(self, case_id: int) -> FailureCase | None:
        with self._lock.read():
            case = self._cases.get(case_id)
            return None if case is None else case.copy()

    def cases(self) -> list[FailureCase]:
        with self._lock.read():
            return [c.copy() for c in self._cases.values()]

    def _validated(self, case: FailureCase) -> FailureCase:
        h = self.config.horizon
        failed = np.clip(np.asarray(case.failed_chunk, np.float32), -1, 1)
        if failed.shape != (h, 4):
            raise ValueError(f'failed_chunk must be ({h}, 4), got {failed.shape}')
        corr = None if case.correction_chunk is None else np.clip(np.asarray(case.correction_chunk, np.float32), -1, 1)
        if corr is not None and corr.shape != (h, 4):
            raise ValueError(f'correction_chunk must be ({h}, 4), got {corr.shape}')
        conf = self.config.initial_confidence if case.confidence is None else float(np.clip(case.confidence, 0, 1))
        return dataclasses.replace(case, embedding=ix.prepare(self.config, case.embedding)[0],
                                   failed_chunk=failed, correction_chunk=corr, confidence=conf)

    def _add_locked(self, case: FailureCase, now: float) -> tuple[FailureCase, bool]:
        """The case as it will be stored (new id, or merged into a near duplicate) - not yet committed."""
        for hit, sim in self._search_locked(case.embedding[None], 8, self.config.dedup_threshold):
            if hit.failure_type == case.failure_type:
                return merge_cases(hit, case, now), True
        case = dataclasses.replace(case, id=self._next_id, created=case.created or now, updated=now)
        self._next_id += 1
        return case, False

    def add(self, case: FailureCase) -> tuple[int, bool]:
        """Store a failure (or merge it into a near duplicate of the same type). Durable when it returns."""
        case = self._validated(case)
        with self._lock.write():
            stored, merged = self._add_locked(case, time.time())
            self._commit({'op': 'put', 'cases': [stored.to_record()]})
            self._maybe_rebuild()
        self._after_write()
        return stored.id, merged

    def add_many(self, cases: list[FailureCase]) -> tuple[int, int]:
        """Store many cases (each merges into a near duplicate, earlier ones of the batch included), one
        fsynced journal record per `IMPORT_BATCH`; durable when it returns. Returns (added, merged)."""
        incoming = [self._validated(case) for case in cases]
        added = merged = 0
        for start in range(0, len(incoming), IMPORT_BATCH):
            with self._lock.write():
                records = []
                for case in incoming[start:start + IMPORT_BATCH]:
                    stored, was_merged = self._add_locked(case, time.time())
                    self._apply({'op': 'put', 'cases': [stored.to_record()]})  # later cases dedup against it
                    records.append(stored.to_record())
                    merged += was_merged
                    added += not was_merged
                if self._journal is not None:  # replay re-applies the batch's puts in order
                    self._journal.append({'op': 'put', 'cases': records})
                    self._since_snapshot += 1
                self._maybe_rebuild()
            self._after_write()
        return added, merged

    def _search_locked(self, x: np.ndarray, k: int, threshold: float) -> list[tuple[FailureCase, float]]:
        if not self._cases:
            return []
        scores, ids = self._index.search(x, min(k, len(self._cases)))
        sims = ix.to_similarity(self.config, scores[0])
        return [(self._cases[int(i)], float(s)) for i, s in zip(ids[0], sims)
                if i >= 0 and s >= threshold and int(i) in self._cases]

    def search(self, embedding: np.ndarray, k: int | None = None,
               threshold: float | None = None) -> list[tuple[FailureCase, float]]:
        """Top-k cases with similarity >= threshold (default config.similarity_threshold), best first."""
        x = ix.prepare(self.config, embedding)
        thr = self.config.similarity_threshold if threshold is None else threshold
        lock = self._lock.write() if self._on_gpu else self._lock.read()
        with lock:
            return [(c.copy(), s) for c, s in self._search_locked(x, k or self.config.top_k, thr)]

    def _update(self, case_id: int, change) -> FailureCase:
        with self._lock.write():
            if case_id not in self._cases:
                raise KeyError(f'no failure case with id {case_id}')
            case = change(self._cases[case_id].copy())
            case.updated = time.time()
            self._commit({'op': 'put', 'cases': [case.to_record()]})
        self._after_write()
        return case.copy()

    def update_confidence(self, case_id: int, success: bool) -> FailureCase:
        """A correction that led to success: c += r(1 - c); one that failed again: c -= r c. Stays in [0, 1]."""
        r = self.config.confidence_rate

        def change(case: FailureCase) -> FailureCase:
            c = float(case.confidence)
            case.confidence = float(np.clip(c + r * (1 - c) if success else c - r * c, 0.0, 1.0))
            if success:
                case.corrected_success += 1
            else:
                case.corrected_failure += 1
            return case
        return self._update(case_id, change)

    def set_correction(self, case_id: int, chunk: np.ndarray, confidence: float | None = None) -> FailureCase:
        """Store the chunk that succeeded from this case's state (clamped to [-1, 1])."""
        chunk = np.clip(np.asarray(chunk, np.float32), -1, 1)
        if chunk.shape != (self.config.horizon, 4):
            raise ValueError(f'correction chunk must be ({self.config.horizon}, 4), got {chunk.shape}')

        def change(case: FailureCase) -> FailureCase:
            case.correction_chunk = chunk
            if confidence is not None:
                case.confidence = float(np.clip(confidence, 0, 1))
            return case
        return self._update(case_id, change)

    def remove(self, ids) -> int:
        with self._lock.write():
            ids = sorted({int(i) for i in np.atleast_1d(ids)} & self._cases.keys())
            if ids:
                self._commit({'op': 'remove', 'ids': ids})
                self._maybe_rebuild()
        if ids:
            self._after_write()
        return len(ids)

    def _clusters_locked(self, failure_type: str | None) -> list[list[int]]:
        cases = [c for c in self._cases.values() if failure_type is None or c.failure_type == failure_type]
        if not cases:
            return []
        x = np.stack([c.embedding for c in cases])
        lims, _, nbr = ix.exact_index(self.config, x).range_search(x, ix.similarity_radius(self.config, self.config.cluster_threshold))
        parent = list(range(len(cases)))

        def find(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i
        for i in range(len(cases)):
            for j in nbr[lims[i]:lims[i + 1]]:
                parent[find(int(j))] = find(i)
        groups: dict[int, list[int]] = {}
        for i, c in enumerate(cases):
            groups.setdefault(find(i), []).append(c.id)
        return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))

    def clusters(self, failure_type: str | None = None) -> list[list[int]]:
        """Case ids grouped by connected components of `similarity >= cluster_threshold` (per failure type:
        cases of different types never share a cluster). Largest first."""
        with self._lock.read():
            if failure_type is not None:
                return self._clusters_locked(failure_type)
            types = sorted({c.failure_type for c in self._cases.values()})
            return sorted((g for t in types for g in self._clusters_locked(t)), key=lambda g: (-len(g), g[0]))

    def prune(self, max_size: int | None = None) -> list[int]:
        """Shrink to max_size cases: first the most useful case of every cluster, then the most useful rest
        (utility ties broken by recency). Returns the removed ids."""
        max_size = self.config.max_size if max_size is None else max_size
        with self._lock.write():
            if len(self._cases) <= max_size:
                return []
            rank = lambda i: (self._cases[i].utility, self._cases[i].updated, i)  # noqa: E731
            types = {c.failure_type for c in self._cases.values()}
            groups = [g for t in sorted(types) for g in self._clusters_locked(t)]
            heads = sorted((max(g, key=rank) for g in groups), key=rank, reverse=True)
            head_set = set(heads)
            rest = sorted((i for i in self._cases if i not in head_set), key=rank, reverse=True)
            keep = set((heads + rest)[:max_size])
            removed = sorted(set(self._cases) - keep)
            self._commit({'op': 'remove', 'ids': removed})
            self._maybe_rebuild()
        return removed

    # -- export / import ------------------------------------------------------------------------
    def export(self, path: str) -> int:
        """Write every case to one portable safetensors file (arrays + JSON metadata). Returns the count."""
        with self._lock.read():
            cases = list(self._cases.values())
            tensors, meta = cases_to_tables(cases, self.config)
            write_tables(path, tensors, {**meta, 'embedding': self.embedding_id})
        return len(cases)

    def import_(self, path: str) -> tuple[int, int]:
        """Add the cases of an export (new ids here; near duplicates merge). Returns (added, merged).
        Acknowledged (journaled) batch by batch."""
        tensors, meta = read_tables(path)
        if (meta.get('dim'), meta.get('horizon')) != (self.config.dim, self.config.horizon):
            raise ValueError(f'export {path} has dim/horizon {(meta.get("dim"), meta.get("horizon"))}, '
                             f'memory expects {(self.config.dim, self.config.horizon)}')
        check_embedding(meta, self.embedding_id, f'export {path}')
        return self.add_many([dataclasses.replace(k, id=-1) for k in cases_from_tables(tensors, meta)])
