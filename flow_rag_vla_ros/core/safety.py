"""Last stage before the motors: reject non-finite input, clamp to bounds, limit the change per command, hold.

Action layout (docs/DESIGN.md): [dx, dy, dz, gripper]. Hold = zero motion on the motion dimensions and the
gripper unchanged (the last gripper command; `gripper_hold_value` before any command was issued).
The rate limit applies to every command relative to the previous one, including the first command after a
hold, so resuming from a hold never jumps. Entering a hold is not rate limited: stopping is the safe action.
"""
from __future__ import annotations

import numpy as np

from flow_rag_vla_ros.core.spec import ACTION_DIM

GRIPPER = ACTION_DIM - 1  # index of the gripper in an action


def chunk_problem(chunk, action_dim: int = ACTION_DIM) -> str:
    """'' when `chunk` is a usable (H >= 1, action_dim) finite array, else why it is not."""
    try:
        a = np.asarray(chunk, dtype=np.float64)
    except (TypeError, ValueError) as e:
        return f'not numeric: {e}'
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] != action_dim:
        return f'shape {a.shape} is not (H >= 1, {action_dim})'
    bad = np.argwhere(~np.isfinite(a))
    if bad.size:
        step, dim = bad[0]
        return f'{len(bad)} non-finite value(s), first at step {step} dim {dim} ({a[step, dim]})'
    return ''


class SafetyFilter:
    """Stateful command filter: `apply(action)` -> safe command or None (non-finite), `hold()` -> hold command."""

    def __init__(self, low, high, max_delta, gripper_hold_value: float = 0.0):
        self.low = np.asarray(low, dtype=np.float64)
        self.high = np.asarray(high, dtype=np.float64)
        self.max_delta = np.asarray(max_delta, dtype=np.float64)
        for name, v in (('low', self.low), ('high', self.high), ('max_delta', self.max_delta)):
            if v.shape != (ACTION_DIM,) or not np.isfinite(v).all():
                raise ValueError(f'{name} must be {ACTION_DIM} finite values, got {v.tolist()}')
        if np.any(self.low > self.high) or np.any(self.max_delta <= 0):
            raise ValueError('need low <= high and max_delta > 0 in every dimension')
        if np.any(self.low[:GRIPPER] > 0) or np.any(self.high[:GRIPPER] < 0):
            raise ValueError('zero motion (the hold command) must lie within the motion bounds')
        if not self.low[GRIPPER] <= gripper_hold_value <= self.high[GRIPPER]:
            raise ValueError(f'gripper_hold_value {gripper_hold_value} outside the gripper bounds')
        self.last = np.zeros(ACTION_DIM)  # reference for the rate limit; starts as the initial hold
        self.last[GRIPPER] = gripper_hold_value

    def hold_action(self) -> np.ndarray:
        """The hold command (zero motion, gripper unchanged) without committing it."""
        action = np.zeros(ACTION_DIM)
        action[GRIPPER] = self.last[GRIPPER]
        return action

    def hold(self) -> np.ndarray:
        """Commit and return the hold command."""
        self.last = self.hold_action()
        return self.last.copy()

    def apply(self, action) -> np.ndarray | None:
        """Clamp + rate limit `action` (4,) against the last command and commit it; None if it is not finite."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (ACTION_DIM,) or not np.isfinite(a).all():
            return None
        a = np.clip(a, self.low, self.high)
        a = self.last + np.clip(a - self.last, -self.max_delta, self.max_delta)
        self.last = a
        return a.copy()
