"""Record the stack's topics to a rosbag2 (MCAP by default, sqlite3 optional) with the `rosbags` writer.

Subscriptions are raw (serialized CDR bytes go straight into the bag: no deserialise/serialise cost) and
match each topic's QoS from docs/DESIGN.md, except that best-effort sensor topics get a deep queue so a
burst is not squashed to the latest message. Callbacks only enqueue; one writer thread writes, so a slow
disk never blocks the executor. Log time = receive time (system clock, ns). Message definitions are
embedded (typestore ROS2_KILTED), so `ros2 bag info`, Foxglove and the `mcap` tools can open the bag.
"""
from __future__ import annotations

import contextlib
import importlib
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from flow_rag_vla_ros.core.config import param, require
from flow_rag_vla_ros.nodes import qos

# topic -> (message type, QoS the stack publishes it with); the table in docs/DESIGN.md
STACK_TOPICS: dict[str, tuple[str, QoSProfile]] = {
    '/camera/image_raw': ('sensor_msgs/msg/Image', qos.SENSOR),
    '/camera/camera_info': ('sensor_msgs/msg/CameraInfo', qos.SENSOR),
    '/robot/ee_state': ('sensor_msgs/msg/JointState', qos.SENSOR),
    '/task/instruction': ('std_msgs/msg/String', qos.LATCHED),
    '/task/events': ('diagnostic_msgs/msg/DiagnosticArray', qos.EVENTS),
    '/vla/features': ('sensor_msgs/msg/Image', qos.SENSOR),
    '/vla/instruction_embedding': ('std_msgs/msg/Float32MultiArray', qos.LATCHED),
    '/vla/action_chunk': ('trajectory_msgs/msg/JointTrajectory', qos.RELIABLE),
    '/vla/correction': ('diagnostic_msgs/msg/DiagnosticArray', qos.RELIABLE),
    '/robot/command': ('sensor_msgs/msg/JointState', qos.RELIABLE),
    '/vla/latency': ('diagnostic_msgs/msg/DiagnosticArray', qos.EVENTS),
    '/diagnostics': ('diagnostic_msgs/msg/DiagnosticArray', qos.RELIABLE),
}
STORAGES = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
TYPESTORE = get_typestore(Stores.ROS2_KILTED)


@dataclass
class RecorderConfig:
    topics: list[str] = param(list(STACK_TOPICS), 'topics to record: a stack topic, or /name:pkg/msg/Type')
    storage: str = param('mcap', 'rosbag2 storage plugin: mcap | sqlite3')
    queue_depth: int = param(100, 'subscription queue depth (best-effort sensor topics included)')

    def __post_init__(self):
        require(self.storage in STORAGES, f'storage {self.storage!r} is not one of {sorted(STORAGES)}')
        require(self.queue_depth >= 1, f'queue_depth must be >= 1, got {self.queue_depth}')
        require(len(self.topics) > 0, 'no topics to record')
        for spec in self.topics:
            topic_spec(spec)  # raises a clear error for a bad entry


def topic_spec(spec: str) -> tuple[str, str, QoSProfile]:
    """'/topic' (a stack topic) or '/topic:pkg/msg/Type' -> (topic, type, publisher QoS)."""
    topic, _, msgtype = spec.partition(':')
    if not topic.startswith('/'):
        raise ValueError(f'topic {topic!r} must be absolute (start with /)')
    if not msgtype:
        if topic not in STACK_TOPICS:
            raise ValueError(f'{topic} is not a stack topic; give its type as {topic}:pkg/msg/Type')
        return topic, *STACK_TOPICS[topic]
    if msgtype not in TYPESTORE.fielddefs:
        raise ValueError(f'{topic}: message type {msgtype!r} is unknown (expected pkg/msg/Type of a standard '
                         f'ROS 2 Kilted message)')
    return topic, msgtype, qos.RELIABLE


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class."""
    pkg, kind, name = msgtype.split('/')
    try:
        return getattr(importlib.import_module(f'{pkg}.{kind}'), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f'message type {msgtype!r} is not importable in this environment: {e}') from e


def subscription_qos(published: QoSProfile, depth: int) -> QoSProfile:
    """The publisher's reliability/durability with a deep queue (a best-effort subscription still matches)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=published.reliability,
                      durability=published.durability)


def bag_qos(profile: QoSProfile) -> Qos:
    """rclpy QoS -> the rosbag2 'offered_qos_profiles' entry (what `ros2 bag play` re-offers)."""
    default = QosTime(0, 0)  # deadline / lifespan / lease: 0 = the RMW default (infinite)
    best_effort = profile.reliability == ReliabilityPolicy.BEST_EFFORT
    latched = profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
    return Qos(QosHistory.KEEP_LAST, profile.depth,
               QosReliability.BEST_EFFORT if best_effort else QosReliability.RELIABLE,
               QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
               default, default, QosLiveliness.AUTOMATIC, default, False)


class BagRecorder(Node):
    """Subscribes raw to the configured topics and writes every message to a new rosbag2 at `path`."""

    def __init__(self, path: str | Path, config: RecorderConfig | None = None, **node_kwargs):
        super().__init__('bag_recorder', **node_kwargs)
        self.config = cfg = config or RecorderConfig()
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f'{self.path} exists; rosbag2 bags are written to a new directory')
        self.counts: dict[str, int] = {}  # written to the bag
        self.received: dict[str, int] = {}  # arrived (counted in the executor's thread, before the write)
        self.subscriptions_by_topic = {}
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        specs = [topic_spec(spec) for spec in cfg.topics]
        # sqlite3 objects may only be used by the thread that made them: the writer thread owns the bag
        ready = threading.Event()
        self._thread = threading.Thread(target=self._write_loop, args=(specs, ready), name='bag_writer',
                                        daemon=True)
        self._thread.start()
        ready.wait()
        if self.error is not None:
            raise self.error
        for topic, msgtype, published in specs:
            self.counts[topic] = self.received[topic] = 0
            self.subscriptions_by_topic[topic] = self.create_subscription(
                message_class(msgtype), topic, self._enqueue_for(topic),
                subscription_qos(published, cfg.queue_depth), raw=True)
        self._closed = False

    def publisher_counts(self) -> dict[str, int]:
        """Matched publishers per topic: a best-effort message sent before its publisher matched is lost."""
        return {t: s.get_publisher_count() for t, s in self.subscriptions_by_topic.items()}

    def matched(self, required: tuple[str, ...] = ()) -> bool:
        """True when every publisher on the graph is matched, and each recorded topic in `required` has one
        that has delivered a message here.

        Discovery takes a moment (more on a loaded machine): a volatile message published before the
        recorder matched its publisher never reaches the bag, so a run waits for this before it starts.
        Matching is per side: this reader can list a writer before that writer has learnt of this reader,
        and what the writer publishes meanwhile goes to its other readers only. A message received is the
        proof that the writer's side is matched too, hence `received` for the required topics.
        """
        for topic, subscription in self.subscriptions_by_topic.items():
            n = subscription.get_publisher_count()
            if n < self.count_publishers(topic) or (topic in required and (n == 0 or not self.received[topic])):
                return False
        return True

    def _enqueue_for(self, topic: str):
        def enqueue(data: bytes) -> None:
            self.received[topic] += 1
            if self.error is None:
                self.queue.put((topic, time.time_ns(), data))
        return enqueue

    def _write_loop(self, specs, ready: threading.Event) -> None:
        try:
            writer = Writer(self.path, version=9, storage_plugin=STORAGES[self.config.storage])
            writer.open()
            connections = {topic: writer.add_connection(topic, msgtype, typestore=TYPESTORE,
                                                        offered_qos_profiles=[bag_qos(published)])
                           for topic, msgtype, published in specs}
        except BaseException as e:  # reported by __init__ in the caller's thread
            self.error = e
            return
        finally:
            ready.set()
        try:
            while (item := self.queue.get()) is not None:
                topic, log_time_ns, data = item
                writer.write(connections[topic], log_time_ns, data)
                self.counts[topic] += 1
        except BaseException as e:  # disk full, ...: reported by close()
            self.error = e
        finally:
            writer.close()

    def close(self) -> None:
        """Write what is queued, then finish the bag (metadata.yaml, MCAP summary). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise RuntimeError(f'{self.path}: writing the bag failed: {self.error!r}') from self.error


@contextlib.contextmanager
def recording(path: str | Path, topics: list[str] | None = None, storage: str = 'mcap',
              linger_s: float = 0.3) -> Iterator[BagRecorder]:
    """Record in a background thread (own rclpy Context) for the duration of the `with` block.

    On exit the recorder keeps spinning `linger_s` so messages still in flight land in the bag, then stops
    and closes the bag.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    config = RecorderConfig(topics=list(topics) if topics else list(STACK_TOPICS), storage=storage)
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        recorder = BagRecorder(path, config, context=context)
    except BaseException:
        rclpy.try_shutdown(context=context)
        raise
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(recorder)
    stop_at: list[float] = []

    def spin() -> None:
        while not stop_at or time.monotonic() < stop_at[0]:
            executor.spin_once(timeout_sec=0.05)

    thread = threading.Thread(target=spin, name='bag_recorder_spin', daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        stop_at.append(time.monotonic() + linger_s)
        thread.join()
        executor.shutdown()
        recorder.destroy_node()
        rclpy.try_shutdown(context=context)
        recorder.close()
