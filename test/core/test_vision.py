import numpy as np
import pytest
import torch

from flow_rag_vla_ros.core.configuration_flow_policy import FlowPolicyConfig
from flow_rag_vla_ros.core.vision import (EfficientNetLite0, VisionEncoder, load_pretrained_lite0, preprocess,
                                          pretrained_weights_path)


def test_efficientnet_weights_load_with_strict_keys():
    state = torch.load(pretrained_weights_path(), map_location='cpu', weights_only=True)
    model = EfficientNetLite0()
    assert set(model.state_dict()) == set(state)  # every key, no extras
    model.load_state_dict(state, strict=True)
    img = np.full((96, 96, 3), 128, np.uint8)
    img[20:70, 30:60] = (200, 40, 40)
    x = torch.from_numpy(preprocess(img, FlowPolicyConfig())[None])
    with torch.no_grad():
        probs = load_pretrained_lite0().eval()(x).softmax(-1)
    assert torch.isfinite(probs).all() and probs.shape == (1, 1000)
    assert float(probs.max()) > 10.0 / 1000  # a peaked (not uniform) ImageNet prediction


def test_trunk_gives_spatial_tokens():
    c = FlowPolicyConfig()
    enc = VisionEncoder(c)
    with torch.no_grad():
        tok = enc(torch.randn(2, 3, 96, 96))
    assert tok.shape == (2, 36, 112) == (2, c.num_visual_tokens, c.vision_dim)


def test_trunk_split_at_a_block_gives_the_same_tokens_and_trains_only_the_last_blocks():
    enc = VisionEncoder(FlowPolicyConfig(n_cameras=2, image_size=64, frozen=False), pretrained=False).eval()
    x = torch.randn(3, 3, 64, 128)  # (B, 3, S, S*n)
    with torch.no_grad():
        lower = enc.lower_features(x, 5)
        assert lower.shape == (3, 2, 40, 8, 8)  # (B, n, C', h', w'): stride 8 after 5 blocks
        for n_blocks in (0, 5, 11):  # the stem only, stride 8, the whole trunk
            torch.testing.assert_close(enc.tokens_from_lower(enc.lower_features(x, n_blocks), n_blocks), enc(x))
    enc.train_last_blocks(6)
    enc.train()
    trainable = {n.split('.')[2] for n, p in enc.named_parameters() if p.requires_grad}  # backbone._blocks.<i>
    assert trainable == {str(i) for i in range(5, 11)}
    assert not enc.backbone.training  # BatchNorm statistics stay as they are
    with pytest.raises(ValueError, match='12 trunk blocks'):
        enc.train_last_blocks(12)
    with pytest.raises(ValueError, match='efficientnet_lite0'):
        VisionEncoder(FlowPolicyConfig(backbone='small_cnn')).train_last_blocks(1)


def test_multi_camera_frames_are_split_and_concatenated():
    c = FlowPolicyConfig(backbone='small_cnn', image_size=32, n_cameras=2, small_cnn_channels=16)
    enc = VisionEncoder(c).eval()
    left, right = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    frame = np.concatenate([left, right], axis=1)  # (64, 128, 3) side by side
    x = preprocess(frame, c)
    assert x.shape == (3, 32, 64) and x.dtype == np.float32
    with torch.no_grad():
        both = enc(torch.from_numpy(x[None]))
        single = VisionEncoder(FlowPolicyConfig(backbone='small_cnn', image_size=32, small_cnn_channels=16))
        single.load_state_dict(enc.state_dict())
        first = single.eval()(torch.from_numpy(preprocess(left, single.config)[None]))
    assert both.shape == (1, 2 * 4, 16)
    torch.testing.assert_close(both[:, :4], first)


def test_preprocess_rejects_bad_input():
    c = FlowPolicyConfig(n_cameras=2)
    with pytest.raises(ValueError):
        preprocess(np.zeros((96, 97, 3), np.uint8), c)
    with pytest.raises(ValueError):
        preprocess(np.zeros((96, 96, 3), np.float32), FlowPolicyConfig())
    with pytest.raises(ValueError):
        VisionEncoder(FlowPolicyConfig(backbone='small_cnn', image_size=32))(torch.zeros(1, 3, 32, 33))
