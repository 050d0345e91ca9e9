"""FlowPolicyConfig: every architectural choice of the VLA policy, validated (LeRobot-style split).

Freezing strategy (`frozen`): the pretrained EfficientNet-Lite0 trunk is frozen by default: its
parameters have requires_grad=False and it always runs in eval mode (BatchNorm uses the ImageNet running
statistics, also while the rest of the policy trains), so its tokens can be cached once per dataset and
the trunk is not duplicated into checkpoints (config names its source). `frozen: false` fine-tunes it
(train on images, not cached features; the trunk is then stored in the checkpoint). A frozen checkpoint can be
fine-tuned from (`train.init_from`); training keeps the trunk's BatchNorm statistics by default
(`TrainConfig.backbone_batchnorm`) and can give it its own learning rate (`backbone_lr_scale`): the shipped
`vla_v9` was trained so. The small CNN backbone is always trained (it has no
pretrained weights). Language (MiniLM) is always frozen and lives outside the module (embeddings in).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from flow_rag_vla_ros.core.config import param, require
from flow_rag_vla_ros.core.spec import ACTION_DIM, PROPRIO_DIM

BACKBONES = ('efficientnet_lite0', 'small_cnn')
EXPERTS = ('transformer', 'mlp')
# EfficientNet-Lite0 stage boundaries: blocks after which the spatial stride is 2, 4, 8, 16, 16, 32, 32
EFFNET_BLOCK_STRIDES = (2, 4, 4, 8, 8, 16, 16, 16, 16, 16, 16, 32, 32, 32, 32, 32)
EFFNET_BLOCK_CHANNELS = (16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320)


@dataclass
class FlowPolicyConfig:
    # vision
    image_size: int = param(96, 'per-camera input height = width (px) after preprocessing')
    n_cameras: int = param(1, 'cameras stacked side by side in one frame (each encoded separately)')
    backbone: str = param('efficientnet_lite0', 'efficientnet_lite0 | small_cnn')
    trunk_blocks: int = param(11, 'EfficientNet blocks kept (11: stride 16, 112 ch, 6x6 tokens at 96 px)')
    frozen: bool = param(True, 'freeze the pretrained backbone (eval mode, no gradients, not checkpointed)')
    small_cnn_channels: int = param(64, 'width of the small CNN backbone (4 stride-2 conv layers)')
    image_mean: list[float] = param([0.485, 0.456, 0.406], 'RGB mean for normalisation (ImageNet)')
    image_std: list[float] = param([0.229, 0.224, 0.225], 'RGB std for normalisation (ImageNet)')
    # expert
    expert: str = param('transformer', 'transformer (pi0-style action expert) | mlp (VelocityNetwork baseline)')
    d_model: int = param(128, 'expert width')
    n_layers: int = param(3, 'expert transformer layers (action + time tokens)')
    n_heads: int = param(4, 'attention heads')
    context_layers: int = param(1, 'self-attention layers over the context tokens (run once per call)')
    mlp_ratio: int = param(4, 'feed-forward width / d_model')
    dropout: float = param(0.0, 'dropout in attention/MLP (training only)')
    mlp_hidden: int = param(512, 'hidden width of the MLP VelocityNetwork baseline')
    mlp_depth: int = param(3, 'hidden layers of the MLP VelocityNetwork baseline')
    # io
    horizon: int = param(8, 'H actions per chunk')
    action_dim: int = param(ACTION_DIM, 'action size (4: dx, dy, dz, gripper)')
    proprio_dim: int = param(PROPRIO_DIM, 'proprio size (7)')
    language_dim: int = param(384, 'instruction embedding size (MiniLM)')
    # flow matching
    num_steps: int = param(10, 'integration steps in sample_actions')
    method: str = param('euler', 'euler | heun')
    # < 1 draws closer to the typical chunk of the learned distribution (vla_v6 on Push: README "Task success")
    noise_scale: float = param(1.0, "sample_actions' starting noise std (its temperature): 1 = as trained, "
                                    '0 = the ODE from zero noise')
    time_distribution: str = param('beta', 'training time sampling: beta (pi0 Beta(1.5,1)) | uniform')

    def __post_init__(self):
        require(self.image_size >= 16, 'image_size must be >= 16')
        require(self.n_cameras >= 1, 'n_cameras must be >= 1')
        require(self.backbone in BACKBONES, f'backbone {self.backbone!r} not in {BACKBONES}')
        require(1 <= self.trunk_blocks <= len(EFFNET_BLOCK_STRIDES), 'trunk_blocks must be in [1, 16]')
        require(len(self.image_mean) == 3 and len(self.image_std) == 3, 'image_mean/std need 3 values')
        require(all(s > 0 for s in self.image_std), 'image_std must be > 0')
        require(self.expert in EXPERTS, f'expert {self.expert!r} not in {EXPERTS}')
        require(self.d_model % self.n_heads == 0, 'd_model must be divisible by n_heads')
        require(self.n_layers >= 1 and self.context_layers >= 0, 'n_layers >= 1, context_layers >= 0')
        require(0.0 <= self.dropout < 1.0, 'dropout in [0, 1)')
        require(self.horizon >= 1 and self.num_steps >= 1, 'horizon and num_steps must be >= 1')
        require(self.method in ('euler', 'heun'), "method must be 'euler' or 'heun'")
        require(self.noise_scale >= 0, 'noise_scale must be >= 0')
        require(self.time_distribution in ('beta', 'uniform'), "time_distribution must be 'beta' or 'uniform'")

    @property
    def vision_stride(self) -> int:
        return EFFNET_BLOCK_STRIDES[self.trunk_blocks - 1] if self.backbone == 'efficientnet_lite0' else 16

    @property
    def vision_dim(self) -> int:
        """C of the visual tokens."""
        if self.backbone == 'efficientnet_lite0':
            return EFFNET_BLOCK_CHANNELS[self.trunk_blocks - 1]
        return self.small_cnn_channels

    @property
    def tokens_per_camera(self) -> int:
        side = math.ceil(self.image_size / self.vision_stride)  # 'same' padding: ceil(in / stride)
        return side * side

    @property
    def num_visual_tokens(self) -> int:
        return self.tokens_per_camera * self.n_cameras
