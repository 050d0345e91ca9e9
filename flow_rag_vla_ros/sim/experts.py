"""Scripted experts on privileged state (PandaEnv.privileged_state()), one per task.

Each is a closed-loop proportional controller over a few phases, re-deciding the phase from the state
every step (so a slipped cube or a rotated push is recovered from). Diversity for demonstrations comes
from a per-episode random gain, small random waypoint offsets and Gaussian action noise; all draws come
from the `rng` given, so a seeded rng gives the same demonstrations.
Actions are 4-d in [-1, 1]; the gripper entry is 0 for reach and push (blocked gripper).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flow_rag_vla_ros.core.config import param, require

STEP_M = 0.05  # panda-gym ee displacement per unit action


@dataclass
class ExpertConfig:
    action_noise: float = param(0.05, 'std of Gaussian noise added to the xyz action')
    gain_range: tuple[float, float] = param((0.8, 1.2), 'per-episode multiplier on the proportional gain')
    offset_m: float = param(0.004, 'std of per-episode random waypoint offsets (m)')
    # Push: how much perception jitter the expert's decisions tolerate. A pixel policy imitates them while it sees
    # the cube to ~1-2 cm; with the defaults (the demonstrations up to stop 22) 1.6 cm RMS of per-step position
    # error takes the expert from 0.95 to 0.45 success, with 0.04 / 0.3 to 0.78 (scripts/expert_perception_noise.py)
    push_line_tolerance_m: float = param(0.015, 'Push: push only while the ee is this close to the push line, '
                                                'else lift and re-approach')
    push_lateral_gain: float = param(1.0, "Push: share of the ee's sideways distance from the push line "
                                          'corrected per step while pushing')

    def __post_init__(self):
        require(self.action_noise >= 0 and self.offset_m >= 0, 'noise and offsets must be >= 0')
        require(0 < self.gain_range[0] <= self.gain_range[1], 'gain_range must be 0 < low <= high')
        require(self.push_line_tolerance_m > 0 and 0 <= self.push_lateral_gain <= 1,
                'push_line_tolerance_m > 0, push_lateral_gain in [0, 1]')


class Expert:
    """Base: `reset()` per episode, `act(state) -> (4,) float32`.

    `stateless`: the action depends on the privileged state (and the per-episode draws) only, so the expert
    can label any state, e.g. one a policy reached (tools/dagger.py)."""
    stateless = True

    def __init__(self, rng: np.random.Generator | None = None, config: ExpertConfig | None = None):
        self.rng = rng if rng is not None else np.random.default_rng()
        self.config = config or ExpertConfig()
        self.reset()

    def reset(self) -> None:
        c = self.config
        self.gain = float(self.rng.uniform(*c.gain_range))
        self.offset = self.rng.normal(0.0, c.offset_m, 3)

    def move_to(self, ee: np.ndarray, target: np.ndarray, gain: float = 1.0) -> np.ndarray:
        """Proportional ee displacement toward target, in action units (1 = 5 cm / step)."""
        a = gain * self.gain * (target - ee) / STEP_M
        a = a + self.rng.normal(0.0, self.config.action_noise, 3)
        if ee[2] < 0.08:
            a[2] = max(a[2], -0.4)  # approach the table slowly: fast descents overshoot into it
        return np.clip(a, -1.0, 1.0)

    def act(self, state: dict) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def _pack(xyz: np.ndarray, gripper: float = 0.0) -> np.ndarray:
        return np.array([*np.clip(xyz, -1, 1), np.clip(gripper, -1, 1)], dtype=np.float32)


class ReachExpert(Expert):
    def act(self, state: dict) -> np.ndarray:
        # gain 0.5: halve the error per step (smoother, less saturated demonstrations than a one-step jump)
        return self._pack(self.move_to(state['ee_pos'], state['goal_pos'] + 0.3 * self.offset, gain=0.5))


class PushExpert(Expert):
    """Go above a point behind the cube (on the goal->cube line), descend, push along the line.

    'Behind' is re-evaluated each step: if the ee drifts off the push line (cube rotated or slid
    sideways) it lifts and re-approaches instead of dragging the cube sideways. Pushing speed falls
    with the remaining distance: a cube hit fast keeps sliding (table friction ~0.25) and overshoots.
    """
    PUSH_Z = 0.02       # ee (fingertip centre) height while pushing: the cube's centre
    BEHIND = 0.06       # pre-push ee distance behind the cube centre (clear of the cube)
    CONTACT = 0.035     # ee distance behind the cube centre while in contact

    def act(self, state: dict) -> np.ndarray:
        ee, obj, goal = state['ee_pos'], state['object_pos'], state['goal_pos']
        line = goal[:2] - obj[:2]
        dist = float(np.linalg.norm(line))
        d = line / max(dist, 1e-6)
        perp = np.array([-d[1], d[0]])
        rel = ee[:2] - obj[:2]
        along, lateral = float(rel @ d), float(rel @ perp)
        behind_xy = obj[:2] - d * self.BEHIND + self.offset[:2] * 0.5
        if along < -0.025 and abs(lateral) < self.config.push_line_tolerance_m and ee[2] < self.PUSH_Z + 0.015:
            # push: drive the contact point to where the cube sits on the goal, correcting sideways drift
            target = np.array([*(goal[:2] - d * self.CONTACT), self.PUSH_Z])
            xyz = self.move_to(ee, target)
            xyz[:2] -= perp * self.config.push_lateral_gain * lateral / STEP_M
            cap = float(np.clip(dist / 0.08, 0.15, 0.5))
            norm = np.linalg.norm(xyz[:2])
            if norm > cap:
                xyz[:2] *= cap / norm
            return self._pack(xyz)
        if np.linalg.norm(ee[:2] - behind_xy) < 0.015:
            return self._pack(self.move_to(ee, np.array([*behind_xy, self.PUSH_Z])))  # descend
        if np.linalg.norm(rel) < 0.06 and ee[2] < 0.06:
            return self._pack(self.move_to(ee, np.array([*ee[:2], 0.09])))  # near the cube, low: lift first
        return self._pack(self.move_to(ee, np.array([*behind_xy, 0.08])))  # travel above the cube


class PickAndPlaceExpert(Expert):
    """Open above the cube, descend, close, lift and carry to the goal with the gripper closed.

    Not stateless: it counts its own closing steps before it carries, and in a grasp it did not make itself that
    count is 0, so it labels a policy's carry "open" (seen in DAgger labels of vla_v5's rollouts)."""
    stateless = False
    def reset(self) -> None:
        super().reset()
        self.closing_steps = 0

    def act(self, state: dict) -> np.ndarray:
        ee, obj, goal, width = state['ee_pos'], state['object_pos'], state['goal_pos'], state['finger_width']
        grasped = state['left_finger_contact'] and state['right_finger_contact']
        xy_err = np.linalg.norm(ee[:2] - obj[:2])
        if grasped and self.closing_steps >= 3:
            # carry: lift first when low so the cube does not drag over the table
            target = goal.copy()
            if obj[2] < 0.04 and np.linalg.norm(goal[:2] - obj[:2]) > 0.02:
                target = np.array([*ee[:2], 0.08])
            return self._pack(self.move_to(ee, target), -1.0)
        at_cube = xy_err < 0.01 and abs(ee[2] - obj[2]) < 0.008
        if at_cube or (self.closing_steps and xy_err < 0.02 and width > 0.01):
            self.closing_steps += 1
            return self._pack(self.move_to(ee, obj) * 0.3, -1.0)
        self.closing_steps = 0
        if xy_err > 0.01:
            hover = np.array([*obj[:2], obj[2] + 0.05 + 0.5 * abs(self.offset[2])])
            target = hover if ee[2] > obj[2] + 0.03 or xy_err > 0.03 else np.array([*ee[:2], obj[2] + 0.06])
            if xy_err < 0.03 and ee[2] > obj[2] + 0.03:
                target = hover
            return self._pack(self.move_to(ee, target), 1.0)
        return self._pack(self.move_to(ee, obj), 1.0 if width < 0.07 else 0.0)


EXPERTS = {'reach': ReachExpert, 'push': PushExpert, 'pick_and_place': PickAndPlaceExpert}


def make_expert(task: str, rng: np.random.Generator | None = None, config: ExpertConfig | None = None) -> Expert:
    require(task in EXPERTS, f'no expert for task {task!r}')
    return EXPERTS[task](rng, config)
