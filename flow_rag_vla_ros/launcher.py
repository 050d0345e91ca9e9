"""Pip-side launcher: starts the same nodes as `launch/sim.launch.py` with the same YAML.

Two layouts: one OS process per node (what `ros2 launch` does) or every node composed in one process
on a MultiThreadedExecutor. Ctrl-C / SIGTERM stops everything; children die with the launcher even if it
is killed (PR_SET_PDEATHSIG), so no orphan nodes survive.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from flow_rag_vla_ros.paths import config_path

# node name -> module with main() and the Node class
NODES = {
    'sim': ('flow_rag_vla_ros.nodes.sim_node', 'SimNode'),
    'vision_encoder': ('flow_rag_vla_ros.nodes.vision_encoder_node', 'VisionEncoderNode'),
    'flow_policy': ('flow_rag_vla_ros.nodes.flow_policy_node', 'FlowPolicyNode'),
    'rag_monitor': ('flow_rag_vla_ros.nodes.rag_monitor_node', 'RagMonitorNode'),
    'action_merger': ('flow_rag_vla_ros.nodes.action_merger_node', 'ActionMergerNode'),
}
STACK_NODES = ('vision_encoder', 'flow_policy', 'rag_monitor', 'action_merger')


def merged_params_file(base: Path, overrides: dict[str, dict], directory: str) -> Path:
    """The base YAML with per-node overrides applied, as a standard ROS 2 params file."""
    with open(base) as f:
        doc = yaml.safe_load(f) or {}
    for node, values in overrides.items():
        doc.setdefault(node, {}).setdefault('ros__parameters', {}).update(values)
    out = Path(directory) / 'params.yaml'
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the launcher dies, however it dies."""
    try:
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Stack:
    """Running stack nodes (one process per node); `stop()` is idempotent."""
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    tmpdir: tempfile.TemporaryDirectory | None = None
    params_file: Path | None = None

    def alive(self) -> dict[str, bool]:
        return {name: p.poll() is None for name, p in self.processes.items()}

    def stop(self, timeout: float = 10.0) -> None:
        for p in self.processes.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for p in self.processes.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.tmpdir is not None:
            self.tmpdir.cleanup()
            self.tmpdir = None

    def kill_node(self, name: str) -> None:
        p = self.processes[name]
        p.kill()
        p.wait()

    def restart_node(self, name: str, log_dir: str | None = None) -> None:
        self.processes[name] = spawn_node(name, self.params_file, log_dir)


def spawn_node(name: str, params_file: Path, log_dir: str | None = None) -> subprocess.Popen:
    module, _ = NODES[name]
    out = None
    if log_dir:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        out = open(Path(log_dir) / f'{name}.log', 'ab')
    return subprocess.Popen([sys.executable, '-m', module, '--ros-args', '--params-file', str(params_file)],
                            stdout=out, stderr=subprocess.STDOUT if out else None,
                            preexec_fn=_die_with_parent, env=os.environ.copy())


def start_processes(nodes, params: Path | str | None = None, overrides: dict | None = None,
                    log_dir: str | None = None, composed: bool = False) -> Stack:
    """One process per node, or (composed=True) all `nodes` in one child process named 'composed'."""
    tmp = tempfile.TemporaryDirectory(prefix='flow_rag_vla_')
    params_file = merged_params_file(Path(params or config_path()), overrides or {}, tmp.name)
    stack = Stack(tmpdir=tmp, params_file=params_file)
    if composed:
        out = open(Path(log_dir) / 'composed.log', 'ab') if log_dir else None
        stack.processes['composed'] = subprocess.Popen(
            [sys.executable, '-m', 'flow_rag_vla_ros.cli', 'launch', '--layout', 'composed',
             '--params', str(params_file), '--nodes', *nodes],
            stdout=out, stderr=subprocess.STDOUT if out else None, preexec_fn=_die_with_parent)
        return stack
    for name in nodes:
        stack.processes[name] = spawn_node(name, params_file, log_dir)
    return stack


def create_composed(nodes, **node_kwargs):
    """Instantiate nodes in this process (rclpy must be initialised with the params file: see compose_args)."""
    import importlib
    created = []
    for name in nodes:
        module, cls = NODES[name]
        created.append(getattr(importlib.import_module(module), cls)(**node_kwargs))
    return created


def compose_args(params: Path | str | None, overrides: dict | None, directory: str) -> list[str]:
    params_file = merged_params_file(Path(params or config_path()), overrides or {}, directory)
    return ['--ros-args', '--params-file', str(params_file)]


def run_composed(nodes, params=None, overrides=None) -> None:
    """All nodes in one process on a MultiThreadedExecutor until Ctrl-C / SIGTERM."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
    with tempfile.TemporaryDirectory(prefix='flow_rag_vla_') as tmp:
        rclpy.init(args=compose_args(params, overrides, tmp))
        created = []
        try:
            created = create_composed(nodes)
            from flow_rag_vla_ros.nodes.base import limit_native_threads
            limit_native_threads()
            executor = MultiThreadedExecutor(num_threads=max(2, len(created)))
            for node in created:
                executor.add_node(node)
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        except Exception:
            if rclpy.ok():
                raise
            # a signal shut the context down while the executor built its next wait set ('the given context is
            # not valid'): the process is stopping, as with ExternalShutdownException
        finally:
            for node in created:
                if hasattr(node, 'close'):
                    node.close()
                node.destroy_node()
            rclpy.try_shutdown()


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """`node.param=value` (value parsed as YAML) -> {node: {param: value}}."""
    out: dict[str, dict] = {}
    for item in items:
        key, _, value = item.partition('=')
        node, _, name = key.partition('.')
        if not name or not _:
            raise ValueError(f'override {item!r} is not node.param=value')
        out.setdefault(node, {})[name] = yaml.safe_load(value)
    return out


def register(subparsers) -> None:
    p = subparsers.add_parser('launch', help='start the stack nodes (pip-side `ros2 launch`)')
    p.add_argument('--params', default=None, help='ROS 2 params YAML (default: config/stack.yaml)')
    p.add_argument('--layout', choices=('processes', 'composed'), default='processes')
    p.add_argument('--nodes', nargs='+', default=list(STACK_NODES) + ['sim'], choices=list(NODES))
    p.add_argument('--set', nargs='*', default=[], metavar='NODE.PARAM=VALUE', help='parameter overrides')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = parse_overrides(args.set)
    if args.layout == 'composed':
        run_composed(args.nodes, args.params, overrides)
        return 0
    stack = start_processes(args.nodes, args.params, overrides)
    stopping = []

    def on_signal(signum, frame):
        stopping.append(signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stopping and all(stack.alive().values()):
            time.sleep(0.2)
        dead = [n for n, ok in stack.alive().items() if not ok]
        if dead and not stopping:
            print(f'node(s) exited: {dead}; stopping the stack', file=sys.stderr)
    finally:
        stack.stop()
    return 0
