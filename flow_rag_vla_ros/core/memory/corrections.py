"""Corrections: what to do instead when the memory says "this state failed before".

Preference order in `propose_correction(memory_hits, current_chunk)`:
1. a stored correction chunk - the chunk that actually succeeded after a failure in a similar state - from the
   hit with the best `similarity * confidence` (cases whose confidence fell below `min_stored_confidence`,
   i.e. whose correction kept failing, are skipped);
2. otherwise the per-type corrective transform of the current chunk, for the most similar hit's failure type,
   among the hits whose confidence is at least `min_case_confidence`: a case loses confidence with every
   episode that failed again after it matched, so a transform that keeps failing in its state stops being
   proposed there (without this gate a transform's confidence never learned from its outcomes). With
   `escalation_per_failure` > 0, each failed try until then makes the next one stronger in the case's own state
   (`escalation`).
Correction.confidence = case confidence * similarity (stored) or `transform_confidence` * similarity (transform).
Every output is clamped to [-1, 1]. Actions are `[dx, dy, dz, gripper]`; gripper < 0 closes (panda-gym).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from flow_rag_vla_ros.core.config import param, require
from flow_rag_vla_ros.core.memory.cases import FailureCase
from flow_rag_vla_ros.core.spec import FAILURE_TYPES


@dataclass
class CorrectionConfig:
    grasp_close_earlier_steps: int = param(2, 'grasp_failure: start closing this many steps earlier')
    grasp_dz: float = param(-0.2, 'grasp_failure: added to dz before closing (approach lower)')
    drop_speed_scale: float = param(0.5, 'drop: xyz scale (move slower) while the gripper is held closed')
    collision_dz: float = param(0.3, 'collision: added to dz (approach higher)')
    collision_speed_scale: float = param(0.6, 'collision: xy scale (slow down)')
    misalignment_scale: float = param(0.5, 'misalignment: xyz scale (slow, finer final approach)')
    timeout_scale: float = param(1.5, 'timeout: xyz scale (move faster)')
    min_stored_confidence: float = param(0.2, 'stored correction chunks below this confidence are not used')
    transform_confidence: float = param(0.5, 'confidence of a transform correction (times similarity)')
    min_case_confidence: float = param(0.2, 'cases below this confidence (episodes kept failing after they '
                                            'matched) propose no transform')
    # revisit runs (README "RAG failure memory", six runs): off 139 successes / 61 repetitions; 1.0 applied at every
    # match 142 / 56 but random Reach with shifted_camera 17 of 60 (20 off); 1.0 in the case's own state only
    # (escalation_min_similarity 0.999) 141 / 56 and Reach 20 of 60
    escalation_per_failure: float = param(1.0, "a transform that failed in its state n times (the case's "
                                               'corrected_failure) is applied with strength 1 + n * this '
                                               '(correct_chunk); 0 = always the same transform')
    max_escalation: float = param(3.0, 'cap on that strength factor')
    # a case's failed tries say something about the state they were made in, not about a look-alike state of
    # another situation (random Reach with shifted_camera lost 3 of 60 episodes to ungated escalation)
    escalation_min_similarity: float = param(0.999, 'escalate only where the state is at least this similar to '
                                                    "the case's own (a revisit of it); elsewhere strength 1")

    def __post_init__(self):
        require(self.grasp_close_earlier_steps >= 0, 'grasp_close_earlier_steps must be >= 0')
        for name in ('drop_speed_scale', 'collision_speed_scale', 'misalignment_scale', 'timeout_scale'):
            require(getattr(self, name) > 0, f'{name} must be > 0')
        require(self.escalation_per_failure >= 0 and self.max_escalation >= 1,
                'escalation_per_failure >= 0, max_escalation >= 1')
        require(all(0 <= v <= 1 for v in (self.min_stored_confidence, self.transform_confidence,
                                           self.min_case_confidence)), 'confidences must be in [0, 1]')
        require(0 <= self.escalation_min_similarity <= 1, 'escalation_min_similarity must be in [0, 1]')


@dataclass
class Correction:
    chunk: np.ndarray        # (H, 4) in [-1, 1]
    confidence: float        # [0, 1]
    failure_type: str
    case_id: int
    similarity: float
    source: str              # 'stored' | 'transform'


def correct_chunk(chunk: np.ndarray, failure_type: str, config: CorrectionConfig | None = None,
                  strength: float = 1.0) -> np.ndarray:
    """Per-type corrective transform of an (H, 4) chunk, applied `strength` times over: offsets and step counts
    grow by that factor, scales are raised to that power (a slow-down never turns into a reversal)."""
    c = config or CorrectionConfig()
    out = np.asarray(chunk, np.float32).copy()
    if out.ndim != 2 or out.shape[1] != 4:
        raise ValueError(f'chunk must be (H, 4), got {out.shape}')
    xyz, grip = out[:, :3], out[:, 3]
    if failure_type == 'grasp_failure':  # close harder and earlier, approach lower until closing
        closing = np.flatnonzero(grip < 0)
        earlier = int(round(c.grasp_close_earlier_steps * strength))
        start = max(0, int(closing[0]) - earlier) if len(closing) else len(out)
        grip[grip < 0] = -1.0  # harder
        if len(closing):
            grip[start:closing[0]] = -1.0  # earlier (a later release, grip > 0, is kept)
        xyz[:start, 2] += c.grasp_dz * strength
    elif failure_type == 'drop':  # keep the gripper closed, move slower
        grip[:] = -1.0
        xyz *= c.drop_speed_scale ** strength
    elif failure_type == 'collision':  # approach higher, slow down laterally
        xyz[:, 2] += c.collision_dz * strength
        xyz[:, :2] *= c.collision_speed_scale ** strength
    elif failure_type == 'misalignment':
        xyz *= c.misalignment_scale ** strength
    elif failure_type == 'timeout':
        xyz *= c.timeout_scale ** strength
    else:
        raise ValueError(f'unknown failure type {failure_type!r}; known: {FAILURE_TYPES}')
    return np.clip(out, -1.0, 1.0)


def escalation(case: FailureCase, similarity: float, config: CorrectionConfig) -> float:
    """How much stronger than configured a transform is applied in a state `similarity`-like this case's: in the
    case's own state (similarity >= `escalation_min_similarity`), each episode that failed again after the case
    matched (the same transform tried, the same failure) adds `escalation_per_failure`; elsewhere 1."""
    if similarity < config.escalation_min_similarity:
        return 1.0
    return min(1.0 + config.escalation_per_failure * case.corrected_failure, config.max_escalation)


def propose_correction(memory_hits: Sequence[tuple[FailureCase, float]], current_chunk: np.ndarray,
                       config: CorrectionConfig | None = None) -> Correction | None:
    """The best correction for the current chunk given search hits `[(case, similarity), ...]` (None if no hit)."""
    c = config or CorrectionConfig()
    if not memory_hits:
        return None
    stored = [(case, sim) for case, sim in memory_hits
              if case.correction_chunk is not None and (case.confidence or 0.0) >= c.min_stored_confidence]
    if stored:
        case, sim = max(stored, key=lambda h: h[1] * (h[0].confidence or 0.0))
        chunk = np.clip(np.asarray(case.correction_chunk, np.float32), -1.0, 1.0)
        conf, source = float(case.confidence) * max(sim, 0.0), 'stored'
    else:
        trusted = [(case, sim) for case, sim in memory_hits if (case.confidence or 0.0) >= c.min_case_confidence]
        if not trusted:
            return None
        case, sim = max(trusted, key=lambda h: h[1])
        chunk = correct_chunk(current_chunk, case.failure_type, c, escalation(case, sim, c))
        conf, source = c.transform_confidence * max(sim, 0.0), 'transform'
    return Correction(chunk=chunk, confidence=float(np.clip(conf, 0.0, 1.0)), failure_type=case.failure_type,
                      case_id=int(case.id), similarity=float(sim), source=source)
