"""Flow policy node: visual tokens + proprio + instruction embedding -> action chunk (JointTrajectory, same stamp)."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32MultiArray
from trajectory_msgs.msg import JointTrajectory

from flow_rag_vla_ros.core.config import param, require
from flow_rag_vla_ros.core.spec import ACTION_DIM, DEFAULT_CHECKPOINT
from flow_rag_vla_ros.nodes import qos
from flow_rag_vla_ros.nodes.base import StackNode, now_ns, run_node
from flow_rag_vla_ros.nodes.conversions import chunk_to_msg, msg_to_features, msg_to_proprio, stamp_to_ns
from flow_rag_vla_ros.nodes.params import declare_config
from flow_rag_vla_ros.nodes.runtime import frame_noise, resolve_checkpoint


@dataclass
class FlowPolicyNodeConfig:
    checkpoint: str = param(DEFAULT_CHECKPOINT, 'checkpoint directory (relative paths: package share dir)')
    backend: str = param('onnxruntime', 'torch | torch-cudagraph | onnxruntime | onnxruntime-int8 | tensorrt')
    device: str = param('cpu', 'cpu | cuda')
    threads: int = param(1, 'intra-op threads')
    noise_seed: int = param(0, 'seed mixed with a hash of the input: same input -> same chunk')
    baseline: str = param('', "'' = the flow policy; 'zero' = publish zero chunks (rag_only ablation)")
    proprio_max_age_s: float = param(0.1, 'use the latest proprio if none has the frame stamp and it is this fresh')
    features_topic: str = param('/vla/features', 'input visual tokens')
    ee_state_topic: str = param('/robot/ee_state', 'input proprio (JointState)')
    embedding_topic: str = param('/vla/instruction_embedding', 'input instruction embedding')
    chunk_topic: str = param('/vla/action_chunk', 'output action chunk (JointTrajectory)')

    def __post_init__(self):
        require(self.threads >= 1 and self.proprio_max_age_s >= 0, 'threads >= 1, proprio_max_age_s >= 0')
        require(self.baseline in ('', 'zero'), f"baseline {self.baseline!r} must be '' or 'zero'")


class FlowPolicyNode(StackNode):
    def __init__(self, **kwargs):
        super().__init__('flow_policy', **kwargs)
        self.config = cfg = declare_config(self, FlowPolicyNodeConfig)
        from flow_rag_vla_ros.core.backends import load_policy_backend
        ckpt = resolve_checkpoint(cfg.checkpoint)
        self.backend = load_policy_backend(cfg.backend, ckpt, device=cfg.device, threads=cfg.threads,
                                           parts=('policy',))
        self.proprio: OrderedDict[int, np.ndarray] = OrderedDict()  # stamp_ns -> (7,), most recent last
        self.language: np.ndarray | None = None
        self.chunk_pub = self.create_publisher(JointTrajectory, cfg.chunk_topic, qos.RELIABLE)
        self.create_subscription(JointState, cfg.ee_state_topic, self.on_ee_state, qos.SENSOR)
        self.create_subscription(Float32MultiArray, cfg.embedding_topic, self.on_embedding, qos.LATCHED)
        self.create_subscription(Image, cfg.features_topic, self.on_features, qos.SENSOR)
        self.get_logger().info(f'flow policy ready: backend={self.backend.name} checkpoint={ckpt}')

    def on_ee_state(self, msg: JointState) -> None:
        proprio = self.parse('joint state', msg_to_proprio, msg)
        if proprio is None:
            return
        self.proprio[stamp_to_ns(msg.header.stamp)] = proprio
        while len(self.proprio) > 32:
            self.proprio.popitem(last=False)

    def on_embedding(self, msg: Float32MultiArray) -> None:
        embedding = np.asarray(msg.data, dtype=np.float32)
        if embedding.size == 0 or not np.isfinite(embedding).all():
            self.reject('instruction embedding', ValueError(f'{embedding.size} values, finite: '
                                                            f'{bool(np.isfinite(embedding).all())}'))
            return
        self.language = embedding

    def _proprio_for(self, stamp: int) -> np.ndarray | None:
        if stamp in self.proprio:
            return self.proprio[stamp]
        if self.proprio:
            latest_stamp = next(reversed(self.proprio))
            if abs(stamp - latest_stamp) / 1e9 <= self.config.proprio_max_age_s:
                return self.proprio[latest_stamp]
        return None

    def on_features(self, msg: Image) -> None:
        received = now_ns()
        stamp = stamp_to_ns(msg.header.stamp)
        tokens = self.parse('features', msg_to_features, msg)
        if tokens is None:
            return
        proprio = self._proprio_for(stamp)
        if proprio is None or self.language is None:
            self.get_logger().warning(f'frame {stamp}: waiting for '
                                      f'{"proprio" if proprio is None else "instruction embedding"}',
                                      throttle_duration_sec=2.0)
            return
        shape = (self.backend.horizon, ACTION_DIM)
        if self.config.baseline == 'zero':
            chunk = np.zeros(shape, np.float32)
        else:
            chunk = self.backend.act(tokens, proprio, self.language, frame_noise(self.config.noise_seed, tokens, shape))
        # (H, 4)
        self.publish_output(self.chunk_pub, chunk_to_msg(chunk, stamp, msg.header.frame_id), 'chunk', stamp, received)


def main(args=None):
    run_node(FlowPolicyNode, args)


if __name__ == '__main__':
    main()
