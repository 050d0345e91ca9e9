"""Sim node: the PyBullet Panda (panda-gym) standing in for the robot.

Publishes camera frames, CameraInfo, proprio (JointState), the instruction and episode events; applies
`/robot/command`. Lockstep mode steps when the command stamped with the current frame arrives (or holds
after a timeout), so results are reproducible for a seed; real-time mode steps at a fixed rate like
hardware and holds when the latest command is late. Rendering happens before the frame is stamped:
the latency budget starts at the frame's stamp.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String

from flow_rag_vla_ros.core.config import param, require
from flow_rag_vla_ros.nodes import qos
from flow_rag_vla_ros.nodes.base import StackNode, now_ns, run_node
from flow_rag_vla_ros.nodes.conversions import (EPISODE_STATUS, RESTART_ACK_TOPIC, array_to_image, diagnostic,
                                                make_header, msg_to_command, proprio_to_msg, stamp_to_ns)
from flow_rag_vla_ros.nodes.params import declare_config
from flow_rag_vla_ros.sim.panda_env import PandaEnv, SimConfig


@dataclass
class SimNodeConfig:
    """The node's own parameters; the simulated world's are `SimConfig` (declared beside these)."""
    episodes: int = param(10, 'episodes to run; 0 = run until shut down')
    clock_mode: str = param('lockstep', 'lockstep (step on the command for the current frame) | realtime')
    rate_hz: float = param(25.0, 'real-time mode stepping rate')
    command_timeout_s: float = param(1.0, 'lockstep: wait this long for the command of a frame before resending')
    resend_attempts: int = param(2, 'lockstep: frames re-sent (same stamp) before the step is taken with a hold')
    startup_timeout_s: float = param(120.0, 'wait this long for the stack to answer a first frame')
    camera_frame_id: str = param('scene_camera', 'frame_id of camera frames (and everything derived)')
    image_topic: str = param('/camera/image_raw', 'camera frames (sensor_msgs/Image rgb8)')
    camera_info_topic: str = param('/camera/camera_info', 'camera intrinsics')
    ee_state_topic: str = param('/robot/ee_state', 'proprio (sensor_msgs/JointState)')
    instruction_topic: str = param('/task/instruction', 'task instruction (std_msgs/String, latched)')
    events_topic: str = param('/task/events', 'episode events (diagnostic_msgs/DiagnosticArray)')
    command_topic: str = param('/robot/command', 'merged command (sensor_msgs/JointState velocity)')
    restart_ack_topic: str = param(RESTART_ACK_TOPIC, "lockstep: the first frame of an episode waits for the "
                                   "merger's acknowledgement of the 'start' event (up to command_timeout_s), so "
                                   "no command of the new episode comes from the previous episode's queue; "
                                   "empty = do not wait")

    def __post_init__(self):
        require(self.clock_mode in ('lockstep', 'realtime'), f'clock_mode {self.clock_mode!r} invalid')
        require(self.rate_hz > 0 and self.command_timeout_s > 0, 'rate_hz and command_timeout_s must be > 0')
        require(self.episodes >= 0, 'episodes must be >= 0')


@dataclass
class EpisodeResult:
    episode: int
    seed: int
    success: bool
    steps: int
    event: str
    failure_type: str
    held_steps: int
    failure_state: list  # object start (zeros for reach) + goal, metres: the situation the episode was in


class SimNode(StackNode):
    def __init__(self, **kwargs):
        super().__init__('sim', **kwargs)
        self.config = cfg = declare_config(self, SimNodeConfig)
        self.sim_config = declare_config(self, SimConfig)
        require(self.sim_config.render, 'the sim node publishes camera frames: render must be true')
        self.env = PandaEnv(self.sim_config)
        # held by every callback that touches PyBullet and by close(): a timer still running in an executor
        # thread when the run ends must not step a disconnected physics server
        self._physics = threading.Lock()
        self.closed = False
        self.image_pub = self.create_publisher(Image, cfg.image_topic, qos.SENSOR)
        self.info_pub = self.create_publisher(CameraInfo, cfg.camera_info_topic, qos.SENSOR)
        self.state_pub = self.create_publisher(JointState, cfg.ee_state_topic, qos.SENSOR)
        self.instruction_pub = self.create_publisher(String, cfg.instruction_topic, qos.LATCHED)
        self.events_pub = self.create_publisher(DiagnosticArray, cfg.events_topic, qos.EVENTS)
        self.create_subscription(JointState, cfg.command_topic, self.on_command, qos.RELIABLE)
        self.awaiting_restart: tuple[int, int] | None = None  # (start event stamp, sent ns) until acknowledged
        self.unacknowledged_starts = 0
        self.waits_for_restart_ack = cfg.clock_mode == 'lockstep' and bool(cfg.restart_ack_topic)
        if self.waits_for_restart_ack:
            self.create_subscription(DiagnosticArray, cfg.restart_ack_topic, self.on_restart_ack, qos.EVENTS)

        self.results: list[EpisodeResult] = []
        self.frames_published = 0
        self.first_episode_stamp_ns = 0
        self.finished = False
        self.episode = -1  # -1 = warm-up: the stack has not answered a frame yet
        self.frame_stamp_ns = 0
        self.frame_sent_ns = 0
        self.resends = 0
        self.steps = 0
        self.held_steps = 0
        self.last_command: np.ndarray | None = None
        self.last_command_ns = 0
        self.gripper = 0.0
        self.started_ns = now_ns()
        self.start_gate = None  # callable: the first episode waits until it returns True (set by a runner)
        self.obs = self.env.reset(seed=self.sim_config.seed)
        self.instruction_sent_ns = 0
        self._publish_instruction(self.obs.instruction)
        period = 1.0 / cfg.rate_hz if cfg.clock_mode == 'realtime' else 0.05
        self.timer = self.create_timer(period, self.on_timer)
        self._publish_frame()

    # -- frames ---------------------------------------------------------------------------------
    def _publish_instruction(self, text: str) -> None:
        self.instruction_pub.publish(String(data=text))
        self.instruction_sent_ns = now_ns()

    def _resend_instruction_while_warming_up(self, t: int) -> None:
        """A latched sample can miss a subscriber that is still starting (seen once in ~20 bench runs: the
        vision encoder never got it, so the policy waited for the embedding forever); the stack cannot answer
        the warm-up frame without it, so say it again every 0.5 s until it does."""
        if (t - self.instruction_sent_ns) / 1e9 > 0.5:
            self._publish_instruction(self.obs.instruction)

    def _publish_frame(self) -> None:
        """Stamp after rendering: the budget starts when the frame exists."""
        image = self.obs.image
        stamp = now_ns()
        self.frame_stamp_ns, self.frame_sent_ns, self.resends = stamp, stamp, 0
        if self.episode >= 0:
            self.frames_published += 1
        if self.episode >= 0 and not self.first_episode_stamp_ns:
            self.first_episode_stamp_ns = stamp  # frames before this were warm-up (models loading)
        self._send(image, stamp)

    def _send(self, image: np.ndarray, stamp: int) -> None:
        fid = self.config.camera_frame_id
        self.state_pub.publish(proprio_to_msg(self.obs.proprio, stamp))  # proprio first: it pairs with the image
        self.info_pub.publish(self._camera_info(image.shape, stamp))
        self.image_pub.publish(array_to_image(image, stamp, fid))

    def _camera_info(self, shape, stamp: int) -> CameraInfo:
        h, w = shape[:2]
        size = self.sim_config.image_size  # cameras are stacked side by side: intrinsics of one view
        fy = (size / 2) / math.tan(math.radians(self.sim_config.fov_deg) / 2)
        cx, cy = size / 2, h / 2
        return CameraInfo(header=make_header(stamp, self.config.camera_frame_id), height=h, width=w,
                          distortion_model='plumb_bob', d=[0.0] * 5,
                          k=[fy, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
                          r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
                          p=[fy, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])

    def _event(self, kind: str, **values) -> None:
        values = {'episode': self.episode, 'task': self.sim_config.task, 'step': self.steps, **values}
        self.events_pub.publish(diagnostic(self.frame_stamp_ns or now_ns(), self.config.camera_frame_id,
                                           EPISODE_STATUS, kind, values, hardware_id='sim'))

    # -- episodes -------------------------------------------------------------------------------
    def _start_episode(self) -> None:
        self.episode += 1
        if self.config.episodes and self.episode >= self.config.episodes:
            self.finished = True
            self.timer.cancel()
            self.get_logger().info(f'all {self.config.episodes} episodes done')
            return
        seed = self.sim_config.episode_seed(self.episode)
        self.obs = self.env.reset(seed=seed)
        self.steps, self.held_steps, self.gripper = 0, 0, 0.0
        self.last_command = None
        self._publish_instruction(self.obs.instruction)
        self._event('start', seed=seed, scenario=self.sim_config.scenario)
        if self.waits_for_restart_ack:
            self.awaiting_restart = (self.frame_stamp_ns, now_ns())  # on_restart_ack publishes the frame
        else:
            self._publish_frame()

    def _apply(self, action: np.ndarray | None) -> None:
        if action is None:  # hold: zero motion, gripper unchanged
            action = np.array([0.0, 0.0, 0.0, self.gripper], dtype=np.float32)
            self.held_steps += 1
        self.gripper = float(action[3])
        self.obs, info = self.env.step(action)
        self.steps += 1
        if info.done:
            seed = self.sim_config.episode_seed(self.episode)
            situation = np.concatenate([info.state['object_start'], info.state['goal_pos']]).round(4).tolist()
            self.results.append(EpisodeResult(self.episode, seed, bool(info.success), self.steps,
                                              info.event, info.failure_type, self.held_steps, situation))
            self._event(info.event, failure_type=info.failure_type, seed=seed, success=info.success)
            self.get_logger().info(f'episode {self.episode} seed {seed}: {info.event} '
                                   f'{info.failure_type} after {self.steps} steps')
            self._start_episode()
        else:
            self._publish_frame()

    # -- callbacks ------------------------------------------------------------------------------
    def on_restart_ack(self, msg: DiagnosticArray) -> None:
        with self._physics:
            if (not self.closed and self.awaiting_restart is not None
                    and stamp_to_ns(msg.header.stamp) == self.awaiting_restart[0]):
                self.awaiting_restart = None
                self._publish_frame()

    def on_command(self, msg: JointState) -> None:
        with self._physics:
            if not self.closed:
                self._on_command(msg)

    def _on_command(self, msg: JointState) -> None:
        action = self.parse('command', msg_to_command, msg)
        if action is None or self.awaiting_restart is not None:
            return  # between episodes: the previous frame's (repeated) command must not step the new one
        stamp = stamp_to_ns(msg.header.stamp)
        if self.config.clock_mode == 'realtime':
            self.last_command, self.last_command_ns = action, now_ns()  # latest wins, like a motor driver
            return
        if stamp != self.frame_stamp_ns or self.finished:
            return  # a command for an older frame (queue continuation) is not this step's command
        if self.episode < 0:
            self._answered_warm_up()
            return
        self._apply(action)

    def _answered_warm_up(self) -> None:
        if self.start_gate is not None and not self.start_gate():
            return  # the timer re-sends the warm-up frame; its next answer checks again
        self.get_logger().info(f'stack answered after {(now_ns() - self.started_ns) / 1e9:.1f} s; starting')
        self._start_episode()

    def on_timer(self) -> None:
        with self._physics:
            if not self.closed:
                self._on_timer()

    def _on_timer(self) -> None:
        if self.finished:
            return
        t = now_ns()
        if self.config.clock_mode == 'realtime':
            if self.episode < 0:
                if self.last_command is not None and (self.start_gate is None or self.start_gate()):
                    self._start_episode()
                else:
                    self._resend_instruction_while_warming_up(t)
                    self._publish_frame()
                return
            # a command that arrived since the last step is fresh; otherwise the arm holds
            fresh = self.last_command is not None and self.last_command_ns >= self.frame_stamp_ns
            self._apply(self.last_command if fresh else None)
            return
        # lockstep: resend the same frame when its command is overdue, then hold
        timeout = self.config.startup_timeout_s if self.episode < 0 else self.config.command_timeout_s
        if self.episode < 0:
            self._resend_instruction_while_warming_up(t)
            if (t - self.frame_sent_ns) / 1e9 > 0.5:
                self.frame_sent_ns = t
                self._send(self.obs.image, self.frame_stamp_ns)
            if (t - self.started_ns) / 1e9 > timeout:
                self.get_logger().error('no answer from the stack (or start gate shut); giving up')
                self.finished = True
            return
        if self.awaiting_restart is not None:
            if (t - self.awaiting_restart[1]) / 1e9 > self.config.command_timeout_s:
                self.unacknowledged_starts += 1
                self.get_logger().warning(f'episode {self.episode}: the merger did not acknowledge the start '
                                          f'within {self.config.command_timeout_s} s (is it subscribed to '
                                          f'{self.config.events_topic}?); starting anyway')
                self.awaiting_restart = None
                self._publish_frame()
            return
        if (t - self.frame_sent_ns) / 1e9 > self.config.command_timeout_s:
            if self.resends < self.config.resend_attempts:
                self.resends += 1
                self.frame_sent_ns = t
                self._send(self.obs.image, self.frame_stamp_ns)
            else:
                self.get_logger().warning(f'no command for frame {self.frame_stamp_ns}: holding')
                self._apply(None)

    def close(self) -> None:
        with self._physics:
            if not self.closed:
                self.closed = True
                self.env.close()


def main(args=None):
    run_node(SimNode, args)


if __name__ == '__main__':
    main()
