"""RAG monitor node: the retrieval thread yields the CPU to the policy path (per-thread nice) and survives shutdown."""
import os
import time

import pytest
import rclpy
from rclpy.parameter import Parameter

from flow_rag_vla_ros.nodes.rag_monitor_node import RagMonitorNode

pytestmark = pytest.mark.ros


def thread_nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


@pytest.mark.parametrize('mode, expected_increase', [('parallel', 3), ('sequential', 0)])
def test_retrieval_thread_nice(mode, expected_increase):
    context = rclpy.Context()
    rclpy.init(context=context)
    node = None
    try:
        node = RagMonitorNode(context=context, parameter_overrides=[
            Parameter('mode', value=mode), Parameter('worker_nice', value=3)])
        deadline = time.monotonic() + 5
        while node.worker.native_id is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # the thread lowers its priority first thing
        assert thread_nice(node.worker.native_id) == thread_nice(0) + expected_increase
        assert thread_nice(0) == os.getpriority(os.PRIO_PROCESS, os.getpid())  # the caller's thread is untouched
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown(context=context)


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
