"""Vision encoder node: camera Image -> visual tokens (32FC1 Image, same stamp) + the instruction embedding."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, MultiArrayDimension, MultiArrayLayout, String

from flow_rag_vla_ros.core.config import param, require
from flow_rag_vla_ros.core.spec import DEFAULT_CHECKPOINT
from flow_rag_vla_ros.nodes import qos
from flow_rag_vla_ros.nodes.base import StackNode, now_ns, run_node
from flow_rag_vla_ros.nodes.conversions import features_to_msg, image_to_array, stamp_to_ns
from flow_rag_vla_ros.nodes.params import declare_config
from flow_rag_vla_ros.nodes.runtime import resolve_checkpoint


@dataclass
class VisionEncoderNodeConfig:
    checkpoint: str = param(DEFAULT_CHECKPOINT, 'checkpoint directory (relative paths: package share dir)')
    backend: str = param('onnxruntime', 'torch | torch-cudagraph | onnxruntime | onnxruntime-int8 | tensorrt')
    device: str = param('cpu', 'cpu | cuda')
    threads: int = param(1, 'intra-op threads (1 is fastest for batch-1 on small CPUs)')
    image_width: int = param(0, 'expected image width; 0 = the checkpoint image size')
    image_height: int = param(0, 'expected image height; 0 = the checkpoint image size')
    image_topic: str = param('/camera/image_raw', 'input camera frames (rgb8)')
    instruction_topic: str = param('/task/instruction', 'input instruction (std_msgs/String)')
    features_topic: str = param('/vla/features', 'output visual tokens (32FC1 Image, N x C)')
    embedding_topic: str = param('/vla/instruction_embedding', 'output instruction embedding (latched)')

    def __post_init__(self):
        require(self.threads >= 1, 'threads must be >= 1')


class VisionEncoderNode(StackNode):
    def __init__(self, **kwargs):
        super().__init__('vision_encoder', **kwargs)
        self.config = cfg = declare_config(self, VisionEncoderNodeConfig)
        from flow_rag_vla_ros.core.backends import load_policy_backend
        from flow_rag_vla_ros.core.language import InstructionEmbedder
        ckpt = resolve_checkpoint(cfg.checkpoint)
        self.backend = load_policy_backend(cfg.backend, ckpt, device=cfg.device, threads=cfg.threads,
                                           parts=('vision',))
        self.embedder = InstructionEmbedder.from_checkpoint(ckpt)
        size = self.backend.image_shape  # (H, W) the model expects
        self.expected_hw = (cfg.image_height or size[0], cfg.image_width or size[1])
        self.features_pub = self.create_publisher(Image, cfg.features_topic, qos.SENSOR)
        self.embedding_pub = self.create_publisher(Float32MultiArray, cfg.embedding_topic, qos.LATCHED)
        self.instruction = ''
        self.create_subscription(Image, cfg.image_topic, self.on_image, qos.SENSOR)
        self.create_subscription(String, cfg.instruction_topic, self.on_instruction, qos.LATCHED)
        self.get_logger().info(f'vision encoder ready: backend={self.backend.name} checkpoint={ckpt}')

    def on_image(self, msg: Image) -> None:
        received = now_ns()
        image = self.parse('image', image_to_array, msg, self.expected_hw)
        if image is None:
            return
        tokens = self.backend.encode(image)  # (N, C)
        stamp = stamp_to_ns(msg.header.stamp)
        self.publish_output(self.features_pub, features_to_msg(tokens, stamp, msg.header.frame_id), 'features',
                            stamp, received)

    def on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        if not text:
            self.reject('instruction', ValueError('empty instruction'))
            return
        embedding = np.asarray(self.embedder.embed(text), dtype=np.float32)  # (384,)
        layout = MultiArrayLayout(dim=[MultiArrayDimension(label=text, size=embedding.size, stride=embedding.size)])
        self.embedding_pub.publish(Float32MultiArray(layout=layout, data=embedding.tolist()))
        if text != self.instruction:  # the sim re-sends it every episode; log changes only
            self.get_logger().info(f'instruction: {text!r}')
            self.instruction = text


def main(args=None):
    run_node(VisionEncoderNode, args)


if __name__ == '__main__':
    main()
