"""A stand-in for the RAG monitor's message traffic alone: one process, every thread SCHED_IDLE like the monitor's
(`worker_priority: idle_process`), subscribed to each topic the monitor subscribes to with the same QoS, doing
nothing with what arrives. Run beside a `flow_only` replay and alternate with runs without it: what the DDS
fan-out and message delivery to one more idle reader cost the policy path, without the monitor's retrieval.

    .venv/bin/python scripts/listener_neighbour.py &   # stop it with Ctrl-C / SIGINT
"""
from __future__ import annotations

import os

import rclpy
from rclpy.executors import ExternalShutdownException

from flow_rag_vla_ros.nodes.base import process_thread_ids, spin
from flow_rag_vla_ros.nodes.rag_monitor_node import SUBSCRIPTIONS, RagMonitorTopicsConfig


def main() -> None:
    rclpy.init()
    node = rclpy.create_node('listener_neighbour')
    topics = RagMonitorTopicsConfig()
    for msg_type, field, profile, _ in SUBSCRIPTIONS:  # the monitor's inputs, its callbacks left out
        node.create_subscription(msg_type, getattr(topics, field), lambda msg: None, profile)
    for tid in process_thread_ids():
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    try:
        spin(node)  # the nodes' own loop on rclpy's EventsExecutor, as the monitor runs
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
