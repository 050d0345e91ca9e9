"""RAG monitor node: it yields the CPU to the policy path (SCHED_IDLE for its whole process or one thread, or nice) and
survives shutdown."""
import contextlib
import os
import time

import pytest
import rclpy
from rclpy.parameter import Parameter

from flow_rag_vla_ros.nodes.rag_monitor_node import RagMonitorNode

pytestmark = pytest.mark.ros


def thread_nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def started_monitor(context, **params):
    node = RagMonitorNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    deadline = time.monotonic() + 5
    while node.worker.native_id is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # the thread sets its priority first thing
    return node


@pytest.mark.parametrize('mode, priority, expected_policy, expected_increase', [
    ('parallel', 'idle', os.SCHED_IDLE, 0), ('parallel', 'idle_process', os.SCHED_IDLE, 0),
    ('parallel', 'nice', os.SCHED_OTHER, 3),
    ('parallel', 'normal', os.SCHED_OTHER, 0), ('sequential', 'idle', os.SCHED_OTHER, 0)])
def test_retrieval_thread_priority(mode, priority, expected_policy, expected_increase):
    context = rclpy.Context()
    rclpy.init(context=context)
    node = None
    try:
        node = started_monitor(context, mode=mode, worker_priority=priority, worker_nice=3)
        tid = node.worker.native_id
        assert os.sched_getscheduler(tid) == expected_policy
        assert thread_nice(tid) == thread_nice(0) + expected_increase
        # the caller's thread (the executor: callbacks) is untouched
        assert os.sched_getscheduler(0) == os.SCHED_OTHER
        assert thread_nice(0) == os.getpriority(os.PRIO_PROCESS, os.getpid())
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_unknown_worker_priority_is_refused():
    from flow_rag_vla_ros.nodes.rag_monitor_node import RagMonitorTopicsConfig
    with pytest.raises(ValueError, match='worker_priority'):
        RagMonitorTopicsConfig(worker_priority='realtime')


def test_retrieval_thread_ends_quietly_when_the_context_shuts_down_under_it(monkeypatch):
    """SIGTERM shuts the context down before close(): a verdict published then must not crash the thread."""
    import threading

    import numpy as np
    crashes = []
    monkeypatch.setattr(threading, 'excepthook', crashes.append)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = RagMonitorNode(context=context, parameter_overrides=[Parameter('mode', value='sequential')])
    try:
        node.language = np.full(384, 384 ** -0.5, np.float32)  # as if the instruction embedding had arrived
        rclpy.shutdown(context=context)  # what rclpy's SIGTERM handler does
        node.slot.put((1, 'camera', np.zeros((72, 112), np.float32), np.zeros(7, np.float32),
                       np.zeros((8, 4), np.float32), time.monotonic_ns()))
        node.worker.join(timeout=5.0)
        assert not node.worker.is_alive() and crashes == []
    finally:
        node.close()
        node.destroy_node()


def monitor_process_policies(tmp_path, mode: str) -> list[int]:
    """Start the monitor as its own process (its main(), as `ros2 launch` does); the policy of each thread."""
    from flow_rag_vla_ros.tools.testing import node_process
    with node_process('flow_rag_vla_ros.nodes.rag_monitor_node', {'mode': mode}, tmp_path / f'{mode}.log',
                      b'rag monitor ready') as proc:
        time.sleep(0.5)  # main() lowers the process right after the node is built
        return [os.sched_getscheduler(int(tid)) for tid in os.listdir(f'/proc/{proc.pid}/task')]


def test_parallel_monitor_process_runs_every_thread_idle(tmp_path):
    """Default worker_priority idle_process: callbacks and DDS threads too, not only the retrieval thread."""
    policies = monitor_process_policies(tmp_path, 'parallel')
    assert len(policies) > 2 and set(policies) == {os.SCHED_IDLE}
    # sequential: the merger waits for the monitor, so nothing in it is lowered
    assert os.SCHED_IDLE not in monitor_process_policies(tmp_path, 'sequential')


def test_executed_commands_are_remembered_and_a_bad_one_is_rejected():
    """What the merger sent (/robot/command) is what the monitor stores as the chunk that worked."""
    import numpy as np

    from flow_rag_vla_ros.nodes.conversions import command_to_msg
    context = rclpy.Context()
    rclpy.init(context=context)
    node = RagMonitorNode(context=context)
    try:
        node.on_command(command_to_msg(np.array([0.1, -0.2, 0.3, -1.0]), 40_000_000, 'camera'))
        bad = command_to_msg(np.zeros(4), 80_000_000, 'camera')
        bad.velocity[0] = float('nan')
        node.on_command(bad)
        assert node.bad_inputs == 1
        (stamp, action), = node.monitor.episode_commands
        assert stamp == 40_000_000
        np.testing.assert_allclose(action, [0.1, -0.2, 0.3, -1.0], rtol=1e-6)
    finally:
        node.close()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


OPENMP_CHECK = """
import os, time
import numpy as np
import rclpy
from rclpy.parameter import Parameter
from flow_rag_vla_ros.core.memory.cases import FailureCase
from flow_rag_vla_ros.nodes.base import limit_native_threads
from flow_rag_vla_ros.nodes.rag_monitor_node import RagMonitorNode

rclpy.init()
limit_native_threads()  # as main() does: caps the main thread only
node = RagMonitorNode(parameter_overrides=[Parameter('worker_priority', value='normal')])
rng = np.random.default_rng(0)
for _ in range(50):  # a flat search over this many cases runs an OpenMP parallel region
    e = rng.standard_normal(node.monitor.memory_config.dim).astype(np.float32)
    node.monitor.memory.add(FailureCase(embedding=e / np.linalg.norm(e), failed_chunk=np.zeros((8, 4), np.float32),
                                        failure_type='timeout'))
node.language = np.full(384, 384 ** -0.5, np.float32)
time.sleep(0.2)
threads = len(os.listdir('/proc/self/task'))
for stamp in (1, 2, 3):
    node.slot.put((stamp, 'camera', rng.random((72, 112), np.float32), np.zeros(7, np.float32), None, 0))
    deadline = time.monotonic() + 5
    while stamp not in node.monitor._trace and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stamp in node.monitor._trace, 'the retrieval thread did not assess the frame'
new = len(os.listdir('/proc/self/task')) - threads
node.close()
node.destroy_node()
rclpy.shutdown()
raise SystemExit(f'{new} threads started by the retrieval thread' if new else 0)
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason='OpenMP starts no worker threads on one core')
def test_retrieval_thread_starts_no_openmp_workers():
    """The retrieval thread caps faiss's OpenMP team at one thread for itself: a new thread does not inherit the
    main thread's cap, and the idle worker of a two-thread team busy-waits after every search, taking a core from
    the vision and policy nodes (13 % of a core in the monitor at 20 Hz, 2-core VM). Run without OMP_NUM_THREADS,
    which the test session sets and which would hide it, as on a robot."""
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != 'OMP_NUM_THREADS'}
    result = subprocess.run([sys.executable, '-c', OPENMP_CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize('mode', ['parallel', 'sequential'])
def test_verdicts_the_merger_waits_for_are_always_sent(mode):
    """Parallel: after an alarm the merger holds the next chunk for that frame's verdict (alarm_wait_ms), so a frame
    with nothing to report gets an all-clear then, and only then. Sequential: every frame's chunk waits, so every
    frame gets a verdict."""
    import numpy as np

    from flow_rag_vla_ros.core.memory.corrections import Correction
    from flow_rag_vla_ros.nodes.conversions import msg_to_correction
    context = rclpy.Context()
    rclpy.init(context=context)
    node = RagMonitorNode(context=context, parameter_overrides=[Parameter('mode', value=mode)])
    sent = []
    node.correction_pub.publish = lambda msg: sent.append(msg_to_correction(msg))
    alarm = Correction(chunk=np.full((8, 4), 0.2, np.float32), confidence=0.9, failure_type='timeout', case_id=3,
                       similarity=0.99, source='transform')
    chunk = np.full((8, 4), 0.1, np.float32) if mode == 'sequential' else None
    try:
        for stamp, proposal in [(1, None), (2, alarm), (3, None), (4, None)]:
            node._publish_verdict(stamp, 'camera', chunk, proposal)
        verdicts = [(c.source_stamp_ns, c.is_alarm) for c in sent]
        if mode == 'parallel':
            assert verdicts == [(2, True), (3, False)]  # the all-clear ends the alarm; frame 4 needs nothing
            assert sent[1].confidence == 0.0 and sent[1].failure_type == '' and sent[1].chunk.shape == (8, 4)
        else:
            assert verdicts == [(1, False), (2, True), (3, False), (4, False)]
    finally:
        node.close()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_stamp_watch_wakes_a_waiter_on_a_new_enough_stamp_and_times_out_otherwise():
    import threading

    from flow_rag_vla_ros.nodes.rag_monitor_node import StampWatch
    watch = StampWatch()
    assert not watch.wait_for(5, 0.01)
    threading.Timer(0.05, watch.seen, args=(7,)).start()  # a newer frame's command also covers frame 5
    assert watch.wait_for(5, 5.0)
    watch.seen(3)  # an older stamp does not move it back
    assert watch.newest == 7 and watch.wait_for(6, 0.0) and not watch.wait_for(8, 0.0)


def test_unknown_retrieve_after_is_refused():
    from flow_rag_vla_ros.nodes.rag_monitor_node import RagMonitorTopicsConfig
    with pytest.raises(ValueError, match='retrieve_after'):
        RagMonitorTopicsConfig(retrieve_after='chunk')
    with pytest.raises(ValueError, match='defer_limit_ms'):
        RagMonitorTopicsConfig(defer_limit_ms=-1.0)


def wait_assessed(node, stamp: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while stamp not in node.monitor._trace and time.monotonic() < deadline:
        time.sleep(0.005)
    return stamp in node.monitor._trace


@contextlib.contextmanager
def monitor_with_instruction(**params):
    """A started monitor node that has its instruction embedding (so frames get assessed); closed afterwards
    (close() is idempotent, so a test may close it itself)."""
    import numpy as np
    context = rclpy.Context()
    rclpy.init(context=context)
    node = started_monitor(context, **params)
    node.language = np.full(384, 384 ** -0.5, np.float32)
    try:
        yield node
    finally:
        node.close()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def put_frame(node, stamp: int) -> None:
    """What on_features hands the retrieval thread for a frame."""
    import numpy as np

    from flow_rag_vla_ros.nodes.base import now_ns
    node.slot.put((stamp, 'camera', np.zeros((72, 112), np.float32), np.zeros(7, np.float32), None, now_ns()))


def test_retrieve_after_command_waits_for_the_frames_command_unless_alarmed_or_past_the_limit():
    """retrieve_after command: a frame is assessed once the merger's command for it (or a newer frame) is seen;
    at once after an alarm, when the merger holds the chunk for this verdict; and at defer_limit_ms at the latest."""
    import numpy as np

    from flow_rag_vla_ros.nodes.conversions import command_to_msg
    with monitor_with_instruction(retrieve_after='command', defer_limit_ms=60_000.0) as node:
        put_frame(node, 100)
        assert not wait_assessed(node, 100, 0.3)  # no command yet
        node.on_command(command_to_msg(np.zeros(4), 200, 'camera'))  # frame 200's command: the merger is past 100
        assert wait_assessed(node, 100, 5.0)
        node.alarmed = True  # the last verdict was an alarm: no waiting
        put_frame(node, 300)
        assert wait_assessed(node, 300, 5.0)
        node.alarmed = False
        node.topics.defer_limit_ms = 200.0
        started = time.monotonic()
        put_frame(node, 400)
        assert wait_assessed(node, 400, 5.0) and time.monotonic() - started >= 0.15


@pytest.mark.parametrize('mode, retrieve_after', [('parallel', 'features'), ('sequential', 'command')])
def test_retrieval_starts_at_once_with_retrieve_after_features_or_in_sequential_mode(mode, retrieve_after):
    """Sequential: the merger holds every chunk for its verdict, so waiting for the command would only delay it."""
    with monitor_with_instruction(mode=mode, retrieve_after=retrieve_after, defer_limit_ms=60_000.0) as node:
        put_frame(node, 100)
        assert wait_assessed(node, 100, 5.0)


def test_close_ends_a_retrieval_waiting_for_its_command():
    with monitor_with_instruction(retrieve_after='command', defer_limit_ms=60_000.0) as node:
        put_frame(node, 100)
        time.sleep(0.2)  # the worker is waiting for frame 100's command now
        started = time.monotonic()
        node.close()
        assert not node.worker.is_alive() and time.monotonic() - started < 1.5
