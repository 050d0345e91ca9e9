"""Run the real node graph against the sim and collect results: shared by `sim`, `eval` and `bench`.

The stack nodes run in their own processes (one per node, or all composed in one); the sim node and a collector
node run in this process so results come back without files. Latency is read from `/vla/latency`, which
every stack node publishes per frame (stamped with the camera frame): end-to-end is the first command
published for a frame stamp, minus that stamp.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from flow_rag_vla_ros.core.latency import summarize as latency_summary
from flow_rag_vla_ros.core.merger import verdict_label

from flow_rag_vla_ros.launcher import STACK_NODES, compose_args, start_processes

PIPELINES = ('flow_only', 'sequential', 'parallel')


@dataclass
class RunSpec:
    task: str = 'reach'
    episodes: int = 10
    seed: int = 0
    pipeline: str = 'parallel'
    layout: str = 'processes'
    clock_mode: str = 'lockstep'
    scenario: str = ''
    situations: int = 0  # revisit protocol (SimConfig.situations); 0 = a new initial state every episode
    checkpoint: str = ''
    backend: str = ''
    params: str | None = None
    overrides: dict = field(default_factory=dict)
    timeout_s: float = 1800.0
    rate_hz: float = 0.0
    max_frames: int = 0  # real-time mode: stop after this many frames (0 = run the episodes)
    log_dir: str | None = None
    # the sim starts the first episode only once this returns True (e.g. a bag recorder has matched the
    # stack's publishers); until then it keeps sending warm-up frames
    start_gate: Callable[[], bool] | None = None

    def node_overrides(self) -> dict[str, dict]:
        o: dict[str, dict] = {k: dict(v) for k, v in self.overrides.items()}
        sim = o.setdefault('sim', {})
        sim.update(task=self.task, episodes=self.episodes, seed=self.seed, clock_mode=self.clock_mode,
                   scenario=self.scenario, situations=self.situations)
        if self.rate_hz:
            sim['rate_hz'] = self.rate_hz
        for node in ('vision_encoder', 'flow_policy'):
            if self.checkpoint:
                o.setdefault(node, {})['checkpoint'] = self.checkpoint
        for node in ('vision_encoder', 'flow_policy'):
            if self.backend:
                o.setdefault(node, {})['backend'] = self.backend
        # the sim renders the cameras the policy was trained with (unless the caller set them)
        if 'cameras' not in sim:
            from flow_rag_vla_ros.core.config import load_node_parameters
            from flow_rag_vla_ros.nodes.runtime import checkpoint_cameras, resolve_checkpoint
            from flow_rag_vla_ros.paths import config_path
            ckpt = self.checkpoint or load_node_parameters(self.params or config_path(), 'vision_encoder').get(
                'checkpoint', '')
            try:
                cameras = checkpoint_cameras(resolve_checkpoint(ckpt)) if ckpt else None
            except FileNotFoundError:
                cameras = None
            if cameras:
                sim['cameras'] = cameras
        o.setdefault('rag_monitor', {})['mode'] = 'sequential' if self.pipeline == 'sequential' else 'parallel'
        merger = o.setdefault('action_merger', {})
        merger['wait_for_correction'] = self.pipeline == 'sequential'
        # lockstep: each frame is one control step, so which action runs never depends on inference time
        merger.setdefault('clock', 'frames' if self.clock_mode == 'lockstep' else 'time')
        return o

    def stack_nodes(self) -> list[str]:
        return [n for n in STACK_NODES if not (n == 'rag_monitor' and self.pipeline == 'flow_only')]


def _make_collector(context):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node

    from flow_rag_vla_ros.nodes import qos
    from flow_rag_vla_ros.nodes.conversions import key_values, stamp_to_ns

    class Collector(Node):
        """Listens to /vla/latency and the graph; keeps the first command per frame stamp."""

        def __init__(self):
            super().__init__('eval_collector', context=context)
            self.e2e: dict[int, float] = {}
            self.stage_ms: dict[str, list[float]] = {}
            self.since_frame_ms: dict[str, list[float]] = {}
            self.command_paths: dict[str, int] = {}
            self.correction_verdicts: dict[str, int] = {}  # per command: 'used' or why a correction was not
            self.nodes_seen: set[str] = set()
            self.messages = 0
            self.create_subscription(DiagnosticArray, '/vla/latency', self.on_latency, qos.EVENTS)
            self.create_timer(0.5, self.on_graph)

        def on_latency(self, msg):
            self.messages += 1
            stamp = stamp_to_ns(msg.header.stamp)
            for status in msg.status:
                kv = key_values(status)
                stage = kv.get('stage', '')
                self.stage_ms.setdefault(stage, []).append(float(kv['stage_ms']))
                if stage == 'command':
                    path = kv.get('path', '')
                    self.command_paths[path] = self.command_paths.get(path, 0) + 1
                    # the first good command for a frame closes its camera -> command latency
                    if stamp not in self.e2e and kv.get('state') == 'ok':
                        self.e2e[stamp] = float(kv['e2e_ms'])
                    verdict = verdict_label(kv.get('used_correction') == 'True', kv.get('correction_reason', ''))
                    self.correction_verdicts[verdict] = self.correction_verdicts.get(verdict, 0) + 1
                else:
                    self.since_frame_ms.setdefault(stage, []).append(float(kv['since_frame_ms']))

        def drop_before(self, stamp_ns: int) -> None:
            self.e2e = {s: v for s, v in self.e2e.items() if s >= stamp_ns}

        def on_graph(self):
            self.nodes_seen.update(self.get_node_names())

    return Collector()


def _peak_rss_mb(pids: dict[str, int]) -> dict[str, float]:
    """VmHWM (peak resident set) per process, read from /proc."""
    out = {}
    for name, pid in pids.items():
        try:
            with open(f'/proc/{pid}/status') as f:
                for line in f:
                    if line.startswith('VmHWM:'):
                        out[name] = int(line.split()[1]) / 1024.0
        except OSError:
            pass
    return out


def _drain(executor, collector, quiet_s: float = 0.2, limit_s: float = 1.0) -> None:
    """The merger publishes a command's latency record just after the command: the sim can finish on the last
    command before the collector has its record. Spin until /vla/latency has been quiet for `quiet_s`."""
    end = time.monotonic() + limit_s
    seen, quiet_since = collector.messages, time.monotonic()
    while time.monotonic() < end and time.monotonic() - quiet_since < quiet_s:
        executor.spin_once(timeout_sec=0.05)
        if collector.messages != seen:
            seen, quiet_since = collector.messages, time.monotonic()


def run_stack(spec: RunSpec) -> dict:
    """Run the episodes (or `max_frames` real-time frames) through the real node graph; return results."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    from flow_rag_vla_ros.nodes.sim_node import SimNode

    overrides = spec.node_overrides()
    nodes = spec.stack_nodes()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix='flow_rag_vla_run_') as tmp:
        # the sim and the collector run here; the stack runs in its own process(es) in both layouts,
        # so the sim's rendering never competes with the stack for this process's GIL
        stack = start_processes(nodes, spec.params, overrides, log_dir=spec.log_dir,
                                composed=spec.layout == 'composed')
        context = rclpy.Context()
        rclpy.init(args=compose_args(spec.params, overrides, tmp), context=context)
        created = []
        try:
            executor = MultiThreadedExecutor(num_threads=4, context=context)
            sim = SimNode(context=context)
            sim.start_gate = spec.start_gate
            collector = _make_collector(context)
            created = [sim, collector]
            for n in created:
                executor.add_node(n)
            frames_done = lambda: spec.max_frames and len(collector.e2e) >= spec.max_frames  # noqa: E731
            while not sim.finished and not frames_done():
                executor.spin_once(timeout_sec=0.1)
                if time.monotonic() - started > spec.timeout_s:
                    raise TimeoutError(f'run did not finish within {spec.timeout_s} s')
                dead = [n for n, ok in stack.alive().items() if not ok]
                if dead:
                    raise RuntimeError(f'stack process(es) {dead} exited; see logs in {spec.log_dir}')
            _drain(executor, collector)
            collector.on_graph()
            rss = _peak_rss_mb({n: p.pid for n, p in stack.processes.items()})
            results = [asdict(r) for r in sim.results]
            # warm-up frames (answered while models were still loading) are not part of the run
            collector.drop_before(sim.first_episode_stamp_ns)
            collector.frames_published = sim.frames_published
            collector.unacknowledged_starts = sim.unacknowledged_starts
            collected = (collector, rss, results)
        finally:
            for n in created:
                if hasattr(n, 'close'):
                    n.close()
                n.destroy_node()
            rclpy.try_shutdown(context=context)
            stack.stop()
    collector, rss, results = collected
    return summarize(spec, results, collector, rss, time.monotonic() - started)


def summarize(spec: RunSpec, results: list[dict], collector, rss: dict, wall_s: float) -> dict:
    n = len(results)
    successes = [r for r in results if r['success']]
    stages = {s: latency_summary(v) for s, v in collector.stage_ms.items()}
    return {
        'task': spec.task, 'pipeline': spec.pipeline, 'layout': spec.layout, 'clock_mode': spec.clock_mode,
        'scenario': spec.scenario, 'seed': spec.seed,
        'episodes': n,
        'success_rate': (len(successes) / n) if n else 0.0,
        'mean_steps_to_success': float(np.mean([r['steps'] for r in successes])) if successes else None,
        'e2e_ms': latency_summary(collector.e2e.values()),
        'e2e_samples_ms': [round(v, 4) for v in collector.e2e.values()],
        'stage_ms': stages,
        'since_frame_ms': {s: latency_summary(v) for s, v in collector.since_frame_ms.items()},
        'frames_published': collector.frames_published,
        'frames_commanded': len(collector.e2e),
        'dropped_frames': max(0, collector.frames_published - len(collector.e2e)),
        # lockstep episodes whose first frame went out without the merger's restart acknowledgement
        'unacknowledged_starts': collector.unacknowledged_starts,
        'frame_rate_hz': len(collector.e2e) / wall_s if wall_s else 0.0,
        'command_paths': collector.command_paths,
        'corrections_used': collector.correction_verdicts.get('used', 0),
        'correction_verdicts': collector.correction_verdicts,
        'nodes': sorted(collector.nodes_seen),
        'peak_rss_mb': rss,
        'wall_s': wall_s,
        'per_episode': results,
    }
