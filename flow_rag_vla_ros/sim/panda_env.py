"""panda-gym wrapper with the project's vocabulary: 4-d actions, 7-d proprio, red target, events.

Rendering goes straight to `getCameraImage` with the TinyRenderer (no shadows, no segmentation mask),
which is ~2x cheaper than `env.render()`; `render_frame()` is separate so callers can keep the sim's
rendering cost out of the stack's latency.

Episode events (checked after every step, in this order; the episode ends at the first one):

- ``success``: panda-gym's success test, object (reach: ee) within 0.05 m of the goal.
- ``collision``: (a) the arm presses on the table: total normal force of the panda-table contacts
  > ``COLLISION_FORCE_N`` (50 N) for ``COLLISION_STEPS`` (3) consecutive steps (a finger merely grazing
  the table is a few N; driving the fingertips into it gives 200-400 N), or (b) the object left the
  table: its centre is below the table top (z < -0.02 m) or outside the table's x/y extent.
- ``drop`` (pick_and_place): the object was lifted (centre > 2 cm above its resting height) while
  grasped (both fingers touching it), and later is back at rest height (< 1 cm above) with no finger
  touching it, without success.
- ``grasp_failure`` (pick_and_place): a grasp attempt failed. Either (a) the fingers were open wider
  than the cube (> 0.042 m) with the ee within 2.5 cm (xy) and 4 cm (z) of the object, then closed to
  < 0.015 m with neither finger touching it (closed on air), or (b) both fingers held the object and the
  ee rose > 4 cm above the object's centre while the object stayed at rest height (slipped / too heavy).
- ``misalignment``: (a) push only: the object overshot, its progress along the start->goal line
  exceeds the start-goal distance by more than 2x the success threshold; or (b) at ``max_steps``
  the object (reach: ee) is within 2x the success threshold of the goal but not within it.
- ``timeout``: ``max_steps`` reached without success and not (b) above (event ``timeout``,
  failure_type ``timeout``).

Failure events report ``event='failure'`` and the ``failure_type``; the episode then ends (done).
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import panda_gym  # noqa: F401  (registers the Panda*-v3 envs)
import pybullet as p

from flow_rag_vla_ros.core.config import param, require
from flow_rag_vla_ros.core.spec import INSTRUCTIONS, TASKS

GYM_IDS = {'reach': 'PandaReach-v3', 'push': 'PandaPush-v3', 'pick_and_place': 'PandaPickAndPlace-v3'}
DEFAULT_MAX_STEPS = 50  # panda-gym's episode length
SUCCESS_THRESHOLD = 0.05
OBJECT_SIZE = 0.04
OBJECT_MASS = 1.0  # panda-gym cube
OBJECT_FRICTION = 0.5  # its (pybullet default) lateral friction
REST_Z = OBJECT_SIZE / 2  # object centre resting on the table
TABLE_X = (-0.85, 0.25)  # table extent (panda-gym: length 1.1, x_offset -0.3, width 0.7)
TABLE_Y = (-0.35, 0.35)
COLLISION_FORCE_N = 50.0
COLLISION_STEPS = 3
TARGET_RGBA = (0.9, 0.1, 0.1, 1.0)

# Named camera presets: (distance, yaw, pitch, target x, y, z). 'scene' is the DESIGN.md camera.
CAMERA_PRESETS = {
    'scene': (0.5, 45.0, -35.0, 0.0, 0.0, 0.05),
    'front': (0.6, 90.0, -25.0, 0.0, 0.0, 0.08),   # looking along -x from the table's far end
    'side': (0.6, 0.0, -20.0, 0.0, 0.0, 0.08),     # looking along +y: shows the lift height
    'top': (0.55, 90.0, -89.0, -0.05, 0.0, 0.0),
}


def parse_camera(spec: str) -> tuple[float, ...]:
    """A preset name, or 'distance,yaw,pitch,x,y,z' for a custom view."""
    if spec in CAMERA_PRESETS:
        return CAMERA_PRESETS[spec]
    parts = spec.split(',')
    require(len(parts) == 6, f'camera {spec!r}: expected a preset {sorted(CAMERA_PRESETS)} or 6 numbers')
    return tuple(float(x) for x in parts)


@dataclass
class SimConfig:
    task: str = param('reach', 'reach | push | pick_and_place')
    image_size: int = param(96, 'height and width of each camera image (px)')
    cameras: list[str] = param(['scene'], "camera presets (scene, front, side, top) or 'dist,yaw,pitch,x,y,z'; "
                                          'images are stacked side by side')
    fov_deg: float = param(60.0, 'vertical field of view of every camera (deg)')
    seed: int = param(0, 'seed used when reset() gets no seed (then episode i gets a seed drawn from it)')
    max_steps: int = param(0, f'steps per episode; 0 = panda-gym default ({DEFAULT_MAX_STEPS})')
    scenario: str = param('', "failure-injection scenario name ('' = none), see sim/scenarios.py")
    situations: int = param(0, 'revisit protocol: cycle through this many initial states (episode i gets seed '
                               '+ i % situations); 0 = a new initial state every episode (seed + i)')
    render: bool = param(True, 'render images in reset/step (False: image is an empty array, for fast runs)')

    def __post_init__(self):
        require(self.task in TASKS, f'task {self.task!r} not in {TASKS}')
        require(self.image_size >= 16, 'image_size must be >= 16')
        require(len(self.cameras) >= 1, 'at least one camera')
        for c in self.cameras:
            parse_camera(c)
        require(0 < self.fov_deg < 180, 'fov_deg in (0, 180)')
        require(self.max_steps >= 0, 'max_steps >= 0')
        require(self.situations >= 0, 'situations >= 0')
        if self.scenario:
            from flow_rag_vla_ros.sim.scenarios import list_scenarios
            require(self.scenario in list_scenarios(), f'scenario {self.scenario!r} not in {list_scenarios()}')

    def episode_seed(self, episode: int) -> int:
        """The reset seed of episode `episode` (0-based) of a run: the same for every driver (sim node, in-process)."""
        return self.seed + (episode % self.situations if self.situations else episode)

    @property
    def episode_steps(self) -> int:
        return self.max_steps or DEFAULT_MAX_STEPS


@dataclass
class Observation:
    image: np.ndarray       # (H, W * n_cameras, 3) uint8 (empty (0, 0, 3) when rendering is off)
    proprio: np.ndarray     # (7,) float32, PROPRIO_NAMES
    instruction: str
    step: int


@dataclass
class StepInfo:
    success: bool
    done: bool
    event: str              # '' | 'success' | 'failure' | 'timeout'
    failure_type: str       # '' or one of spec.FAILURE_TYPES
    state: dict = field(default_factory=dict)  # privileged_state() after the step


@contextlib.contextmanager
def _c_stdout_silenced():
    """PyBullet's connect() printf()s its options to fd 1, into a CLI's results table or JSON on stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, 'wb') as devnull:
            os.dup2(devnull.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


class PandaEnv:
    """One panda-gym env (own PyBullet client) with the project's observation/action layout."""

    def __init__(self, config: SimConfig | None = None):
        self.config = config or SimConfig()
        self.task = self.config.task
        self.instruction = INSTRUCTIONS[self.task]
        self.has_gripper = self.task == 'pick_and_place'
        # .unwrapped: we manage episode length and events ourselves (no TimeLimit / checker wrappers)
        with _c_stdout_silenced():
            self.gym_env = gym.make(GYM_IDS[self.task], control_type='ee', renderer='Tiny').unwrapped
        self.sim = self.gym_env.sim
        self.client = self.sim.physics_client
        self.ids = dict(self.sim._bodies_idx)
        self._panda_base = self.client.getBasePositionAndOrientation(self.ids['panda'])
        self.cameras = [parse_camera(c) for c in self.config.cameras]
        self.camera_offset = np.zeros(6)  # added to every camera's (dist,yaw,pitch,x,y,z); scenarios set it
        self._seed_rng = np.random.default_rng(self.config.seed)
        self.scenario = None
        if self.config.scenario:
            from flow_rag_vla_ros.sim.scenarios import make_scenario
            self.scenario = make_scenario(self.config.scenario)
        self.episode_seed = self.config.seed
        self.external_force = None  # (3,) N on the object through every substep of the next step
        self._gym_sim_step = self.sim.step
        self.sim.step = self._sim_step
        self.steps = 0
        self._obs: dict = {}

    # -- episode ----------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> Observation:
        if seed is None:
            seed = int(self._seed_rng.integers(0, 2**31 - 1))
        self.episode_seed = int(seed)
        self._forget_contacts()
        self._obs, _ = self.gym_env.reset(seed=self.episode_seed)
        # TinyRenderer ignores alpha: the ghost target would look exactly like the cube
        self.client.changeVisualShape(self.ids['target'], -1, rgbaColor=list(TARGET_RGBA))
        self.camera_offset = np.zeros(6)
        self.external_force = None
        if self.task != 'reach':  # undo any scenario physics of the previous episode
            self.client.changeDynamics(self.ids['object'], -1, mass=OBJECT_MASS, lateralFriction=OBJECT_FRICTION)
        self.steps = 0
        self._table_press_steps = 0
        self._lifted_while_grasped = False
        self._grasp_armed = False
        self._held = False
        self.object_start = self._object_pos().copy()
        if self.scenario is not None:
            self.scenario.on_reset(self, np.random.default_rng(self.episode_seed + 7919))
        return self._observation()

    def _forget_contacts(self) -> None:
        # Bullet warm-starts the solver from cached contact manifolds; left over from the previous
        # episode they make an episode depend on its predecessor. Lifting every movable body clear and
        # running collision detection drops them, so a seed gives the same episode in a fresh or reused env.
        for name in ('object', 'panda'):
            if name in self.ids:
                self.client.resetBasePositionAndOrientation(self.ids[name], [0.0, 0.0, 10.0 + len(name)], [0, 0, 0, 1])
                self.client.resetBaseVelocity(self.ids[name], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
        self.client.performCollisionDetection()
        self.client.resetBasePositionAndOrientation(self.ids['panda'], *self._panda_base)

    def step(self, action) -> tuple[Observation, StepInfo]:
        info = self._advance(action)
        state = self.privileged_state()
        success = bool(info['is_success'])
        failure = '' if success else self._failure(state)
        event = 'success' if success else ('failure' if failure and failure != 'timeout' else failure)
        done = success or bool(failure)
        if self.scenario is not None and not done:
            self.scenario.on_step(self, state)
        return self._observation(), StepInfo(success, done, event, failure, state)

    def lookahead(self, act, steps: int) -> np.ndarray:
        """(steps, 4): the actions `act(privileged_state)` takes over the next `steps` steps from the current state,
        found by simulating them and then restoring the state (PyBullet saveState / restoreState). The prediction
        is exact: it equals what `act` then does in a run without the lookahead. Positions, velocities, the step
        count, observation and scenario come back exactly, but the episode's later steps may differ slightly from
        such a run (a scratch check saw joint positions / velocities differ by up to 0.03 three steps later): some
        solver state survives restoreState (it happens after a 1-step lookahead too, and with
        deterministicOverlappingPairs)."""
        saved = (self._obs, self.steps, self.external_force)
        state_id = self.client.saveState()
        actions = []
        try:
            self.external_force = None
            state = self.privileged_state()
            for _ in range(steps):
                actions.append(np.clip(np.asarray(act(state), np.float32).reshape(4), -1.0, 1.0))
                self._advance(actions[-1])
                state = self.privileged_state()
        finally:
            self.client.restoreState(state_id)
            self.client.removeState(state_id)
            self._obs, self.steps, self.external_force = saved
        return np.stack(actions)

    def _advance(self, action) -> dict:
        """One panda-gym step with `action` clipped to [-1, 1] (3-d for a blocked gripper); returns gym's info."""
        action = np.clip(np.asarray(action, dtype=np.float32).reshape(4), -1.0, 1.0)
        self._obs, _, _, _, info = self.gym_env.step(action if self.has_gripper else action[:3])
        self.steps += 1
        return info

    def _sim_step(self) -> None:
        # panda-gym runs 20 physics substeps per step and pybullet clears external forces after each
        # one, so a force meant to last a control step is re-applied before every substep
        if self.external_force is None:
            return self._gym_sim_step()
        obj = self.ids['object']
        for _ in range(self.sim.n_substeps):
            pos = self.client.getBasePositionAndOrientation(obj)[0]
            self.client.applyExternalForce(obj, -1, list(self.external_force), pos, p.WORLD_FRAME)
            self.client.stepSimulation()
        self.external_force = None

    def close(self) -> None:
        self.gym_env.close()

    # -- observations -----------------------------------------------------------------------------
    def proprio(self) -> np.ndarray:
        o = self._obs['observation']
        width = o[6] if self.has_gripper else 0.0
        return np.array([*o[:6], width], dtype=np.float32)

    def _observation(self) -> Observation:
        image = self.render_frame() if self.config.render else np.zeros((0, 0, 3), np.uint8)
        return Observation(image, self.proprio(), self.instruction, self.steps)

    def render_frame(self) -> np.ndarray:
        """(H, W * n_cameras, 3) uint8: every configured camera, side by side."""
        size = self.config.image_size
        proj = self.client.computeProjectionMatrixFOV(fov=self.config.fov_deg, aspect=1.0, nearVal=0.05, farVal=10.0)
        frames = []
        for cam in self.cameras:
            dist, yaw, pitch, x, y, z = np.asarray(cam) + self.camera_offset
            view = self.client.computeViewMatrixFromYawPitchRoll(
                cameraTargetPosition=[x, y, z], distance=dist, yaw=yaw, pitch=pitch, roll=0, upAxisIndex=2)
            _, _, rgba, _, _ = self.client.getCameraImage(
                width=size, height=size, viewMatrix=view, projectionMatrix=proj, shadow=0,
                flags=p.ER_NO_SEGMENTATION_MASK, renderer=p.ER_TINY_RENDERER)
            frames.append(np.asarray(rgba, dtype=np.uint8).reshape(size, size, 4)[..., :3])
        return np.concatenate(frames, axis=1)

    # -- privileged state -------------------------------------------------------------------------
    def _object_pos(self) -> np.ndarray:
        if self.task == 'reach':
            return np.zeros(3)
        return np.array(self.sim.get_base_position('object'))

    def goal(self) -> np.ndarray:
        return np.array(self.gym_env.task.get_goal(), dtype=np.float64)

    def privileged_state(self) -> dict:
        """Ground truth for experts and the failure detector (never shown to the policy)."""
        o = self._obs['observation']
        ee = np.array(o[:3], dtype=np.float64)
        panda, c = self.ids['panda'], self.client
        table_force = sum(cp[9] for cp in c.getContactPoints(panda, self.ids['table']))
        state = {'ee_pos': ee, 'ee_vel': np.array(o[3:6], dtype=np.float64), 'goal_pos': self.goal(),
                 'finger_width': float(o[6]) if self.has_gripper else 0.0,
                 'table_force': float(table_force), 'step': self.steps,
                 'object_pos': self._object_pos(), 'object_start': getattr(self, 'object_start', np.zeros(3)),
                 'left_finger_contact': False, 'right_finger_contact': False, 'object_on_table': True}
        if self.task != 'reach':
            obj = self.ids['object']
            state['object_vel'] = np.array(self.sim.get_base_velocity('object'))
            state['left_finger_contact'] = bool(c.getContactPoints(panda, obj, 9, -1))
            state['right_finger_contact'] = bool(c.getContactPoints(panda, obj, 10, -1))
            pos = state['object_pos']
            state['object_on_table'] = bool(pos[2] > -0.02 and TABLE_X[0] < pos[0] < TABLE_X[1]
                                            and TABLE_Y[0] < pos[1] < TABLE_Y[1])
        achieved = state['ee_pos'] if self.task == 'reach' else state['object_pos']
        state['goal_distance'] = float(np.linalg.norm(achieved - state['goal_pos']))
        return state

    # -- events -----------------------------------------------------------------------------------
    def _failure(self, s: dict) -> str:
        """Failure type after a non-successful step ('' = episode continues). See module docstring."""
        self._table_press_steps = self._table_press_steps + 1 if s['table_force'] > COLLISION_FORCE_N else 0
        if self._table_press_steps >= COLLISION_STEPS or not s['object_on_table']:
            return 'collision'
        if self.has_gripper:
            failure = self._grasp_events(s)
            if failure:
                return failure
        if self.task == 'push' and self._overshoot(s):
            return 'misalignment'
        if self.steps >= self.config.episode_steps:
            return 'misalignment' if s['goal_distance'] < 2 * SUCCESS_THRESHOLD else 'timeout'
        return ''

    def _grasp_events(self, s: dict) -> str:
        obj, ee, width = s['object_pos'], s['ee_pos'], s['finger_width']
        both = s['left_finger_contact'] and s['right_finger_contact']
        touching = s['left_finger_contact'] or s['right_finger_contact']
        height = obj[2] - REST_Z
        if both and height > 0.02:
            self._lifted_while_grasped = True
        if self._lifted_while_grasped and height < 0.01 and not touching:
            return 'drop'
        near = np.linalg.norm(ee[:2] - obj[:2]) < 0.025 and abs(ee[2] - obj[2]) < 0.04
        # armed = an open gripper around the object; moving away while open disarms it
        self._grasp_armed = near and (self._grasp_armed or width > 0.042)
        if self._grasp_armed and width < 0.015 and not touching:
            return 'grasp_failure'
        if both:
            self._held = True  # latched until the gripper opens again (a deliberate release / regrasp)
        elif width > 0.042:
            self._held = False
        if self._held and not self._lifted_while_grasped and ee[2] - obj[2] > 0.04 and height < 0.01:
            return 'grasp_failure'
        return ''

    def _overshoot(self, s: dict) -> bool:
        start, goal = s['object_start'][:2], s['goal_pos'][:2]
        line = goal - start
        length = float(np.linalg.norm(line))
        if length < 1e-6:
            return False
        progress = float(np.dot(s['object_pos'][:2] - start, line / length))
        return progress > length + 2 * SUCCESS_THRESHOLD
