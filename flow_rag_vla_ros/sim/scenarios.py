"""Failure-injection scenarios, selected by name (SimConfig.scenario / `--scenario`).

Each scenario makes failures SYSTEMATIC in one part of the state space (mostly a region of the table
where the cube spawns), so a memory of past failures, keyed on what the policy sees, can help.
Regions are halves of the object spawn area (x, y in [-0.15, 0.15]); the camera sees them apart.

- ``slippery_zone``: cube spawned at y > 0 gets lateral friction 0.02 (default 0.5). Contact
  friction is the product of both bodies' coefficients, so pushes slide on and overshoot
  (misalignment) and grasps slip out (grasp_failure / drop).
- ``heavy_cube``: cube spawned at x > 0 weighs ``HEAVY_FACTOR`` x its 1 kg: lifts fail
  (grasp_failure), pushes are slow (timeout).
- ``shifted_camera``: every camera is displaced (yaw +12 deg, pitch +6 deg, target +3 cm in x and
  -3 cm in y) for every episode; the physics is unchanged, the policy's view is not.
- ``external_push``: once per episode, when the cube (spawned at y < 0) has been moved >= 2 cm from its
  spawn point (push) or lifted > 3 cm (pick_and_place), a force along +y acts on it for one control
  step (0.04 s): ``PUSH_FORCE_N`` (push: knocked off course or off the table) or ``CARRY_FORCE_N``
  (pick_and_place: more than the fingers' friction can hold, knocked out of the gripper: drop).

Physics changes are undone at the next reset, so a scenario never leaks into the next episode.
Scenarios on the object do nothing for `reach` (no object); shifted_camera applies to every task.
"""
from __future__ import annotations

import numpy as np

from flow_rag_vla_ros.sim.panda_env import OBJECT_FRICTION as DEFAULT_FRICTION, OBJECT_MASS as DEFAULT_MASS

SLIPPERY_FRICTION = 0.02
HEAVY_FACTOR = 20.0
PUSH_FORCE_N = 60.0
CARRY_FORCE_N = 400.0
CAMERA_SHIFT = np.array([0.0, 12.0, 6.0, 0.03, -0.03, 0.0])  # (distance, yaw, pitch, x, y, z)


class Scenario:
    name = ''

    def on_reset(self, env, rng: np.random.Generator) -> None:
        """After env.reset (object spawned, target recoloured)."""

    def on_step(self, env, state: dict) -> None:
        """After each env.step that did not end the episode."""

    def in_region(self, env) -> bool:
        return False


class SlipperyZone(Scenario):
    name = 'slippery_zone'

    def in_region(self, env) -> bool:
        return env.task != 'reach' and env.object_start[1] > 0.0

    def on_reset(self, env, rng) -> None:
        if env.task != 'reach':
            friction = SLIPPERY_FRICTION if self.in_region(env) else DEFAULT_FRICTION
            env.client.changeDynamics(env.ids['object'], -1, lateralFriction=friction)


class HeavyCube(Scenario):
    name = 'heavy_cube'

    def in_region(self, env) -> bool:
        return env.task != 'reach' and env.object_start[0] > 0.0

    def on_reset(self, env, rng) -> None:
        if env.task != 'reach':
            mass = DEFAULT_MASS * (HEAVY_FACTOR if self.in_region(env) else 1.0)
            env.client.changeDynamics(env.ids['object'], -1, mass=mass)


class ShiftedCamera(Scenario):
    name = 'shifted_camera'

    def in_region(self, env) -> bool:
        return True

    def on_reset(self, env, rng) -> None:
        env.camera_offset = CAMERA_SHIFT.copy()


class ExternalPush(Scenario):
    name = 'external_push'

    def in_region(self, env) -> bool:
        return env.task != 'reach' and env.object_start[1] < 0.0

    def on_reset(self, env, rng) -> None:
        self.pushed = False

    def on_step(self, env, state: dict) -> None:
        if self.pushed or not self.in_region(env):
            return
        if env.task == 'pick_and_place':
            trigger, force = state['object_pos'][2] - env.object_start[2] > 0.03, CARRY_FORCE_N
        else:
            trigger, force = np.linalg.norm(state['object_pos'] - env.object_start) >= 0.02, PUSH_FORCE_N
        if trigger:
            env.external_force = np.array([0.0, force, 0.0])  # PandaEnv applies it through the next step
            self.pushed = True


SCENARIOS = {cls.name: cls for cls in (SlipperyZone, HeavyCube, ShiftedCamera, ExternalPush)}


def list_scenarios() -> list[str]:
    return sorted(SCENARIOS)


def make_scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise ValueError(f'unknown scenario {name!r}; known: {list_scenarios()}')
    return SCENARIOS[name]()


def apply_scenario(env, name: str, rng: np.random.Generator, state: dict | None = None) -> Scenario:
    """Hook for callers driving an env themselves: state=None after reset, the step's state after a step.

    The scenario object is kept on the env (it may hold per-episode flags) and is the one PandaEnv
    calls itself when SimConfig.scenario names it.
    """
    if env.scenario is None or env.scenario.name != name:
        env.scenario = make_scenario(name)
    if state is None:
        env.scenario.on_reset(env, rng)
    else:
        env.scenario.on_step(env, state)
    return env.scenario
