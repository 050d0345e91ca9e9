"""The RAG monitor's retrieval thread yields the CPU to the policy path in parallel mode (per-thread nice)."""
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
