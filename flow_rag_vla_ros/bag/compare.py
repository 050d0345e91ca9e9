"""What a recorded run contains (frames, commands, chunks, alarms, episode events) and how a replay of it
compares: action MSE per dimension / episode / overall, monitor alarms vs recorded failures, latency.

rclpy-free apart from message objects read by `BagReader`; the metrics are pure functions of arrays.

Alarm scoring: an alarm is a `/vla/correction` message with a failure type (not an all-clear verdict); it
belongs to the frame whose stamp it carries.
A recorded failure (a `/task/events` status with message in `failure_events`, by default `failure` and
`timeout`) belongs to the frame whose stamp it carries (the sim stamps it with the last frame of the
episode). An alarm on frame i is a true positive when some failure of the same episode sits on frame f
with f - N < i <= f (the N frames ending at the failure frame, N = `window_frames`); precision =
true-positive alarms / alarms, recall = failures with at least one alarm in their window / failures.
Several alarms on one frame count once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flow_rag_vla_ros.bag.reader import BagError, BagReader
from flow_rag_vla_ros.nodes.conversions import (episode_events, msg_to_chunk, msg_to_command, msg_to_correction,
                                                stamp_to_ns)

IMAGE, INFO, STATE = '/camera/image_raw', '/camera/camera_info', '/robot/ee_state'
INSTRUCTION, EVENTS = '/task/instruction', '/task/events'
COMMAND, CHUNK, CORRECTION = '/robot/command', '/vla/action_chunk', '/vla/correction'
INPUT_TOPICS = (IMAGE, INFO, STATE, INSTRUCTION, EVENTS)
OUTPUT_TOPICS = (COMMAND, CHUNK, CORRECTION)


@dataclass
class Frame:
    stamp_ns: int
    log_time_ns: int
    image: object  # sensor_msgs/Image (rgb8)
    state: object | None = None  # sensor_msgs/JointState with the same stamp
    info: object | None = None  # sensor_msgs/CameraInfo with the same stamp
    episode: int = -1  # -1: before the first episode start (warm-up) or a bag without events


@dataclass
class Event:
    stamp_ns: int
    log_time_ns: int
    kind: str  # start / success / failure / timeout
    values: dict
    msg: object


@dataclass
class Recording:
    """Inputs to replay (in recorded order) and the outputs to compare against."""
    # (kind, log time ns, payload): kind 'instruction' | 'event' | 'state' (message) or 'frame' (a Frame)
    timeline: list = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    commands: dict[int, np.ndarray] = field(default_factory=dict)  # frame stamp -> first command (4,)
    command_log_ns: dict[int, int] = field(default_factory=dict)
    chunks: dict[int, np.ndarray] = field(default_factory=dict)  # frame stamp -> first chunk (H, 4)
    alarms: set[int] = field(default_factory=set)  # frame stamps the recorded monitor raised an alarm on


def parse_remaps(items: list[str] | None) -> dict[str, str]:
    """['/camera/image_raw:=/my/cam'] -> {stack topic: bag topic}."""
    out = {}
    for item in items or []:
        stack_topic, sep, bag_topic = item.partition(':=')
        if not sep or not stack_topic.startswith('/') or not bag_topic.startswith('/'):
            raise ValueError(f'remap {item!r} is not STACK_TOPIC:=BAG_TOPIC (absolute names)')
        if stack_topic not in INPUT_TOPICS + OUTPUT_TOPICS:
            raise ValueError(f'remap {item!r}: {stack_topic} is not a replayed or compared topic '
                             f'({", ".join(INPUT_TOPICS + OUTPUT_TOPICS)})')
        out[stack_topic] = bag_topic
    return out


def _as_rgb8(image):
    """bgr8 frames from a robot camera become rgb8 (what the stack takes); other encodings pass unchanged."""
    if image.encoding != 'bgr8':
        return image
    from flow_rag_vla_ros.nodes.conversions import array_to_image
    rows = np.frombuffer(bytes(image.data), np.uint8).reshape(image.height, image.step)
    bgr = rows[:, :image.width * 3].reshape(image.height, image.width, 3)
    return array_to_image(bgr[..., ::-1], stamp_to_ns(image.header.stamp), image.header.frame_id)


def load_recording(path: str | Path, remaps: dict[str, str] | None = None) -> Recording:
    """Read the inputs and recorded outputs of a bag; `remaps` maps stack topics to the bag's names."""
    remaps = remaps or {}
    bag_to_stack = {remaps.get(t, t): t for t in INPUT_TOPICS + OUTPUT_TOPICS}
    rec = Recording()
    states: dict[int, object] = {}
    infos: dict[int, object] = {}
    frames: dict[int, Frame] = {}
    with BagReader(path) as reader:
        image_topic = remaps.get(IMAGE, IMAGE)
        if image_topic not in reader.topics or reader.topics[image_topic].count == 0:
            raise BagError(f'{path}: no camera frames on {image_topic} (topics: {sorted(reader.topics)}); '
                           f'remap with --remap {IMAGE}:=/your/camera/topic')
        wanted = [t for t in bag_to_stack if t in reader.topics]
        for m in reader.messages(wanted):
            topic, stamp = bag_to_stack[m.topic], m.stamp_ns
            try:
                if topic == IMAGE and stamp not in frames:  # the sim re-sends a frame (same stamp): keep one
                    frames[stamp] = Frame(stamp, m.log_time_ns, _as_rgb8(m.msg))
                    rec.timeline.append(('frame', m.log_time_ns, frames[stamp]))
                elif topic == STATE and stamp not in states:
                    states[stamp] = m.msg
                    rec.timeline.append(('state', m.log_time_ns, m.msg))
                elif topic == INFO:
                    infos.setdefault(stamp, m.msg)
                elif topic == INSTRUCTION:
                    rec.timeline.append(('instruction', m.log_time_ns, m.msg))
                elif topic == EVENTS:
                    for kind, kv in episode_events(m.msg):
                        rec.events.append(Event(stamp, m.log_time_ns, kind, kv, m.msg))
                        rec.timeline.append(('event', m.log_time_ns, m.msg))
                elif topic == COMMAND and stamp not in rec.commands:
                    rec.commands[stamp] = msg_to_command(m.msg)
                    rec.command_log_ns[stamp] = m.log_time_ns
                elif topic == CHUNK and stamp not in rec.chunks:
                    rec.chunks[stamp] = msg_to_chunk(m.msg)
                elif topic == CORRECTION:
                    correction = msg_to_correction(m.msg)
                    if correction.is_alarm:  # not a sequential-mode all-clear verdict
                        rec.alarms.add(correction.source_stamp_ns)
            except (ValueError, KeyError) as e:
                raise BagError(f'{path}: bad {m.msgtype} on {m.topic} at log time {m.log_time_ns}: {e}') from e
    rec.frames = sorted(frames.values(), key=lambda f: f.stamp_ns)
    for frame in rec.frames:
        frame.state, frame.info = states.get(frame.stamp_ns), infos.get(frame.stamp_ns)
    # a state with its frame's stamp travels with the frame; others (a robot driver's own rate) stay in the timeline
    rec.timeline = [item for item in rec.timeline
                    if not (item[0] == 'state' and stamp_to_ns(item[2].header.stamp) in frames)]
    rec.timeline = _events_before_later_frames(rec.timeline)
    # the instruction is latched state: the first one applies from the start even when the recorder
    # received it (transient local, after discovery) just after the first frame
    first = next((i for i, item in enumerate(rec.timeline) if item[0] == 'instruction'), None)
    if first is not None:
        rec.timeline.insert(0, rec.timeline.pop(first))
    assign_episodes(rec.frames, rec.events)
    return rec


def _events_before_later_frames(timeline: list[tuple]) -> list[tuple]:
    """An episode event is stamped with the last frame before it (an episode start: the previous episode's
    last frame), and the stack acts on it before the next frame's chunk arrives (the merger restarts).
    The recorder's receive order of the two topics is a race, so an event received after a later-stamped
    frame is moved back to just before that frame; nothing else moves. Frames are in stamp order (one
    camera topic), so the search walks back only over the frames stamped after the event."""
    out: list[tuple] = []
    for item in timeline:
        at = len(out)
        if item[0] == 'event':
            stamp = stamp_to_ns(item[2].header.stamp)
            for i in range(len(out) - 1, -1, -1):
                kind, _, payload = out[i]
                if kind == 'frame':
                    if payload.stamp_ns <= stamp:
                        break
                    at = i
        out.insert(at, item)
    return out


def assign_episodes(frames: list[Frame], events: list[Event]) -> None:
    """A frame belongs to the last 'start' event stamped before it (the sim stamps a start with the
    previous frame's stamp)."""
    start_events = [e for e in events if e.kind == 'start']
    starts = sorted((e.stamp_ns, int(e.values.get('episode', n))) for n, e in enumerate(start_events))
    stamps = np.array([s for s, _ in starts], dtype=np.int64)
    for frame in frames:
        k = int(np.searchsorted(stamps, frame.stamp_ns, side='left')) - 1
        frame.episode = starts[k][1] if k >= 0 else -1


def action_errors(produced: dict[int, np.ndarray], recorded: dict[int, np.ndarray], stamps: list[int]) -> dict:
    """MSE per dimension and overall (+ max abs error) over `stamps` present in both."""
    matched = [s for s in stamps if s in produced and s in recorded]
    if not matched:
        return {'n': 0, 'mse': None, 'mse_per_dim': None, 'max_abs_error': None}
    a = np.stack([np.asarray(produced[s], np.float64).reshape(-1) for s in matched])  # (n, D)
    b = np.stack([np.asarray(recorded[s], np.float64).reshape(-1) for s in matched])
    if a.shape != b.shape:
        raise ValueError(f'produced actions {a.shape} and recorded actions {b.shape} differ in shape')
    d2 = (a - b) ** 2
    return {'n': len(matched), 'mse': float(d2.mean()), 'mse_per_dim': d2.mean(axis=0).tolist(),
            'max_abs_error': float(np.sqrt(d2.max()))}


def chunk_errors(produced: dict[int, np.ndarray], recorded: dict[int, np.ndarray], stamps: list[int]) -> dict:
    """Chunks compared as (H*4,) vectors; the per-dimension MSE is folded back to the 4 action dims."""
    out = action_errors(produced, recorded, stamps)
    if out['n']:
        per = np.asarray(out['mse_per_dim']).reshape(-1, 4).mean(axis=0)
        out['mse_per_dim'] = per.tolist()
    return out


def alarm_scores(frames: list[Frame], alarm_stamps: set[int], events: list[Event], window_frames: int,
                 failure_events=('failure', 'timeout')) -> dict:
    """Precision / recall of alarms against recorded failures (see the module docstring)."""
    if window_frames < 1:
        raise ValueError(f'window_frames must be >= 1, got {window_frames}')
    index = {f.stamp_ns: i for i, f in enumerate(frames)}
    stamps = np.array([f.stamp_ns for f in frames], dtype=np.int64)
    alarms = sorted(index[s] for s in alarm_stamps if s in index)
    failures = []
    for e in events:
        if e.kind in failure_events and len(frames):
            f = index.get(e.stamp_ns, int(np.searchsorted(stamps, e.stamp_ns, side='right')) - 1)
            if f >= 0:
                failures.append(f)

    def covers(f: int, i: int) -> bool:
        return f - window_frames < i <= f and frames[i].episode == frames[f].episode

    true_pos = [i for i in alarms if any(covers(f, i) for f in failures)]
    detected = [f for f in failures if any(covers(f, i) for i in alarms)]
    return {'alarms': len(alarms), 'failures': len(failures), 'true_positive_alarms': len(true_pos),
            'false_alarms': len(alarms) - len(true_pos), 'detected_failures': len(detected),
            'precision': len(true_pos) / len(alarms) if alarms else None,
            'recall': len(detected) / len(failures) if failures else None, 'window_frames': window_frames}
