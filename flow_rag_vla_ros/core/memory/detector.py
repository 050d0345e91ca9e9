"""Failure detection: rule-based classification from sim/robot signals, and a learned binary failure head.

Rules (`classify_failure`), checked in this order; geometry is panda-gym's (table top z = 0, 4 cm cube resting
at z = rest_height = 0.02, goal reached when distance < success_threshold = 0.05; "achieved" = object position
for push / pick_and_place, end-effector position for reach):
- success:       distance(achieved, goal) < success_threshold -> None (no failure).
- collision:     the robot (hand or fingers) presses on the table: summed table contact normal force
                 > collision_force (N). Object-table contact is not a collision.
- drop:          the object was lifted (max of its height history >= rest_height + lift_margin), has since
                 fallen by more than drop_fall below that peak, and is no longer in the hand
                 (distance(ee, object) > grasp_radius).
- grasp_failure: gripper commanded closed (gripper_command < 0) with the end effector within grasp_radius of
                 the object, yet the fingers closed on nothing (finger_width < closed_width), and the object
                 was never lifted. Only for tasks with an object and a free gripper (pick_and_place).
- misalignment:  episode over (step >= max_steps) and achieved within misalignment_factor * success_threshold
                 of the goal (close but not there).
- timeout:       episode over (step >= max_steps) and achieved farther than that.
Otherwise None (nothing wrong yet). Collision / drop / grasp_failure can fire mid-episode; misalignment /
timeout only at the end.

Failure head (`FailureHead`): logistic regression (numpy, no torch: it runs inside the monitor) on
`[e_before, e_after, e_after - e_before, |e_after - e_before|, e_before * e_after]`, features standardised with
training statistics; trained by full-batch Adam with L2. Saved as `failure_head.safetensors` + `failure_head.json`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from safetensors.numpy import load_file, save_file

from flow_rag_vla_ros.core.config import param, require


@dataclass
class DetectorConfig:
    rest_height: float = param(0.02, 'object centre height resting on the table (m)')
    lift_margin: float = param(0.01, 'object counts as lifted above rest_height + this (m)')
    drop_fall: float = param(0.02, 'drop: fall below the peak height larger than this (m)')
    grasp_radius: float = param(0.03, 'end effector within this of the object = object in/at the hand (m)')
    closed_width: float = param(0.01, 'finger width below this = fingers closed on nothing (m)')
    collision_force: float = param(1.0, 'robot-table contact normal force above this = collision (N)')
    misalignment_factor: float = param(2.0, 'end-of-episode distance below factor * success_threshold = misalignment')

    def __post_init__(self):
        require(self.grasp_radius > 0 and self.closed_width > 0 and self.misalignment_factor > 1,
                'grasp_radius, closed_width > 0 and misalignment_factor > 1')


@dataclass
class FailureSignals:
    ee_pos: Sequence[float]
    goal_pos: Sequence[float]
    object_pos: Sequence[float] | None = None        # None for reach
    finger_width: float = 0.0
    gripper_command: float = 0.0                     # last gripper action; < 0 closes
    table_contact_force: float = 0.0                 # summed normal force of robot-table contacts (N)
    object_height_history: Sequence[float] = field(default_factory=list)  # object z per step so far
    step: int = 0
    max_steps: int = 50
    success_threshold: float = 0.05
    task: str = 'pick_and_place'


def classify_failure(s: FailureSignals, config: DetectorConfig | None = None) -> str | None:
    """Failure type for the current signals, or None (see the module docstring for the definitions)."""
    c = config or DetectorConfig()
    ee, goal = np.asarray(s.ee_pos, float), np.asarray(s.goal_pos, float)
    obj = None if s.object_pos is None else np.asarray(s.object_pos, float)
    achieved = ee if (obj is None or s.task == 'reach') else obj
    distance = float(np.linalg.norm(achieved - goal))
    if distance < s.success_threshold:
        return None
    if s.table_contact_force > c.collision_force:
        return 'collision'
    if obj is not None and s.task != 'reach':
        heights = np.asarray(list(s.object_height_history) or [obj[2]], float)
        peak, now = float(heights.max()), float(obj[2])
        lifted = peak >= c.rest_height + c.lift_margin
        in_hand = float(np.linalg.norm(ee - obj)) <= c.grasp_radius
        if lifted and now < peak - c.drop_fall and not in_hand:
            return 'drop'
        if (s.task == 'pick_and_place' and not lifted and in_hand and s.gripper_command < 0
                and s.finger_width < c.closed_width):
            return 'grasp_failure'
    if s.step >= s.max_steps:
        return 'misalignment' if distance < c.misalignment_factor * s.success_threshold else 'timeout'
    return None


def head_features(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    b, a = np.atleast_2d(np.asarray(before, np.float32)), np.atleast_2d(np.asarray(after, np.float32))
    if b.shape != a.shape:
        raise ValueError(f'before {b.shape} and after {a.shape} must match')
    d = a - b
    return np.concatenate([b, a, d, np.abs(d), a * b], axis=1)


class FailureHead:
    """Binary failure probability from (embedding before, embedding after) a chunk executes."""

    def __init__(self, dim: int, threshold: float = 0.5):
        self.dim, self.threshold = dim, threshold
        n = 5 * dim
        self.w, self.b = np.zeros(n, np.float32), np.float32(0.0)
        self.mean, self.std = np.zeros(n, np.float32), np.ones(n, np.float32)

    def fit(self, x_before: np.ndarray, x_after: np.ndarray, y: np.ndarray, epochs: int = 300,
            lr: float = 0.05, l2: float = 1e-3, seed: int = 0) -> 'FailureHead':
        f = head_features(x_before, x_after).astype(np.float64)
        y = np.asarray(y, np.float64).reshape(-1)
        if len(y) != len(f) or len(set(y.tolist()) - {0.0, 1.0}):
            raise ValueError('y must hold one 0/1 label per example')
        self.mean, self.std = f.mean(0).astype(np.float32), (f.std(0) + 1e-6).astype(np.float32)
        z = (f - self.mean) / self.std
        rng = np.random.default_rng(seed)
        w, b = 0.01 * rng.standard_normal(z.shape[1]), 0.0
        pos = max(y.mean(), 1e-3)
        weights = np.where(y > 0.5, 0.5 / pos, 0.5 / max(1 - pos, 1e-3))  # balance classes
        m_w, v_w, m_b, v_b = np.zeros_like(w), np.zeros_like(w), 0.0, 0.0
        for t in range(1, epochs + 1):
            p = 1.0 / (1.0 + np.exp(-np.clip(z @ w + b, -30, 30)))
            g = weights * (p - y) / len(y)
            gw, gb = z.T @ g + l2 * w, g.sum()
            m_w, v_w = 0.9 * m_w + 0.1 * gw, 0.999 * v_w + 0.001 * gw ** 2
            m_b, v_b = 0.9 * m_b + 0.1 * gb, 0.999 * v_b + 0.001 * gb ** 2
            corr = np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
            w -= lr * corr * m_w / (np.sqrt(v_w) + 1e-8)
            b -= lr * corr * m_b / (np.sqrt(v_b) + 1e-8)
        self.w, self.b = w.astype(np.float32), np.float32(b)
        return self

    def predict_proba(self, x_before: np.ndarray, x_after: np.ndarray) -> np.ndarray:
        z = (head_features(x_before, x_after) - self.mean) / self.std
        return 1.0 / (1.0 + np.exp(-np.clip(z @ self.w + self.b, -30, 30)))

    def predict(self, x_before: np.ndarray, x_after: np.ndarray) -> np.ndarray:
        return self.predict_proba(x_before, x_after) >= self.threshold

    def precision_recall(self, x_before: np.ndarray, x_after: np.ndarray, y: np.ndarray) -> dict:
        """Precision / recall / F1 / accuracy of `predict` on (held-out) labelled pairs; failure = positive."""
        pred, y = self.predict(x_before, x_after), np.asarray(y).reshape(-1) > 0.5
        tp, fp, fn = int(np.sum(pred & y)), int(np.sum(pred & ~y)), int(np.sum(~pred & y))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {'precision': precision, 'recall': recall, 'f1': f1, 'accuracy': float(np.mean(pred == y)),
                'n': int(len(y)), 'positives': int(y.sum()), 'threshold': self.threshold}

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_file({'w': self.w, 'b': np.array([self.b], np.float32), 'mean': self.mean, 'std': self.std},
                  str(d / 'failure_head.safetensors'))
        (d / 'failure_head.json').write_text(json.dumps({'dim': self.dim, 'threshold': self.threshold,
                                                          'features': 'before,after,diff,absdiff,product'}))

    @classmethod
    def load(cls, directory: str | Path) -> 'FailureHead':
        d = Path(directory)
        meta = json.loads((d / 'failure_head.json').read_text())
        t = load_file(str(d / 'failure_head.safetensors'))
        head = cls(meta['dim'], meta['threshold'])
        head.w, head.b, head.mean, head.std = t['w'], np.float32(t['b'][0]), t['mean'], t['std']
        return head
