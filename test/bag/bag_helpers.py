"""Synthetic stack traffic for the bag tests: messages with known stamps and contents, a bag writer
that needs no ROS graph, and a fake "stack" whose command is a pure function of the frame."""
from __future__ import annotations

import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float32MultiArray, MultiArrayDimension, MultiArrayLayout, String
from trajectory_msgs.msg import JointTrajectory

from flow_rag_vla_ros.bag.recorder import STACK_TOPICS, TYPESTORE
from flow_rag_vla_ros.nodes import qos
from flow_rag_vla_ros.nodes.base import LATENCY_TOPIC
from flow_rag_vla_ros.nodes.conversions import (EPISODE_STATUS, RESTART_ACK_TOPIC, CorrectionMsg, array_to_image,
                                                chunk_to_msg, command_to_msg, correction_to_msg, diagnostic,
                                                image_to_array, make_header, msg_to_proprio, proprio_to_msg,
                                                restart_ack, stamp_to_ns, starts_episode)

INSTRUCTION = 'reach the red target'
T0 = 1_700_000_000_000_000_000  # first frame stamp (ns)
DT = 40_000_000


def frame_image(i: int, alarm: bool = False) -> np.ndarray:
    """(16, 16, 3) uint8 frame i; pixel [0, 0, 1] == 1 asks the fake monitor for an alarm."""
    image = np.full((16, 16, 3), (7 * i) % 200 + 10, np.uint8)
    image[0, 0, 1] = 1 if alarm else 0
    return image


def proprio(i: int) -> np.ndarray:
    return np.array([0.01 * i, -0.02 * i, 0.1, 0.0, 0.0, 0.0, 0.0], np.float32)


def policy(image: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The fake stack's command: a pure function of the inputs (like the seeded flow policy)."""
    return np.array([image.mean() / 255.0, p[0], p[1], -float(image[1, 1, 0]) / 255.0], np.float32)


def chunk_for(action: np.ndarray) -> np.ndarray:
    return np.stack([action * (1.0 - 0.1 * k) for k in range(8)]).astype(np.float32)  # (8, 4)


def camera_info(stamp: int) -> CameraInfo:
    return CameraInfo(header=make_header(stamp, 'scene_camera'), height=16, width=16, distortion_model='plumb_bob',
                      d=[0.0] * 5, k=[20.0, 0, 8, 0, 20.0, 8, 0, 0, 1], r=[1.0, 0, 0, 0, 1, 0, 0, 0, 1],
                      p=[20.0, 0, 8, 0, 0, 20.0, 8, 0, 0, 0, 1, 0])


def event(stamp: int, kind: str, episode: int, **values) -> DiagnosticArray:
    return diagnostic(stamp, 'scene_camera', EPISODE_STATUS, kind, {'episode': episode, 'task': 'reach', **values},
                      hardware_id='sim')


def correction(stamp: int) -> DiagnosticArray:
    return correction_to_msg(CorrectionMsg(stamp, np.zeros((8, 4), np.float32), 0.9, 'misalignment', 0.95, 3),
                             'scene_camera')


def embedding(text: str) -> Float32MultiArray:
    layout = MultiArrayLayout(dim=[MultiArrayDimension(label=text, size=4, stride=4)])
    return Float32MultiArray(layout=layout, data=[0.1, 0.2, 0.3, 0.4])


def write_bag(path, items, storage: str = 'mcap', types: dict | None = None) -> None:
    """items: (topic, log time ns, rclpy message), written in order with the rosbags writer."""
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    types = {t: v[0] for t, v in STACK_TOPICS.items()} | (types or {})
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        connections = {}
        for topic, log_ns, msg in items:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, types[topic], typestore=TYPESTORE)
            writer.write(connections[topic], log_ns, serialize_message(msg))


def sim_like_run(frames_per_episode=(6, 5), perturb_episode: int = 1, recorded_alarm_frames=(),
                 replay_alarm_frames=(), image_topic: str = '/camera/image_raw'):
    """A recorded lockstep sim run: instruction, a warm-up frame (sent twice), episodes delimited by start
    events, episode 0 ending in a failure and the last in a success. Recorded commands equal the fake
    policy except +0.1 on dim 2 in `perturb_episode`. Frame indices count from the warm-up frame (0).
    Returns (items in log-time order, frame stamps)."""
    items, stamps = [], []
    log = [T0 - 10_000_000]

    def add(topic, msg, gap_ns=1_000_000):
        log[0] += gap_ns
        items.append((topic, log[0], msg))

    def add_frame(episode: int, resend: bool = False):
        index = len(stamps)
        stamp = T0 + index * DT
        image = frame_image(index, alarm=index in replay_alarm_frames)
        p = proprio(index)
        for _ in range(2 if resend else 1):
            add('/robot/ee_state', proprio_to_msg(p, stamp))
            add('/camera/camera_info', camera_info(stamp))
            add(image_topic, array_to_image(image, stamp, 'scene_camera'))
        action = policy(image, p) + (np.array([0, 0, 0.1, 0], np.float32) if episode == perturb_episode else 0)
        add('/vla/action_chunk', chunk_to_msg(chunk_for(policy(image, p)), stamp, 'scene_camera'), 5_000_000)
        if index in recorded_alarm_frames:
            add('/vla/correction', correction(stamp))
        add('/robot/command', command_to_msg(action, stamp, 'scene_camera'))
        log[0] += DT - 10_000_000  # the next frame comes one control period later
        stamps.append(stamp)

    add('/task/instruction', String(data=INSTRUCTION))
    add_frame(-1, resend=True)  # warm-up
    for ep, n in enumerate(frames_per_episode):
        add('/task/events', event(stamps[-1], 'start', ep, seed=ep, step=0))
        for _ in range(n):
            add_frame(ep)
        failed = ep == 0
        add('/task/events', event(stamps[-1], 'failure' if failed else 'success', ep,
                                  failure_type='misalignment' if failed else '', step=n))
    return items, stamps


class FakeStack:
    """A stand-in for the stack nodes: for every frame answers chunk + command (+ an alarm when the frame
    asks for one) as pure functions of the frame, and the monitor's 'correction' latency record (a monitor
    publishes one per assessed frame, alarm or not), echoes the instruction embedding, and acknowledges episode
    'start' events like the action merger (unless ack_restarts=False). Own context + thread."""

    def __init__(self, ack_restarts: bool = True):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = n = rclpy.create_node('fake_stack', context=self.context)
        self.states: dict[int, np.ndarray] = {}
        self.events: list[str] = []
        self.command_pub = n.create_publisher(JointState, '/robot/command', qos.RELIABLE)
        self.chunk_pub = n.create_publisher(JointTrajectory, '/vla/action_chunk', qos.RELIABLE)
        self.correction_pub = n.create_publisher(DiagnosticArray, '/vla/correction', qos.RELIABLE)
        self.latency_pub = n.create_publisher(DiagnosticArray, LATENCY_TOPIC, qos.EVENTS)
        self.embedding_pub = n.create_publisher(Float32MultiArray, '/vla/instruction_embedding', qos.LATCHED)
        n.create_subscription(JointState, '/robot/ee_state', self.on_state, qos.SENSOR)
        n.create_subscription(Image, '/camera/image_raw', self.on_image, qos.SENSOR)
        n.create_subscription(String, '/task/instruction', lambda m: self.embedding_pub.publish(embedding(m.data)),
                              qos.LATCHED)
        self.ack_restarts = ack_restarts
        self.ack_pub = n.create_publisher(DiagnosticArray, RESTART_ACK_TOPIC, qos.EVENTS)
        n.create_subscription(DiagnosticArray, '/task/events', self.on_event, qos.EVENTS)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(n)
        self.running = True
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        while self.running:
            self.executor.spin_once(timeout_sec=0.05)

    def on_event(self, msg):
        self.events.append(msg.status[0].message)
        if self.ack_restarts and starts_episode(msg):
            self.ack_pub.publish(restart_ack(stamp_to_ns(msg.header.stamp), msg.header.frame_id))

    def on_state(self, msg):
        self.states[stamp_to_ns(msg.header.stamp)] = msg_to_proprio(msg)

    def on_image(self, msg):
        stamp = stamp_to_ns(msg.header.stamp)
        if stamp not in self.states:
            return  # its proprio has not arrived yet: the replay re-sends the frame
        image = image_to_array(msg)
        action = policy(image, self.states[stamp])
        if image[0, 0, 1] == 1:
            self.correction_pub.publish(correction(stamp))
        self.latency_pub.publish(diagnostic(stamp, '', 'latency/correction', 'correction',
                                            {'stage': 'correction', 'stage_ms': '0.1', 'since_frame_ms': '0.2'}))
        self.chunk_pub.publish(chunk_to_msg(chunk_for(action), stamp, msg.header.frame_id))
        self.command_pub.publish(command_to_msg(action, stamp, msg.header.frame_id))

    def stop(self):
        self.running = False
        self.thread.join()
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def wait_until(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
