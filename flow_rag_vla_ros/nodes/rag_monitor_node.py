"""RAG failure monitor node: retrieves past failures in similar states and proposes corrections.

Never on the policy path: callbacks only hand the latest input to a worker thread (a latest-only slot,
so a slow retrieval drops stale frames instead of queueing them); the worker embeds, searches the FAISS
memory and publishes a correction stamped with the source frame (with retrieve_after command, only once
the merger has sent that frame's command, so it does not compete with the policy for the CPU). Episode
events teach the memory: a failure stores the states (and executed chunks) that led to it; a success in a
state that matched a stored failure stores the chunk that worked as that case's correction and raises its
confidence.
"""
from __future__ import annotations

import os
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32MultiArray
from trajectory_msgs.msg import JointTrajectory

from flow_rag_vla_ros.core.config import param, require
from flow_rag_vla_ros.core.memory import MemoryConfig
from flow_rag_vla_ros.core.memory.corrections import CorrectionConfig
from flow_rag_vla_ros.core.merger import is_alarm
from flow_rag_vla_ros.core.monitor import MonitorConfig, RagMonitor, verdict_to_send
from flow_rag_vla_ros.nodes import qos
from flow_rag_vla_ros.nodes.base import StackNode, limit_native_threads, now_ns, process_thread_ids, run_node
from flow_rag_vla_ros.nodes.conversions import (CorrectionMsg, correction_to_msg, episode_events, msg_to_chunk,
                                                msg_to_command, msg_to_features, msg_to_proprio, stamp_to_ns)
from flow_rag_vla_ros.nodes.params import declare_config


WORKER_PRIORITIES = ('idle_process', 'idle', 'nice', 'normal')
RETRIEVE_AFTER = ('features', 'command')


@dataclass
class RagMonitorTopicsConfig:
    mode: str = param('parallel', 'parallel: retrieve on features (beside the policy) | sequential: after the chunk')
    features_topic: str = param('/vla/features', 'input visual tokens')
    ee_state_topic: str = param('/robot/ee_state', 'input proprio')
    embedding_topic: str = param('/vla/instruction_embedding', 'input instruction embedding')
    chunk_topic: str = param('/vla/action_chunk', 'input flow chunks')
    command_topic: str = param('/robot/command', 'executed commands (to remember what was done)')
    events_topic: str = param('/task/events', 'episode events: start / success / failure / timeout')
    correction_topic: str = param('/vla/correction', 'output risk + correction (DiagnosticArray)')
    worker_priority: str = param('idle_process', "parallel mode, Linux scheduling: idle_process (run as its own "
                                                 "process: every thread of it, callbacks and DDS included, under "
                                                 "SCHED_IDLE; composed: as idle) | idle (the retrieval thread "
                                                 "only) | nice (retrieval thread at nice + worker_nice) | normal")
    worker_nice: int = param(5, "worker_priority 'nice': raise the retrieval thread's nice value by this much")
    # command: on the AMD VM, 5 replays alternated with features kept parallel p99 within 1 ms of flow_only in 5
    # (mean gap -0.03 ms) against 2 (+1.51), and the node graph's RAG revisits did no worse (README "Latency")
    retrieve_after: str = param('command', "parallel mode, when a frame's retrieval starts: features (as they "
                                            'arrive, beside the policy) | command (once the merger has sent a '
                                            'command for that frame or a newer one, or defer_limit_ms after the '
                                            "features arrived; at once while the monitor's last verdict was an "
                                            'alarm, as the merger then holds the chunk for this verdict)')
    defer_limit_ms: float = param(12.0, 'retrieve_after command: start the retrieval no later than this after '
                                        "the frame's features arrived")

    def __post_init__(self):
        require(self.mode in ('parallel', 'sequential'), f'mode {self.mode!r} must be parallel or sequential')
        require(self.retrieve_after in RETRIEVE_AFTER,
                f'retrieve_after {self.retrieve_after!r} must be one of {RETRIEVE_AFTER}')
        require(self.defer_limit_ms >= 0, f'defer_limit_ms must be >= 0, got {self.defer_limit_ms}')
        require(0 <= self.worker_nice <= 19, f'worker_nice must be in [0, 19], got {self.worker_nice}')
        require(self.worker_priority in WORKER_PRIORITIES,
                f'worker_priority {self.worker_priority!r} must be one of {WORKER_PRIORITIES}')


class LatestSlot:
    """A one-element mailbox: put() replaces what is there; get() blocks until something arrives."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item = None
        self.dropped = 0

    def put(self, item) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify()

    def get(self, timeout: float):
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item


class StampWatch:
    """The newest stamp seen on a topic; wait_for() blocks until it reaches a given stamp (or a timeout, or close)."""

    def __init__(self):
        self._cond = threading.Condition()
        self.newest = -1
        self.closed = False

    def seen(self, stamp: int) -> None:
        with self._cond:
            if stamp > self.newest:
                self.newest = stamp
                self._cond.notify_all()

    def wait_for(self, stamp: int, timeout_s: float) -> bool:
        """True once a stamp >= `stamp` was seen, False when `timeout_s` ran out (or close() came) first."""
        with self._cond:
            self._cond.wait_for(lambda: self.newest >= stamp or self.closed, max(timeout_s, 0.0))
            return self.newest >= stamp

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


# (message type, RagMonitorTopicsConfig topic field, QoS, callback): every input of the node
# (scripts/listener_neighbour.py subscribes to the same, without the work)
SUBSCRIPTIONS = ((JointState, 'ee_state_topic', qos.SENSOR, 'on_ee_state'),
                 (Float32MultiArray, 'embedding_topic', qos.LATCHED, 'on_embedding'),
                 (Image, 'features_topic', qos.SENSOR, 'on_features'),
                 (JointTrajectory, 'chunk_topic', qos.RELIABLE, 'on_chunk'),
                 (JointState, 'command_topic', qos.RELIABLE, 'on_command'),
                 (DiagnosticArray, 'events_topic', qos.EVENTS, 'on_event'))


class RagMonitorNode(StackNode):
    def __init__(self, **kwargs):
        super().__init__('rag_monitor', **kwargs)
        self.topics = t = declare_config(self, RagMonitorTopicsConfig)
        self.monitor = RagMonitor(declare_config(self, MonitorConfig), declare_config(self, MemoryConfig),
                                  declare_config(self, CorrectionConfig), logger=self.get_logger())
        self.proprio: deque[tuple[int, np.ndarray]] = deque(maxlen=32)
        self.language: np.ndarray | None = None
        self.slot = LatestSlot()
        self.commands = StampWatch()  # source frames the merger has sent a command for (retrieve_after command)
        self.pending_tokens: dict[int, np.ndarray] = {}  # sequential mode: features waiting for their chunk
        self.correction_pub = self.create_publisher(DiagnosticArray, t.correction_topic, qos.RELIABLE)
        for msg_type, topic_field, profile, callback in SUBSCRIPTIONS:
            self.create_subscription(msg_type, getattr(t, topic_field), getattr(self, callback), profile)
        self.alarmed = False  # the last verdict sent was an alarm (retrieval thread only)
        self.running = True
        self.worker = threading.Thread(target=self._work, name='rag_retrieval', daemon=True)
        self.worker.start()
        self.get_logger().info(f'rag monitor ready: mode={t.mode}, {len(self.monitor.memory)} cases in memory')

    # -- inputs (cheap: never block the executor) ---------------------------------------------------
    def on_ee_state(self, msg: JointState) -> None:
        proprio = self.parse('joint state', msg_to_proprio, msg)
        if proprio is not None:
            self.proprio.append((stamp_to_ns(msg.header.stamp), proprio))

    def on_embedding(self, msg: Float32MultiArray) -> None:
        self.language = np.asarray(msg.data, dtype=np.float32)

    def _proprio_for(self, stamp: int) -> np.ndarray | None:
        for s, p in reversed(self.proprio):
            if s <= stamp:
                return p
        return None

    def on_features(self, msg: Image) -> None:
        received = now_ns()
        tokens = self.parse('features', msg_to_features, msg)
        if tokens is None:
            return
        stamp = stamp_to_ns(msg.header.stamp)
        proprio = self._proprio_for(stamp)
        if proprio is None or self.language is None:
            return
        if self.topics.mode == 'parallel':
            self.slot.put((stamp, msg.header.frame_id, tokens, proprio, None, received))
        else:
            self.pending_tokens[stamp] = (tokens, proprio)
            while len(self.pending_tokens) > 16:
                self.pending_tokens.pop(next(iter(self.pending_tokens)))

    def on_chunk(self, msg: JointTrajectory) -> None:
        received = now_ns()
        stamp = stamp_to_ns(msg.header.stamp)
        chunk = self.parse('chunk', msg_to_chunk, msg)
        if chunk is None:
            return
        self.monitor.observe_chunk(stamp, chunk)
        if self.topics.mode == 'sequential' and stamp in self.pending_tokens:
            tokens, proprio = self.pending_tokens.pop(stamp)
            self.slot.put((stamp, msg.header.frame_id, tokens, proprio, chunk, received))

    def on_command(self, msg: JointState) -> None:
        action = self.parse('command', msg_to_command, msg)
        if action is not None:
            stamp = stamp_to_ns(msg.header.stamp)
            self.monitor.observe_command(stamp, action)
            self.commands.seen(stamp)

    def on_event(self, msg: DiagnosticArray) -> None:
        for kind, kv in episode_events(msg):
            self.monitor.on_event(kind, kv.get('failure_type', ''), kv)

    # -- retrieval worker ---------------------------------------------------------------------------
    def _lower_worker_priority(self) -> None:
        """Scheduling is per thread on Linux: only this retrieval thread yields, not the node's callbacks.
        Sequential mode keeps full priority: there the policy path waits for the monitor.
        Why idle by default: a niced thread still gets a share of a busy core. 2-core VM, 3 alternated bench
        runs each (docs/results/worker_priority_ab.json): parallel p99 above flow_only +1.9..+2.7 ms idle,
        +2.8..+19.1 ms at nice +5."""
        priority = self.topics.worker_priority if self.topics.mode == 'parallel' else 'normal'
        tid = threading.get_native_id()
        try:
            if priority in ('idle', 'idle_process'):  # idle_process: the rest of the process in main()
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            elif priority == 'nice' and self.topics.worker_nice:
                os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + self.topics.worker_nice)
        except (OSError, AttributeError) as e:  # AttributeError: no sched_setscheduler off Linux
            self.get_logger().warning(f'could not lower the retrieval thread priority ({priority}): {e!r}')

    def _work(self) -> None:
        # OpenMP's thread count is per thread: main()'s cap does not reach this one, and without its own cap every
        # faiss search here ran a two-thread team whose idle worker busy-waited between frames (13 % of a core)
        limit_native_threads()
        self._lower_worker_priority()
        while self.running:
            item = self.slot.get(timeout=0.2)
            if item is None:
                continue
            stamp, frame_id, tokens, proprio, chunk, received = item
            if self._defers_retrieval():
                self.commands.wait_for(stamp, self.topics.defer_limit_ms / 1e3 - (now_ns() - received) / 1e9)
                if not self.running:
                    return
            try:
                proposal = self.monitor.assess(stamp, tokens, proprio, self.language, chunk)
            except Exception as e:  # a retrieval bug must not kill the monitor thread
                self.get_logger().error(f'retrieval failed for frame {stamp}: {e!r}')
                continue
            try:
                self._publish_verdict(stamp, frame_id, chunk, proposal)
                self.publish_latency('correction', stamp, received, now_ns(),
                                     hit=proposal is not None, dropped=self.slot.dropped)
            except Exception as e:
                if not (self.running and self.context.ok()):
                    return  # SIGTERM shut the context down under us: nothing left to publish to
                self.get_logger().error(f'publishing the verdict for frame {stamp} failed: {e!r}')

    def _defers_retrieval(self) -> bool:
        """retrieve_after command: keep this frame's retrieval out of the policy's window (it competed with the
        policy for the 2-core VM's CPU: README "Latency"), unless the merger waits for the verdict: in sequential
        mode, and in parallel mode after an alarm (alarm_wait_ms)."""
        return self.topics.mode == 'parallel' and self.topics.retrieve_after == 'command' and not self.alarmed

    def _publish_verdict(self, stamp: int, frame_id: str, chunk, proposal) -> None:
        # no proposal: an all-clear where the merger may hold this frame's chunk for our verdict, rather than let it
        # wait out its deadline (confidence 0 is never blended in)
        verdict = verdict_to_send(self.topics.mode, proposal, chunk, self.alarmed, self.monitor.memory_config.horizon)
        if verdict is not None:
            self.correction_pub.publish(correction_to_msg(CorrectionMsg(
                stamp, verdict.chunk, verdict.confidence, verdict.failure_type,
                verdict.similarity, verdict.case_id, verdict.source), frame_id))
        self.alarmed = is_alarm(proposal)

    def close(self) -> None:
        self.running = False
        self.commands.close()  # a retrieval deferred to its command must not hold the join up
        self.worker.join(timeout=2.0)
        self.monitor.close()


def idle_whole_process(node: RagMonitorNode) -> None:
    """worker_priority idle_process, as its own process (this main: `ros2 launch`, the launcher's process
    layout): every thread - executor, DDS, retrieval - runs SCHED_IDLE, so the monitor only ever takes a
    core the policy path leaves free. Threads started later inherit it from the thread that starts them.
    Not done in a composed process, where those threads also serve the policy path.
    Why: with only the retrieval thread idle, the callbacks that receive and unpack every frame's features
    still competed with the vision and policy nodes (2-core VM, 3 alternated runs each, parallel p99 above
    flow_only: +1.9 / +8.9 / +6.2 ms idle, -0.4 / +3.9 / +1.3 ms idle_process; docs/results/LATENCY_HISTORY.md)."""
    if node.topics.mode != 'parallel' or node.topics.worker_priority != 'idle_process':
        return
    try:
        for tid in process_thread_ids():
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError) as e:  # no /proc or no sched_setscheduler: not Linux
        node.get_logger().warning(f'could not run the monitor process SCHED_IDLE: {e!r}')


def main(args=None):
    run_node(RagMonitorNode, args, on_created=idle_whole_process)


if __name__ == '__main__':
    main()
