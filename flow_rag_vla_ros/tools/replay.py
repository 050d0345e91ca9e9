"""`flow-rag-vla replay BAG`: replay a recorded run through the stack and compare with what was recorded.

The recorded instruction, episode events, camera frames (+ CameraInfo) and ee_state go to the stack in
recorded order, either at recorded timing (`--rate 1.0`; 2.0 = twice as fast) or in lockstep
(`--rate 0`: the next frame goes out when the command for the current one arrived, re-sent on a timeout
like the sim does). Produced `/robot/command`, `/vla/action_chunk` and `/vla/correction` are matched to
the recorded ones by frame stamp.

Stamps: `restamp` (default) stamps each frame when it is published, like a live camera, and maps the
outputs back to the recorded stamps: the stack's deadline and freshness checks see the same relative
timing as during the recording, and the policy's noise depends only on the input (not the stamp), so a
lockstep replay with the same checkpoint and backend reproduces the recorded actions. `original` publishes
the recorded stamps unchanged (for stacks that need them, e.g. to correlate with other recorded data).

Bags from a robot with other topic names: `--remap /camera/image_raw:=/my/cam` reads the stack's
`/camera/image_raw` from the bag's `/my/cam` (likewise for every replayed or compared topic).
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from flow_rag_vla_ros.bag.compare import (COMMAND, CHUNK, CORRECTION, EVENTS, IMAGE, INFO, INSTRUCTION, STATE,
                                          Frame, Recording, action_errors, alarm_scores, chunk_errors,
                                          load_recording, parse_remaps)
from flow_rag_vla_ros.bag.reader import BagError
from flow_rag_vla_ros.core.config import param, require
from flow_rag_vla_ros.core.latency import summarize as latency_summary
from flow_rag_vla_ros.nodes.base import now_ns
from flow_rag_vla_ros.tools.runner import PIPELINES, RunSpec


@dataclass
class ReplayConfig:
    rate: float = param(1.0, 'speed relative to the recording (1 = recorded timing); 0 = lockstep')
    remap: list[str] = param([], 'STACK_TOPIC:=BAG_TOPIC: read a stack topic from another topic of the bag')
    stamps: str = param('restamp', 'restamp (stamp frames when published, map results back) | original')
    stack_clock: str = param('', "the stack's clock: lockstep (merger steps per frame) | realtime (wall time); "
                                 "'' = lockstep when rate is 0. Use the mode the bag was recorded in")
    pipeline: str = param('parallel', 'flow_only | sequential | parallel')
    checkpoint: str = param('', 'checkpoint dir (default: the params file)')
    backend: str = param('', 'policy backend (default: the params file)')
    params: str = param('', 'params YAML (default: config/stack.yaml)')
    log_dir: str = param('', 'write each stack node process log here')
    window_frames: int = param(10, 'an alarm within the N frames ending at a recorded failure is a true positive')
    failure_events: list[str] = param(['failure', 'timeout'], 'episode event messages that count as failures')
    startup_timeout_s: float = param(120.0, 'wait this long for the stack to answer the first frame')
    command_timeout_s: float = param(1.0, 'lockstep: re-send a frame whose command (or recorded chunk) is this late')
    resend_attempts: int = param(2, 'lockstep: re-sends before the frame is counted as unanswered')
    embedding_timeout_s: float = param(5.0, 'wait this long for the embedding of a changed instruction')
    drain_s: float = param(0.5, 'keep collecting outputs this long after the last input')
    frame_rate_hz: float = param(0.0, 'timed replay: publish frames at this fixed rate (like a camera driver) '
                                      'instead of the recorded timing; 0 = recorded timing')

    def __post_init__(self):
        require(self.rate >= 0, f'rate must be >= 0 (0 = lockstep), got {self.rate}')
        require(self.frame_rate_hz >= 0, f'frame_rate_hz must be >= 0, got {self.frame_rate_hz}')
        require(not (self.frame_rate_hz and self.rate == 0), 'frame_rate_hz needs a timed replay (rate > 0)')
        require(self.stamps in ('restamp', 'original'), f"stamps must be restamp or original, got {self.stamps!r}")
        require(self.stack_clock in ('', 'lockstep', 'realtime'), f'stack_clock {self.stack_clock!r} invalid')
        require(self.pipeline in PIPELINES, f'pipeline {self.pipeline!r} not in {PIPELINES}')
        require(self.window_frames >= 1, f'window_frames must be >= 1, got {self.window_frames}')
        require(self.startup_timeout_s > 0 and self.command_timeout_s > 0, 'timeouts must be > 0')
        require(self.resend_attempts >= 0, 'resend_attempts must be >= 0')
        parse_remaps(self.remap)  # raises a clear error for a bad entry

    @property
    def lockstep(self) -> bool:
        return self.rate == 0


def start_default_stack(config: ReplayConfig):
    """The real stack nodes, one process each, configured like `flow-rag-vla sim` (returns a launcher Stack)."""
    from flow_rag_vla_ros.launcher import start_processes
    spec = RunSpec(pipeline=config.pipeline, checkpoint=config.checkpoint, backend=config.backend,
                   params=config.params or None,
                   clock_mode=config.stack_clock or ('lockstep' if config.lockstep else 'realtime'),
                   log_dir=config.log_dir or None)
    return start_processes(spec.stack_nodes(), spec.params, spec.node_overrides(), log_dir=spec.log_dir)


def _make_replayer(context):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image, JointState
    from std_msgs.msg import Float32MultiArray, String
    from trajectory_msgs.msg import JointTrajectory

    from flow_rag_vla_ros.nodes import qos
    from flow_rag_vla_ros.nodes.base import LATENCY_TOPIC
    from flow_rag_vla_ros.nodes.conversions import (RESTART_ACK_TOPIC, key_values, msg_to_chunk, msg_to_command,
                                                    msg_to_correction, stamp_to_ns)

    class Replayer(Node):
        """Publishes the recorded inputs; keeps the first command / chunk per stamp and every alarm."""

        def __init__(self):
            super().__init__('bag_replay', context=context)
            self.image_pub = self.create_publisher(Image, IMAGE, qos.SENSOR)
            self.info_pub = self.create_publisher(CameraInfo, INFO, qos.SENSOR)
            self.state_pub = self.create_publisher(JointState, STATE, qos.SENSOR)
            self.instruction_pub = self.create_publisher(String, INSTRUCTION, qos.LATCHED)
            self.events_pub = self.create_publisher(DiagnosticArray, EVENTS, qos.EVENTS)
            # published stamp -> (action, receive ns in this callback, receive ns in the middleware)
            self.commands: dict[int, tuple[np.ndarray, int, int]] = {}
            self.chunks: dict[int, np.ndarray] = {}
            self.alarms: set[int] = set()
            self.embedding_labels: set[str] = set()
            self.bad_outputs: list[str] = []
            # stage -> [(frame stamp, time inside the node ms, camera stamp -> stage output ms)]
            self.stage_latency: dict[str, list[tuple[int, float, float]]] = {}
            # stamp -> how the merger released the frame's first command: chunk (on arrival), correction (a wait
            # for the monitor ended by its verdict), deadline (the wait ran out), tick (queue / hold)
            self.command_paths: dict[int, str] = {}
            self.create_subscription(DiagnosticArray, LATENCY_TOPIC, self.on_latency, qos.EVENTS)
            self.create_subscription(JointState, COMMAND, self.on_command, qos.RELIABLE)
            self.create_subscription(JointTrajectory, CHUNK, self.on_chunk, qos.RELIABLE)
            self.create_subscription(DiagnosticArray, CORRECTION, self.on_correction, qos.RELIABLE)
            self.create_subscription(Float32MultiArray, '/vla/instruction_embedding', self.on_embedding, qos.LATCHED)
            self.restarts_acknowledged: set[int] = set()  # stamps of 'start' events the merger has acted on
            self.create_subscription(DiagnosticArray, RESTART_ACK_TOPIC, self.on_restart_ack, qos.EVENTS)

        def _keep(self, what, fn, msg):
            try:
                return fn(msg)
            except (ValueError, KeyError) as e:
                self.bad_outputs.append(f'{what}: {e}')
                return None

        def on_command(self, msg, info):
            # two receive times: the callback's (what a Python driver sees, after this executor's queue) and the
            # middleware's (the DDS reader took the sample; this harness's own backlog of latency reports and
            # chunks to unpack cannot delay it)
            received, stamp = now_ns(), stamp_to_ns(msg.header.stamp)
            action = self._keep('command', msg_to_command, msg)
            if action is not None and stamp not in self.commands:
                self.commands[stamp] = (action, received, info['received_timestamp'] or received)

        def on_chunk(self, msg):
            chunk = self._keep('chunk', msg_to_chunk, msg)
            if chunk is not None:
                self.chunks.setdefault(stamp_to_ns(msg.header.stamp), chunk)

        def on_correction(self, msg):
            correction = self._keep('correction', msg_to_correction, msg)
            if correction is not None and correction.is_alarm:
                self.alarms.add(correction.source_stamp_ns)

        def on_latency(self, msg):
            stamp = stamp_to_ns(msg.header.stamp)
            for status in msg.status:
                kv = key_values(status)
                self.stage_latency.setdefault(kv.get('stage', ''), []).append(
                    (stamp, float(kv['stage_ms']), float(kv['since_frame_ms'])))
                if kv.get('stage') == 'command' and 'path' in kv:
                    self.command_paths.setdefault(stamp, kv['path'])

        def on_embedding(self, msg):
            self.embedding_labels.update(d.label for d in msg.layout.dim)

        def on_restart_ack(self, msg):
            self.restarts_acknowledged.add(stamp_to_ns(msg.header.stamp))

    return Replayer()


class _Driver:
    """Publishes the timeline (recorded timing or lockstep) and keeps the stamp mapping."""

    def __init__(self, node, executor, config: ReplayConfig, stack):
        self.node, self.executor, self.config, self.stack = node, executor, config, stack
        self.published: dict[int, int] = {}  # recorded frame stamp -> published stamp
        self.recorded: dict[int, int] = {}  # published stamp -> recorded frame stamp
        self.sent_ns: dict[int, int] = {}  # published stamp -> time of the (last) send
        self.last_stamp = 0
        self.answered = False
        self.unanswered = 0
        self.unacknowledged_starts = 0
        self.recorded_chunks: set[int] = set()  # recorded frame stamps that have a recorded chunk
        self.warm_up_stamps: set[int] = set()  # published stamps sent while the stack was still starting
        self.logger = node.get_logger()

    def spin_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.executor.spin_once(timeout_sec=min(0.05, remaining))
            self.check_stack()
        return True

    def check_stack(self) -> None:
        alive = getattr(self.stack, 'alive', None)
        dead = [n for n, ok in alive().items() if not ok] if alive is not None else []
        if dead:
            raise RuntimeError(f'stack node(s) {dead} exited during the replay'
                               + (f'; see logs in {self.config.log_dir}' if self.config.log_dir else ''))

    def sleep_until(self, target: float) -> None:
        """Spin until the monotonic time `target`, never past it by more than a few ms."""
        while (remaining := target - time.monotonic()) > 0:
            self.executor.spin_once(timeout_sec=min(0.005, remaining))
        self.check_stack()

    def _new_stamp(self, recorded_ns: int) -> int:
        stamp = recorded_ns if self.config.stamps == 'original' else max(now_ns(), self.last_stamp + 1)
        self.last_stamp = stamp
        return stamp

    def _set_stamp(self, msg, stamp_ns: int) -> None:
        from flow_rag_vla_ros.nodes.conversions import ns_to_stamp
        msg.header.stamp = ns_to_stamp(stamp_ns)

    def send_frame(self, frame: Frame, stamp: int) -> None:
        for msg in (frame.state, frame.info, frame.image):  # proprio first: it pairs with the image
            if msg is not None:
                self._set_stamp(msg, stamp)
        if frame.state is not None:
            self.node.state_pub.publish(frame.state)
        if frame.info is not None:
            self.node.info_pub.publish(frame.info)
        self.node.image_pub.publish(frame.image)
        self.sent_ns[stamp] = now_ns()

    def frame(self, frame: Frame) -> None:
        stamp = self._new_stamp(frame.stamp_ns)
        self.published[frame.stamp_ns], self.recorded[stamp] = stamp, frame.stamp_ns
        self.send_frame(frame, stamp)
        if self.answered and not self.config.lockstep:
            return
        # lockstep: a frame is done when its command is back, and its chunk too when one was recorded (they
        # travel on different topics, so the command can arrive first)
        answered = lambda: stamp in self.node.commands and (  # noqa: E731
            stamp in self.node.chunks or frame.stamp_ns not in self.recorded_chunks)
        if not self.answered:  # the stack may still be loading: re-send until it answers (like the sim)
            self.warm_up_stamps.add(stamp)
            deadline = time.monotonic() + self.config.startup_timeout_s
            if not self._resend_until(answered, frame, stamp, deadline):
                raise TimeoutError(f'the stack did not answer the first frame within '
                                   f'{self.config.startup_timeout_s} s')
            # the monitor answers beside the command path, so a command says nothing about it: wait for its first
            # verdict too, or its start-up lands in the measured frames (a bench run's 15 parallel frames had no
            # 'correction' record at all, and p99 243 ms)
            if self.config.pipeline != 'flow_only' and not self._resend_until(self.monitor_answered, frame, stamp,
                                                                               deadline):
                self.logger.warning('the monitor gave no verdict during the warm-up; going on')
            self.answered = True
            warmed_up = getattr(self.stack, 'warmed_up', None)  # e.g. the bench starts counting CPU time here
            if warmed_up is not None:
                warmed_up()
            return
        for _ in range(self.config.resend_attempts):
            if self.spin_until(answered, self.config.command_timeout_s):
                return
            self.send_frame(frame, stamp)
        if not self.spin_until(answered, self.config.command_timeout_s):
            self.unanswered += 1
            self.logger.warning(f'no command for frame {frame.stamp_ns} (published as {stamp})')

    def _resend_until(self, done, frame: Frame, stamp: int, deadline: float) -> bool:
        """Spin until `done()`, sending the frame again every 0.5 s (the stack may still be loading); False once
        `deadline` (time.monotonic) has passed."""
        while not self.spin_until(done, 0.5):
            if time.monotonic() > deadline:
                return False
            self.send_frame(frame, stamp)
        return True

    def monitor_answered(self) -> bool:
        """The monitor has published a verdict (its 'correction' latency record) for a warm-up frame."""
        return any(s in self.warm_up_stamps for s, _, _ in self.node.stage_latency.get('correction', ()))

    def instruction(self, msg) -> None:
        self.node.instruction_pub.publish(msg)
        if self.answered and not self.config.lockstep:
            return  # recorded timing: never wait
        timeout = self.config.embedding_timeout_s if self.answered else self.config.startup_timeout_s
        deadline = time.monotonic() + timeout
        # re-sent every 0.5 s: a latched sample can miss a subscriber that is still starting (one bench run in
        # ~20 stalled for good when the vision encoder never got it)
        while not self.spin_until(lambda: msg.data in self.node.embedding_labels,
                                  min(0.5, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                self.logger.warning(f'no instruction embedding for {msg.data!r} within {timeout} s; going on')
                return
            self.node.instruction_pub.publish(msg)

    def event(self, msg) -> None:
        from flow_rag_vla_ros.nodes.conversions import stamp_to_ns, starts_episode
        recorded = stamp_to_ns(msg.header.stamp)
        stamp = self.published.get(recorded, recorded if self.config.stamps == 'original'
                                   else max(now_ns(), self.last_stamp))
        self._set_stamp(msg, stamp)
        self.node.events_pub.publish(msg)
        if not (self.config.lockstep and starts_episode(msg)):
            return
        # like the lockstep sim: the next episode's first frame goes out once the merger has restarted (DDS
        # does not order messages across topics, and a late restart would leave the recorded run's commands)
        if not self.spin_until(lambda: stamp in self.node.restarts_acknowledged, self.config.command_timeout_s):
            self.unacknowledged_starts += 1
            self.logger.warning(f'the merger did not acknowledge the episode start at {stamp} within '
                                f'{self.config.command_timeout_s} s; going on')

    def state(self, msg) -> None:
        if self.config.stamps == 'restamp':
            self._set_stamp(msg, max(now_ns(), self.last_stamp))
        self.node.state_pub.publish(msg)

    def play(self, rec: Recording) -> float:
        """Publish the whole timeline; returns the wall time it took."""
        started = time.monotonic()
        self.recorded_chunks = set(rec.chunks)
        t0 = log0 = None
        frames = first_timed = 0
        for kind, log_ns, payload in rec.timeline:
            if self.answered and not self.config.lockstep:
                if t0 is None:
                    t0, log0, first_timed = time.monotonic(), log_ns, frames
                if not self.config.frame_rate_hz:
                    self.sleep_until(t0 + (log_ns - log0) / 1e9 / self.config.rate)
                elif kind == 'frame':  # fixed camera rate; events and the instruction go out at once
                    self.sleep_until(t0 + (frames - first_timed) / self.config.frame_rate_hz)
            getattr(self, kind)(payload)
            frames += kind == 'frame'
        self.spin_until(lambda: False, self.config.drain_s)
        return time.monotonic() - started


def replay_bag(bag: str | Path, config: ReplayConfig | None = None,
               start_stack: Callable[[ReplayConfig], object] | None = None) -> dict:
    """Replay `bag` through a stack (`start_stack(config)` returns something with `stop()`; default: the
    real stack nodes) and compare its outputs with the recorded ones. Returns the JSON-able results."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    config = config or ReplayConfig()
    rec = load_recording(bag, parse_remaps(config.remap))
    stack = (start_stack or start_default_stack)(config)
    context = rclpy.Context()
    try:
        rclpy.init(context=context)
        node = _make_replayer(context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        driver = _Driver(node, executor, config, stack)
        try:
            wall_s = driver.play(rec)
        finally:
            executor.shutdown()
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
        stack.stop()
    return summarize(bag, config, rec, driver, wall_s)


def summarize(bag, config: ReplayConfig, rec: Recording, driver: _Driver, wall_s: float) -> dict:
    node, back = driver.node, driver.recorded
    commands = {back[s]: a for s, (a, _, _) in node.commands.items() if s in back}
    chunks = {back[s]: c for s, c in node.chunks.items() if s in back}
    alarms = {back[s] for s in node.alarms if s in back}
    latency = [(t - driver.sent_ns[s]) / 1e6 for s, (_, t, _) in node.commands.items() if s in driver.sent_ns]
    # restamp: a frame's stamp is its (first) publish time, so this is camera stamp -> command received here
    replayed_stamps = [s for s in node.commands if s in back and s not in driver.warm_up_stamps]
    restamped = config.stamps == 'restamp'
    stamp_latency = [(node.commands[s][1] - s) / 1e6 for s in replayed_stamps] if restamped else []
    stamp_latency_middleware = [(node.commands[s][2] - s) / 1e6 for s in replayed_stamps] if restamped else []
    # per-stage latency of the replayed frames (the warm-up re-sends measure model loading, not the stack)
    stage_latency = {stage: [v for v in timed if v[0] in back and v[0] not in driver.warm_up_stamps]
                     for stage, timed in node.stage_latency.items()}
    frames_by_log = {f.stamp_ns: f.log_time_ns for f in rec.frames}
    recorded_latency = [(t - frames_by_log[s]) / 1e6 for s, t in rec.command_log_ns.items() if s in frames_by_log]
    stamps = [f.stamp_ns for f in rec.frames]
    episodes = []
    for ep in sorted({f.episode for f in rec.frames}):
        ep_stamps = [f.stamp_ns for f in rec.frames if f.episode == ep]
        episodes.append({'episode': ep, 'frames': len(ep_stamps),
                         'actions': action_errors(commands, rec.commands, ep_stamps)})
    score = lambda a: alarm_scores(rec.frames, a, rec.events, config.window_frames,  # noqa: E731
                                   tuple(config.failure_events))
    return {
        'bag': str(bag), 'config': asdict(config), 'wall_s': wall_s,
        'frames': {'recorded': len(rec.frames), 'replayed': len(driver.published), 'commanded': len(commands),
                   'unanswered': driver.unanswered, 'recorded_commands': len(rec.commands),
                   'unacknowledged_starts': driver.unacknowledged_starts},
        'actions': action_errors(commands, rec.commands, stamps),
        'chunks': chunk_errors(chunks, rec.chunks, stamps),
        'per_episode': episodes,
        'alarms': {'replayed': score(alarms), 'recorded': score(rec.alarms)},
        'latency_ms': latency_summary(latency),
        'stamp_to_command_ms': latency_summary(stamp_latency),
        'stamp_to_command_middleware_ms': latency_summary(stamp_latency_middleware),
        'stage_ms': {stage: latency_summary([v[1] for v in timed]) for stage, timed in stage_latency.items()},
        'since_frame_ms': {stage: latency_summary([v[2] for v in timed]) for stage, timed in stage_latency.items()},
        'recorded_latency_ms': latency_summary(recorded_latency),
        'bad_outputs': node.bad_outputs[:20],
        'command_paths': dict(Counter(node.command_paths[s] for s in replayed_stamps if s in node.command_paths)),
        # the samples behind the summaries above, for pooling runs (`bench --rounds`)
        'samples_ms': {'stamp_to_command': stamp_latency, 'stamp_to_command_middleware': stamp_latency_middleware,
                       # the same frames by how the merger released them: a wait for the monitor's verdict is the
                       # design's (alarm_wait_ms), not contention, and can put a few frames into the tail
                       'stamp_to_command_by_path': by_path(replayed_stamps, stamp_latency, node.command_paths),
                       'stage': {stage: [v[1] for v in timed] for stage, timed in stage_latency.items()},
                       'since_frame': {stage: [v[2] for v in timed] for stage, timed in stage_latency.items()}},
    }


def by_path(stamps: list[int], latency_ms: list[float], paths: dict[int, str]) -> dict[str, list[float]]:
    """Latency samples grouped by each frame's command path ('unknown' where no latency report named it)."""
    out: dict[str, list[float]] = {}
    for stamp, ms in zip(stamps, latency_ms):
        out.setdefault(paths.get(stamp, 'unknown'), []).append(ms)
    return out


def print_results(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    fmt = lambda v, f='.3g': '-' if v is None else format(v, f)  # noqa: E731
    table = Table(title=f"replay of {result['bag']} ({'lockstep' if result['config']['rate'] == 0 else 'timed'})")
    for col in ('episode', 'frames', 'matched', 'MSE', 'MSE dx / dy / dz / grip', 'max |err|'):
        table.add_column(col)
    rows = [('all', result['frames']['recorded'], result['actions'])]
    rows += [(str(e['episode']) if e['episode'] >= 0 else 'warm-up', e['frames'], e['actions'])
             for e in result['per_episode']]
    for name, frames, a in rows:
        per_dim = ' / '.join(fmt(v) for v in a['mse_per_dim']) if a['mse_per_dim'] else '-'
        table.add_row(name, str(frames), str(a['n']), fmt(a['mse']), per_dim, fmt(a['max_abs_error']))
    console = Console()
    console.print(table)
    for who in ('replayed', 'recorded'):
        s = result['alarms'][who]
        console.print(f"{who} monitor: {s['alarms']} alarm frames, {s['failures']} failures, precision "
                      f"{fmt(s['precision'], '.2f')}, recall {fmt(s['recall'], '.2f')} (window {s['window_frames']})")
    lat, chunks = result['latency_ms'], result['chunks']
    console.print(f"latency ms p50 {fmt(lat['p50'], '.2f')} p99 {fmt(lat['p99'], '.2f')} (n={lat['n']}) | "
                  f"chunk MSE {fmt(chunks['mse'])} (n={chunks['n']}) | unanswered frames "
                  f"{result['frames']['unanswered']}")


def register(subparsers) -> None:
    p = subparsers.add_parser('replay', help='replay a rosbag2 through the stack and compare with the recording')
    p.add_argument('bag', help='rosbag2 directory (written by `flow-rag-vla record` or `sim --record`)')
    p.add_argument('--json', default=None, help='write the results JSON here')
    p.add_argument('--rate', type=float, default=1.0, help='1 = recorded timing; 0 = lockstep (exact replay)')
    p.add_argument('--remap', nargs='+', default=[], metavar='STACK_TOPIC:=BAG_TOPIC')
    p.add_argument('--stamps', choices=('restamp', 'original'), default='restamp')
    p.add_argument('--frame-rate', type=float, default=0.0,
                   help='timed replay: publish frames at this fixed rate (Hz) instead of the recorded timing')
    p.add_argument('--stack-clock', choices=('lockstep', 'realtime'), default='',
                   help='clock mode of the recorded run (default: lockstep when --rate 0, else realtime)')
    p.add_argument('--pipeline', choices=PIPELINES, default='parallel')
    p.add_argument('--checkpoint', default='')
    p.add_argument('--backend', default='')
    p.add_argument('--params', default='')
    p.add_argument('--window', type=int, default=10, help='frames before a failure in which an alarm counts')
    p.add_argument('--failure-events', nargs='+', default=['failure', 'timeout'],
                   help='/task/events messages that count as failures for alarm precision/recall')
    p.add_argument('--startup-timeout', type=float, default=120.0)
    p.add_argument('--log-dir', default='')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = ReplayConfig(rate=args.rate, remap=args.remap, stamps=args.stamps, stack_clock=args.stack_clock,
                              pipeline=args.pipeline, frame_rate_hz=args.frame_rate,
                              checkpoint=args.checkpoint, backend=args.backend, params=args.params,
                              log_dir=args.log_dir, window_frames=args.window,
                              failure_events=args.failure_events,
                              startup_timeout_s=args.startup_timeout)
        result = replay_bag(args.bag, config)
    except (BagError, ValueError, TimeoutError) as e:
        raise SystemExit(f'replay: {e}') from e
    print_results(result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0
