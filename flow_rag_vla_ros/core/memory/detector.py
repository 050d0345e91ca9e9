"""Failure detection: rule-based classification from sim/robot signals, and a learned binary failure head.

Rules - the same definitions (and default numbers) as the sim's ground-truth events in sim/panda_env.py, so
detection is measurable against them. Geometry is panda-gym's: table top z = 0, 4 cm cube resting at
z = rest_z = 0.02, "achieved" = object position (reach: end-effector position), success when
distance(achieved, goal) < success_threshold (0.05 m). Checked after every step, in this order:
- success:       distance < success_threshold -> None (no failure).
- collision:     (a) the arm presses on the table: total panda-table contact normal force > collision_force
                 (50 N) for collision_steps (3) consecutive steps (grazing is a few N, driving the fingertips
                 in gives 200-400 N), or (b) the object left the table: centre below z = -0.02 m or outside
                 the table's x/y extent.
- drop:          (pick_and_place) the object was lifted more than lift_height (2 cm) above rest while grasped
                 (both fingers touching it) and is later back at rest (< rest_band = 1 cm above) with no finger
                 touching it.
- grasp_failure: (pick_and_place) (a) the gripper was open wider than the cube (> open_width 0.042 m) with
                 the ee within near_xy (2.5 cm, xy) and near_z (3 cm, z) of the object, then closed below
                 closed_width (0.015 m) with neither finger touching it (closed on air); moving away while open
                 disarms (a); or (b) both fingers held the object (latched until the gripper opens past
                 open_width again) and the ee rose > slip_rise (4 cm) above the object's centre while the
                 object stayed at rest and had not been lifted (slipped / too heavy).
- misalignment:  (a) push: the object overshot - its progress along the start->goal line exceeds the
                 start-goal distance by more than misalignment_factor * success_threshold; or (b) at
                 max_steps the achieved point is within misalignment_factor * success_threshold of the goal.
- timeout:       max_steps reached without success and not misalignment (b).
Collision, drop, grasp_failure and push overshoot fire mid-episode; misalignment (b) / timeout at the end.
`FailureDetector` keeps the per-episode latches (press counter, lifted-while-grasped, armed, held);
`classify_failure(signals)` runs a fresh detector over one step or a sequence of steps (the episode so far)
and returns the first failure. The gripper command is not needed: finger width and contacts show the outcome.

Failure head (`FailureHead`): logistic regression (numpy, no torch: it runs inside the monitor) on
`[e_before, e_after, e_after - e_before, |e_after - e_before|, e_before * e_after]`, features standardised with
training statistics; trained by full-batch Adam with L2. Saved as `failure_head.safetensors` + `failure_head.json`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from safetensors.numpy import load_file, save_file

from flow_rag_vla_ros.core.config import param, require


@dataclass
class DetectorConfig:
    rest_z: float = param(0.02, 'object centre height resting on the table (m)')
    collision_force: float = param(50.0, 'panda-table contact normal force above this = pressing (N)')
    collision_steps: int = param(3, 'consecutive pressing steps that make a collision')
    table_x: tuple[float, ...] = param((-0.85, 0.25), 'table x extent (m)')
    table_y: tuple[float, ...] = param((-0.35, 0.35), 'table y extent (m)')
    lift_height: float = param(0.02, 'lifted = centre this far above rest while grasped (m)')
    rest_band: float = param(0.01, 'back at rest = centre less than this above rest (m)')
    open_width: float = param(0.042, 'fingers open wider than the cube (m)')
    closed_width: float = param(0.015, 'fingers closed (m)')
    near_xy: float = param(0.025, 'ee near the object: xy distance below this (m)')
    near_z: float = param(0.03, 'ee near the object: |dz| below this (m)')
    slip_rise: float = param(0.04, 'grasp slip: ee this far above the object centre while holding (m)')
    misalignment_factor: float = param(2.0, 'misalignment radius as a multiple of success_threshold')

    def __post_init__(self):
        require(self.collision_steps >= 1 and self.misalignment_factor > 1 and self.closed_width < self.open_width,
                'collision_steps >= 1, misalignment_factor > 1, closed_width < open_width')


@dataclass
class FailureSignals:
    """One step's signals (the sim's privileged state, or a robot's estimates of it)."""
    ee_pos: Sequence[float]
    goal_pos: Sequence[float]
    object_pos: Sequence[float] | None = None    # None for reach
    object_start: Sequence[float] | None = None  # object position at reset (push overshoot)
    finger_width: float = 0.0
    left_finger_contact: bool = False            # finger touches the object
    right_finger_contact: bool = False
    table_force: float = 0.0                     # total panda-table contact normal force (N)
    step: int = 0
    max_steps: int = 50
    success_threshold: float = 0.05
    task: str = 'pick_and_place'

    @classmethod
    def from_state(cls, state: dict, task: str, max_steps: int = 50, success_threshold: float = 0.05):
        """From `PandaEnv.privileged_state()` (or `StepInfo.state`)."""
        has_object = task != 'reach'
        return cls(ee_pos=state['ee_pos'], goal_pos=state['goal_pos'],
                   object_pos=state['object_pos'] if has_object else None,
                   object_start=state.get('object_start') if has_object else None,
                   finger_width=float(state.get('finger_width', 0.0)),
                   left_finger_contact=bool(state.get('left_finger_contact', False)),
                   right_finger_contact=bool(state.get('right_finger_contact', False)),
                   table_force=float(state.get('table_force', 0.0)), step=int(state['step']),
                   max_steps=max_steps, success_threshold=success_threshold, task=task)


class FailureDetector:
    """Stateful rules over one episode (see module docstring); `reset()` between episodes."""

    def __init__(self, config: DetectorConfig | None = None):
        self.config = config or DetectorConfig()
        self.reset()

    def reset(self) -> None:
        self.press_steps, self.lifted_while_grasped, self.armed, self.held = 0, False, False, False

    def update(self, s: FailureSignals) -> str | None:
        c = self.config
        ee, goal = np.asarray(s.ee_pos, float), np.asarray(s.goal_pos, float)
        obj = None if s.object_pos is None or s.task == 'reach' else np.asarray(s.object_pos, float)
        distance = float(np.linalg.norm((ee if obj is None else obj) - goal))
        if distance < s.success_threshold:
            return None
        self.press_steps = self.press_steps + 1 if s.table_force > c.collision_force else 0
        off_table = obj is not None and not (obj[2] > -0.02 and c.table_x[0] < obj[0] < c.table_x[1]
                                             and c.table_y[0] < obj[1] < c.table_y[1])
        if self.press_steps >= c.collision_steps or off_table:
            return 'collision'
        if obj is not None and s.task == 'pick_and_place':
            failure = self._grasp(s, ee, obj)
            if failure:
                return failure
        if obj is not None and s.task == 'push' and s.object_start is not None:
            start, line = np.asarray(s.object_start, float)[:2], goal[:2] - np.asarray(s.object_start, float)[:2]
            length = float(np.linalg.norm(line))
            if length > 1e-6 and float(np.dot(obj[:2] - start, line / length)) > (
                    length + c.misalignment_factor * s.success_threshold):
                return 'misalignment'
        if s.step >= s.max_steps:
            return 'misalignment' if distance < c.misalignment_factor * s.success_threshold else 'timeout'
        return None

    def _grasp(self, s: FailureSignals, ee: np.ndarray, obj: np.ndarray) -> str | None:
        c = self.config
        both = s.left_finger_contact and s.right_finger_contact
        touching = s.left_finger_contact or s.right_finger_contact
        height = obj[2] - c.rest_z
        if both and height > c.lift_height:
            self.lifted_while_grasped = True
        if self.lifted_while_grasped and height < c.rest_band and not touching:
            return 'drop'
        near = np.linalg.norm(ee[:2] - obj[:2]) < c.near_xy and abs(ee[2] - obj[2]) < c.near_z
        self.armed = bool(near and (self.armed or s.finger_width > c.open_width))
        if self.armed and s.finger_width < c.closed_width and not touching:
            return 'grasp_failure'
        if both:
            self.held = True
        elif s.finger_width > c.open_width:
            self.held = False
        if self.held and not self.lifted_while_grasped and ee[2] - obj[2] > c.slip_rise and height < c.rest_band:
            return 'grasp_failure'
        return None


def classify_failure(signals: FailureSignals | Sequence[FailureSignals],
                     config: DetectorConfig | None = None) -> str | None:
    """First failure type over one step or a step sequence (the episode so far), or None."""
    detector = FailureDetector(config)
    for s in [signals] if isinstance(signals, FailureSignals) else signals:
        failure = detector.update(s)
        if failure:
            return failure
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
