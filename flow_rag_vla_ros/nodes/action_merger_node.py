"""Action merger node: flow chunk (+ a timely correction) -> safe, smooth motor command; watchdog hold."""
from __future__ import annotations

from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from flow_rag_vla_ros.core.config import param
from flow_rag_vla_ros.core.latency import LatencyStats
from flow_rag_vla_ros.core.merger import ActionMerger, MergerConfig
from flow_rag_vla_ros.core.spec import INSTRUCTIONS
from flow_rag_vla_ros.nodes import qos
from flow_rag_vla_ros.nodes.base import StackNode, now_ns, run_node
from flow_rag_vla_ros.nodes.conversions import (RESTART_ACK_TOPIC, command_to_msg, diagnostic, msg_to_chunk,
                                                msg_to_correction, restart_ack, stamp_to_ns, starts_episode)
from flow_rag_vla_ros.nodes.params import declare_config


TASK_OF_INSTRUCTION = {text: task for task, text in INSTRUCTIONS.items()}


@dataclass
class MergerTopicsConfig:
    chunk_topic: str = param('/vla/action_chunk', 'input flow chunks (JointTrajectory)')
    correction_topic: str = param('/vla/correction', 'input RAG corrections (DiagnosticArray)')
    command_topic: str = param('/robot/command', 'output command (JointState, velocity = action)')
    diagnostics_topic: str = param('/diagnostics', 'watchdog / health diagnostics')
    events_topic: str = param('/task/events', "episode events: a 'start' restarts the merger (drops the "
                                              "previous episode's queue); empty = never")
    restart_ack_topic: str = param(RESTART_ACK_TOPIC, "acknowledges each 'start' event once the merger "
                                   'has restarted (same stamp): a lockstep sim or replay sends the next '
                                   "episode's first frame only after it, because DDS does not order messages "
                                   'across topics; empty = no acknowledgements')
    instruction_topic: str = param('/task/instruction', "task instruction (std_msgs/String, latched): its task "
                                                        "picks the splice mode (splice_mode_by_task); empty = never")
    frame_id: str = param('scene_camera', 'frame_id for commands produced by the timer (hold)')


class ActionMergerNode(StackNode):
    def __init__(self, **kwargs):
        super().__init__('action_merger', **kwargs)
        self.merger_config = declare_config(self, MergerConfig)
        self.topics = topics = declare_config(self, MergerTopicsConfig)
        self.merger = ActionMerger(self.merger_config)
        self.e2e = LatencyStats()
        self.frame_ids: dict[int, str] = {}
        self.last_state = 'ok'
        self.deadline_timer = None
        self.command_pub = self.create_publisher(JointState, topics.command_topic, qos.RELIABLE)
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.diagnostics_topic, qos.RELIABLE)
        self.create_subscription(JointTrajectory, topics.chunk_topic, self.on_chunk, qos.RELIABLE)
        self.create_subscription(DiagnosticArray, topics.correction_topic, self.on_correction, qos.RELIABLE)
        self.restart_ack_pub = None
        if topics.events_topic:
            self.create_subscription(DiagnosticArray, topics.events_topic, self.on_event, qos.EVENTS)
            if topics.restart_ack_topic:
                self.restart_ack_pub = self.create_publisher(DiagnosticArray, topics.restart_ack_topic, qos.EVENTS)
        if topics.instruction_topic:
            self.create_subscription(String, topics.instruction_topic, self.on_instruction, qos.LATCHED)
        self.timer = self.create_timer(self.merger_config.control_period_s, self.on_timer)
        # fires exactly stale_timeout_s after the last chunk (reset by every chunk), so the hold does not
        # wait for the next control tick
        self.watchdog = self.create_timer(self.merger_config.stale_timeout_s, self.on_timer)

    def _publish(self, command, received_ns: int, path: str) -> None:
        """path: chunk (a fresh chunk's command), correction (sequential wait ended), tick (queue / hold)."""
        if not self.context.ok():  # a signal shut the context down and the executor still ran a due callback
            return
        frame_id = self.frame_ids.get(command.source_stamp_ns, self.topics.frame_id)
        self.command_pub.publish(command_to_msg(command.action, command.source_stamp_ns, frame_id))
        published = now_ns()
        record = command.record
        self.publish_latency('command', command.source_stamp_ns, received_ns, published,
                             e2e_ms=f'{(published - command.source_stamp_ns) / 1e6:.4f}', state=command.state, path=path,
                             used_correction=getattr(record, 'used_correction', False),
                             correction_reason=getattr(record, 'reason', ''))
        if command.state != self.last_state:
            level = DiagnosticStatus.OK if command.state == 'ok' else DiagnosticStatus.WARN
            self.diag_pub.publish(diagnostic(command.source_stamp_ns, frame_id, 'action_merger/watchdog',
                                             command.state, {'state': command.state}, level=level,
                                             hardware_id=self.get_name()))
            self.get_logger().warning(f'command state: {self.last_state} -> {command.state}')
            self.last_state = command.state

    def on_chunk(self, msg: JointTrajectory) -> None:
        received = now_ns()
        stamp = stamp_to_ns(msg.header.stamp)
        chunk = self.parse('chunk', msg_to_chunk, msg)
        if chunk is None:
            return
        self.watchdog.reset()
        self.frame_ids[stamp] = msg.header.frame_id
        if len(self.frame_ids) > 64:
            self.frame_ids.pop(next(iter(self.frame_ids)))
        command = self.merger.on_chunk(stamp, chunk, received)
        if command is not None:
            self._publish(command, received, 'chunk')
            self.e2e.add('e2e', (now_ns() - stamp) / 1e6)
        else:
            self._arm_deadline()

    def _arm_deadline(self) -> None:
        """Sequential pipeline: release a held-back chunk exactly at its deadline, not at the next tick."""
        deadline = self.merger.pending_deadline_ns()
        if deadline is None:
            return
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
            self.destroy_timer(self.deadline_timer)
        delay = max(0.0, (deadline - now_ns()) / 1e9)
        self.deadline_timer = self.create_timer(delay, self._on_deadline)

    def _on_deadline(self) -> None:
        self.deadline_timer.cancel()
        t = now_ns()
        command = self.merger.tick(t)
        if command is not None:
            self._publish(command, t, 'deadline')

    def on_correction(self, msg: DiagnosticArray) -> None:
        received = now_ns()
        correction = self.parse('correction', msg_to_correction, msg, errors=(ValueError, KeyError))
        if correction is None:
            return
        command = self.merger.on_correction(correction.source_stamp_ns, correction, received)
        if command is not None:  # sequential pipeline: the command waited for this correction
            self._publish(command, received, 'correction')

    def on_instruction(self, msg: String) -> None:
        task = TASK_OF_INSTRUCTION.get(msg.data.strip())
        before = self.merger.executor.mode
        mode = self.merger.set_task(task)
        if mode != before:
            self.get_logger().info(f'instruction {msg.data!r} (task {task}): chunks spliced with {mode!r}')

    def on_event(self, msg: DiagnosticArray) -> None:
        if starts_episode(msg):
            stamp = stamp_to_ns(msg.header.stamp)
            self.merger.restart(stamp)
            self.get_logger().info(f'episode start after frame {stamp}: merger restarted')
            if self.restart_ack_pub is not None:
                self.restart_ack_pub.publish(restart_ack(stamp, msg.header.frame_id, self.get_name()))

    def on_timer(self) -> None:
        t = now_ns()
        command = self.merger.tick(t)
        if command is not None:
            self._publish(command, t, 'tick')

    def close(self) -> None:
        summary = self.e2e.summary().get('e2e')
        if summary and summary.get('n'):
            self.get_logger().info(f"e2e latency ms: p50 {summary['p50']:.2f} p99 {summary['p99']:.2f} "
                                   f"(n={summary['n']})")


def main(args=None):
    run_node(ActionMergerNode, args)


if __name__ == '__main__':
    main()
