"""What every stack node shares: config declaration, latency reports, bad-input handling, main()."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from flow_rag_vla_ros.core.config import param, require
from flow_rag_vla_ros.nodes import qos
from flow_rag_vla_ros.nodes.conversions import diagnostic
from flow_rag_vla_ros.nodes.params import declare_config

LATENCY_TOPIC = '/vla/latency'
EXECUTORS = ('single_threaded', 'events')


@dataclass
class NodeProcessConfig:
    # events: ~0.3 ms less CPU per callback (the SingleThreadedExecutor rebuilds its wait set in Python on every
    # wake-up); on the 2-core VM the monitor's verdict then beats the chunk (README "Latency", "RAG")
    executor: str = param('events', "executor when the node runs as its own process (main()): events "
                                    "(rclpy.experimental.EventsExecutor, C++) | single_threaded (rclpy's "
                                    "SingleThreadedExecutor). Composed nodes share the launcher's executor")

    cpu_affinity: list[int] = param([], 'CPUs every thread of the node may run on when it runs as its own process '
                                        '(main()); empty = any. E.g. the policy path on one core and the monitor '
                                        'on another. Composed nodes share the launcher process: not applied')

    def __post_init__(self):
        require(self.executor in EXECUTORS, f'executor {self.executor!r} must be one of {EXECUTORS}')
        require(all(c >= 0 for c in self.cpu_affinity), f'cpu_affinity {self.cpu_affinity} has a negative CPU')


def now_ns() -> int:
    """Stamps and latencies use the system clock (the ROS system clock): frame stamps come from it too."""
    return time.time_ns()


class StackNode(Node):
    """A node that reports per-frame stage latency on /vla/latency and survives bad input."""

    def __init__(self, name: str, **kwargs):
        super().__init__(name, **kwargs)
        self.process_config = declare_config(self, NodeProcessConfig)
        self._latency_pub = self.create_publisher(DiagnosticArray, LATENCY_TOPIC, qos.EVENTS)
        self.bad_inputs = 0

    def publish_output(self, publisher, msg, stage: str, stamp_ns: int, received_ns: int) -> None:
        """Publish a stage's output and report its latency with the time it was ready, taken before publish():
        a subscriber downstream may receive it (and answer) before publish() returns, and a stage must never look
        later than what it caused (the vision encoder's features, the policy's chunk)."""
        ready = now_ns()
        publisher.publish(msg)
        self.publish_latency(stage, stamp_ns, received_ns, ready)

    def publish_latency(self, stage: str, stamp_ns: int, received_ns: int, published_ns: int, **extra) -> None:
        """published_ns: when the output left the stage (`publish_output` takes it before publish())."""
        values = {'stage': stage, 'received_ns': received_ns, 'published_ns': published_ns,
                  'stage_ms': f'{(published_ns - received_ns) / 1e6:.4f}',
                  'since_frame_ms': f'{(published_ns - stamp_ns) / 1e6:.4f}', **extra}
        self._latency_pub.publish(diagnostic(stamp_ns, '', f'latency/{stage}', stage, values,
                                             hardware_id=self.get_name()))

    def reject(self, what: str, error: Exception) -> None:
        """One clear log line per bad message; the node keeps serving the next one."""
        self.bad_inputs += 1
        self.get_logger().error(f'dropped {what}: {error}')

    def parse(self, what: str, convert: Callable, *args, errors: tuple = (ValueError,)):
        """`convert(*args)` (a message -> array conversion), or None after `reject` when it raises `errors`."""
        try:
            return convert(*args)
        except errors as e:
            self.reject(what, e)
            return None


def limit_native_threads() -> dict[str, int]:
    """Cap the BLAS / OpenMP pools loaded so far (numpy's OpenBLAS, faiss's OpenMP) at OMP_NUM_THREADS, 1 if
    unset. Why: their idle workers busy-wait after every call; in the monitor that spinning took the cores
    the vision and policy nodes needed (2-core VM: parallel-pipeline p99 46 -> 26 ms). Batch-1 work gains
    nothing from a second thread. ONNX Runtime and torch have their own `threads` parameter.
    OpenMP's cap holds for the calling thread only (a new thread starts from OMP_NUM_THREADS or the core count):
    call this in every thread that runs faiss or BLAS work. Returns {library: threads} as set."""
    from threadpoolctl import threadpool_info, threadpool_limits
    threads = int(os.environ.get('OMP_NUM_THREADS') or 1)
    threadpool_limits(threads)
    return {info['internal_api']: info['num_threads'] for info in threadpool_info()}


def process_thread_ids() -> list[int]:
    """Linux ids of every thread of this process now (per-thread settings - affinity, scheduling policy - are
    applied to each; threads started later inherit them from the thread that starts them)."""
    return [int(task) for task in os.listdir('/proc/self/task')]


def pin_process(node: Node) -> None:
    """Every thread of this process (executor, DDS, workers) on the node's `cpu_affinity` CPUs; threads started
    later inherit it. A CPU this machine lacks gets a clear error, and the node runs unpinned."""
    cpus = set(getattr(getattr(node, 'process_config', None), 'cpu_affinity', None) or ())
    if not cpus:
        return
    try:
        for tid in process_thread_ids():
            os.sched_setaffinity(tid, cpus)
    except (OSError, AttributeError) as e:  # a CPU not present / not Linux
        node.get_logger().error(f'could not pin the process to CPUs {sorted(cpus)}: {e!r}; running unpinned')
        return
    node.get_logger().info(f'pinned to CPUs {sorted(cpus)}')


def spin(node: Node) -> None:
    """Spin `node` on the executor its `executor` parameter names until the context shuts down."""
    wanted = getattr(getattr(node, 'process_config', None), 'executor', 'events')
    if wanted == 'single_threaded':
        executor = SingleThreadedExecutor(context=node.context)
        executor.add_node(node)
        executor.spin()
        return
    from rclpy.experimental import EventsExecutor
    executor = EventsExecutor(context=node.context)
    executor.add_node(node)
    # not executor.spin(): in rclpy 9.1 it does not return on SIGINT / SIGTERM and holds the GIL while it waits
    # (the monitor's retrieval thread would stall). spin_once releases it, and a bounded wait lets the shutdown
    # that rclpy's signal handler starts end the loop
    while node.context.ok():
        try:
            executor.spin_once(timeout_sec=0.1)
        except Exception:
            if node.context.ok():
                raise
            # unlike the SingleThreadedExecutor it may still run a callback once a signal has shut the context
            # down, and that callback's publish() fails ('publisher's context is invalid'): the node is stopping
            break


def run_node(factory: Callable[[], Node], args=None, on_created: Callable[[Node], None] | None = None) -> None:
    """Standard main(): init, spin until Ctrl-C / SIGTERM, clean shutdown. `on_created(node)`: process-wide
    settings for a node running as its own process (not applied when nodes are composed)."""
    rclpy.init(args=args)
    node = None
    try:
        node = factory()  # loads the native libraries (faiss, onnxruntime, ...) the node uses
        node.get_logger().debug(f'native thread pools: {limit_native_threads()}')
        pin_process(node)
        if on_created is not None:
            on_created(node)
        spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            close = getattr(node, 'close', None)
            if close:
                close()
            node.destroy_node()
        rclpy.try_shutdown()
