"""Message <-> numpy conversion. Every function validates and raises ValueError with a clear message."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from flow_rag_vla_ros.core.merger import is_alarm
from flow_rag_vla_ros.core.spec import ACTION_DIM, ACTION_NAMES, CONTROL_DT, PROPRIO_DIM

# proprio (7,) = [ee_x, ee_y, ee_z, ee_vx, ee_vy, ee_vz, finger_width] travels as a JointState of a
# Cartesian "robot": positions of (ee_x, ee_y, ee_z, finger_width), velocities of the first three.
EE_STATE_NAMES = ('ee_x', 'ee_y', 'ee_z', 'finger_width')


def stamp_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def make_header(stamp_ns: int, frame_id: str) -> Header:
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


def image_to_array(msg: Image, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """rgb8 Image -> (H, W, 3) uint8 (a view on the message data when possible)."""
    if msg.encoding != 'rgb8':
        raise ValueError(f"image encoding '{msg.encoding}' is not supported (expected rgb8)")
    if msg.height == 0 or msg.width == 0 or len(msg.data) == 0:
        raise ValueError(f'empty image ({msg.width}x{msg.height}, {len(msg.data)} bytes)')
    if expected_hw is not None and (msg.height, msg.width) != tuple(expected_hw):
        raise ValueError(f'image is {msg.width}x{msg.height}, expected {expected_hw[1]}x{expected_hw[0]}')
    if msg.step < msg.width * 3 or len(msg.data) != msg.step * msg.height:
        raise ValueError(f'image data has {len(msg.data)} bytes, expected step*height = {msg.step}*{msg.height}')
    rows = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.step)  # (H, step)
    return rows[:, :msg.width * 3].reshape(msg.height, msg.width, 3)  # (H, W, 3)


def array_to_image(image: np.ndarray, stamp_ns: int, frame_id: str) -> Image:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'expected (H, W, 3) uint8, got {image.shape} {image.dtype}')
    h, w, _ = image.shape
    return Image(header=make_header(stamp_ns, frame_id), height=h, width=w, encoding='rgb8',
                 is_bigendian=0, step=w * 3, data=np.ascontiguousarray(image).tobytes())


def features_to_msg(tokens: np.ndarray, stamp_ns: int, frame_id: str) -> Image:
    """(N, C) float32 visual tokens as a 32FC1 Image (height = N tokens, width = C channels)."""
    tokens = np.ascontiguousarray(tokens, dtype=np.float32)
    n, c = tokens.shape
    return Image(header=make_header(stamp_ns, frame_id), height=n, width=c, encoding='32FC1',
                 is_bigendian=0, step=c * 4, data=tokens.tobytes())


def msg_to_features(msg: Image) -> np.ndarray:
    if msg.encoding != '32FC1':
        raise ValueError(f"features encoding '{msg.encoding}' is not 32FC1")
    if len(msg.data) != msg.height * msg.width * 4 or msg.height == 0:
        raise ValueError(f'features data has {len(msg.data)} bytes for {msg.height}x{msg.width} floats')
    tokens = np.frombuffer(bytes(msg.data), dtype=np.float32).reshape(msg.height, msg.width)  # (N, C)
    if not np.isfinite(tokens).all():
        raise ValueError('features contain NaN or inf')
    return tokens


def proprio_to_msg(proprio: np.ndarray, stamp_ns: int, frame_id: str = 'panda_link0') -> JointState:
    p = np.asarray(proprio, dtype=np.float64)
    return JointState(header=make_header(stamp_ns, frame_id), name=list(EE_STATE_NAMES),
                      position=[p[0], p[1], p[2], p[6]], velocity=[p[3], p[4], p[5], 0.0], effort=[])


def msg_to_proprio(msg: JointState) -> np.ndarray:
    """JointState -> proprio (7,) float32; names may come in any order (a robot driver's order)."""
    if len(msg.position) != len(msg.name) or (msg.velocity and len(msg.velocity) != len(msg.name)):
        raise ValueError(f'joint state has {len(msg.name)} names, {len(msg.position)} positions, '
                         f'{len(msg.velocity)} velocities')
    index = {n: i for i, n in enumerate(msg.name)}
    missing = [n for n in EE_STATE_NAMES if n not in index]
    if missing:
        raise ValueError(f'joint state lacks {missing} (has {list(msg.name)})')
    pos = [msg.position[index[n]] for n in EE_STATE_NAMES]
    vel = [msg.velocity[index[n]] for n in EE_STATE_NAMES[:3]] if msg.velocity else [0.0] * 3
    proprio = np.array([*pos[:3], *vel, pos[3]], dtype=np.float32)  # (7,)
    if not np.isfinite(proprio).all():
        raise ValueError(f'joint state contains NaN or inf: {proprio.tolist()}')
    assert proprio.shape == (PROPRIO_DIM,)
    return proprio


def chunk_to_msg(chunk: np.ndarray, stamp_ns: int, frame_id: str, dt: float = CONTROL_DT) -> JointTrajectory:
    """(H, 4) action chunk -> JointTrajectory; point i is for control step i after the frame."""
    points = []
    for i, action in enumerate(np.asarray(chunk, dtype=np.float64)):
        t = (i + 1) * dt  # ros2_control wants time_from_start > 0 on the first point
        points.append(JointTrajectoryPoint(positions=action.tolist(),
                                           time_from_start=Duration(sec=int(t), nanosec=int(round((t % 1) * 1e9)))))
    return JointTrajectory(header=make_header(stamp_ns, frame_id), joint_names=list(ACTION_NAMES), points=points)


def msg_to_chunk(msg: JointTrajectory) -> np.ndarray:
    if list(msg.joint_names) != list(ACTION_NAMES):
        raise ValueError(f'chunk joint names {list(msg.joint_names)} != {list(ACTION_NAMES)}')
    if not msg.points or any(len(p.positions) != ACTION_DIM for p in msg.points):
        raise ValueError('chunk is empty or has points of the wrong size')
    return np.array([p.positions for p in msg.points], dtype=np.float32)  # (H, 4)


def command_to_msg(action: np.ndarray, stamp_ns: int, frame_id: str) -> JointState:
    return JointState(header=make_header(stamp_ns, frame_id), name=list(ACTION_NAMES), position=[],
                      velocity=np.asarray(action, dtype=np.float64).tolist(), effort=[])


def msg_to_command(msg: JointState) -> np.ndarray:
    if list(msg.name) != list(ACTION_NAMES) or len(msg.velocity) != ACTION_DIM:
        raise ValueError(f'command names {list(msg.name)} / {len(msg.velocity)} values do not match {ACTION_NAMES}')
    action = np.asarray(msg.velocity, dtype=np.float32)
    if not np.isfinite(action).all():
        raise ValueError('command contains NaN or inf')
    return action


def key_values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


# DiagnosticStatus.name of the sim's episode events; the message is start / success / failure / timeout
EPISODE_STATUS = 'episode'
RESTART_ACK = 'action_merger/restart'  # status name of the merger's acknowledgement of an episode 'start'
RESTART_ACK_TOPIC = '/action_merger/restarted'


def episode_events(msg: DiagnosticArray) -> list[tuple[str, dict[str, str]]]:
    """(kind, key/values) of every episode event in a /task/events message; other statuses are ignored."""
    return [(s.message, key_values(s)) for s in msg.status if s.name == EPISODE_STATUS]


def starts_episode(msg: DiagnosticArray) -> bool:
    """Whether a /task/events message carries an episode 'start' (what restarts the merger)."""
    return any(kind == 'start' for kind, _ in episode_events(msg))


def restart_ack(stamp_ns: int, frame_id: str, hardware_id: str = '') -> DiagnosticArray:
    """The merger's acknowledgement of the 'start' event stamped `stamp_ns` (same stamp)."""
    return diagnostic(stamp_ns, frame_id, RESTART_ACK, 'restarted', {}, hardware_id=hardware_id)


def diagnostic(stamp_ns: int, frame_id: str, name: str, message: str, values: dict, level=DiagnosticStatus.OK,
               hardware_id: str = '') -> DiagnosticArray:
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                              values=[KeyValue(key=str(k), value=str(v)) for k, v in values.items()])
    return DiagnosticArray(header=make_header(stamp_ns, frame_id), status=[status])


@dataclass
class CorrectionMsg:
    """What travels on /vla/correction (a DiagnosticArray, so standard tools can show it)."""
    source_stamp_ns: int
    chunk: np.ndarray  # (H, 4)
    confidence: float
    failure_type: str
    similarity: float
    case_id: int
    source: str = ''  # 'stored' | 'transform' (the merger weighs them apart); '' from older senders

    @property
    def is_alarm(self) -> bool:
        """False for an all-clear verdict (no failure type, confidence 0), which only ends a wait for the verdict."""
        return is_alarm(self)


def correction_to_msg(c: CorrectionMsg, frame_id: str) -> DiagnosticArray:
    return diagnostic(c.source_stamp_ns, frame_id, 'rag_correction', c.failure_type, {
        'confidence': repr(float(c.confidence)), 'similarity': repr(float(c.similarity)),
        'case_id': int(c.case_id), 'source': c.source, 'horizon': c.chunk.shape[0],
        'chunk': ' '.join(repr(float(x)) for x in np.asarray(c.chunk).reshape(-1))})


def msg_to_correction(msg: DiagnosticArray) -> CorrectionMsg:
    if not msg.status or msg.status[0].name != 'rag_correction':
        raise ValueError('not a rag_correction diagnostic')
    kv = key_values(msg.status[0])
    flat = np.array([float(x) for x in kv['chunk'].split()], dtype=np.float32)
    horizon = int(kv['horizon'])
    if flat.size != horizon * ACTION_DIM or not np.isfinite(flat).all():
        raise ValueError(f'correction chunk has {flat.size} finite values, expected {horizon}x{ACTION_DIM}')
    return CorrectionMsg(stamp_to_ns(msg.header.stamp), flat.reshape(horizon, ACTION_DIM),  # (H, 4)
                         float(kv['confidence']), msg.status[0].message, float(kv['similarity']),
                         int(kv['case_id']), kv.get('source', ''))
