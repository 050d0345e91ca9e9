import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from flow_rag_vla_ros.core.checkpoint import KEY_REMAP, load_checkpoint, save_checkpoint
from flow_rag_vla_ros.core.configuration_flow_policy import FlowPolicyConfig
from flow_rag_vla_ros.core.modeling_flow_policy import FlowPolicy
from flow_rag_vla_ros.core.normalizer import NormalizerStats
from flow_rag_vla_ros.core.vision import make_preprocess


def trained_like(config: FlowPolicyConfig) -> FlowPolicy:
    torch.manual_seed(0)
    p = FlowPolicy(config)
    p.set_normalizer(NormalizerStats([0.1] * 7, [0.3] * 7), NormalizerStats([0.2] * 4, [0.5] * 4))
    return p.eval()


def actions(p: FlowPolicy, images: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    noise = torch.randn(1, p.config.horizon, 4, generator=g)
    lang = torch.randn(1, 384, generator=g)
    with torch.no_grad():
        return p.sample_actions(p.vision(images), torch.ones(1, 7), lang, noise)


@pytest.mark.parametrize('config', [
    FlowPolicyConfig(d_model=32, n_heads=2, n_layers=1),  # frozen EfficientNet: not stored
    FlowPolicyConfig(backbone='small_cnn', image_size=32, small_cnn_channels=16, d_model=32, n_heads=2, expert='mlp'),
])
def test_reload_gives_identical_actions(tmp_path, config):
    p = trained_like(config)
    cache = {'reach the red target': np.ones(384, np.float32)}
    save_checkpoint(p, tmp_path, extra={'note': 'x'}, instructions=cache)
    keys = load_file(str(tmp_path / 'model.safetensors')).keys()
    assert any(k.startswith('vision.backbone.') for k in keys) == (config.backbone == 'small_cnn')
    doc = json.loads((tmp_path / 'config.json').read_text())
    assert doc['normalizer']['action']['std'] == [0.5] * 4 and doc['extra'] == {'note': 'x'}
    q = load_checkpoint(tmp_path)
    images = torch.randn(1, 3, config.image_size, config.image_size)
    torch.testing.assert_close(actions(p, images), actions(q, images), rtol=0, atol=0)
    img = np.zeros((config.image_size, config.image_size, 3), np.uint8)
    assert make_preprocess(tmp_path)(img).shape == (1, 3, config.image_size, config.image_size)


def test_key_remap_loads_renamed_keys(tmp_path):
    p = trained_like(FlowPolicyConfig(d_model=32, n_heads=2, n_layers=1))
    save_checkpoint(p, tmp_path)
    state = load_file(str(tmp_path / 'model.safetensors'))
    new_to_old = {new: old for old, new in KEY_REMAP}
    old_state = {}
    for k, v in state.items():  # write the checkpoint with the old names
        for new, old in new_to_old.items():
            if k.startswith(new):
                k = old + k[len(new):]
                break
        old_state[k] = v
    assert 'expert.action_in.weight' in old_state and 'normalizer.action.std' in old_state
    save_file(old_state, str(tmp_path / 'model.safetensors'))
    q = load_checkpoint(tmp_path)
    images = torch.randn(1, 3, 96, 96)
    torch.testing.assert_close(actions(p, images), actions(q, images), rtol=0, atol=0)


def test_unknown_key_is_refused(tmp_path):
    p = trained_like(FlowPolicyConfig(d_model=32, n_heads=2, n_layers=1))
    save_checkpoint(p, tmp_path)
    state = load_file(str(tmp_path / 'model.safetensors'))
    state['expert.renamed_without_remap.weight'] = state.pop('expert.action_out_proj.weight')
    save_file(state, str(tmp_path / 'model.safetensors'))
    with pytest.raises(KeyError, match='KEY_REMAP'):
        load_checkpoint(tmp_path)


def test_derived_checkpoint_samples_with_the_new_steps_and_the_same_weights(tmp_path):
    from flow_rag_vla_ros.core.checkpoint import derive_checkpoint
    from flow_rag_vla_ros.tools.testing import make_tiny_checkpoint
    source = make_tiny_checkpoint(tmp_path / 'src', num_steps=3)
    out = derive_checkpoint(source, tmp_path / 'k1', num_steps=1, method='heun')
    original, derived = load_checkpoint(source), load_checkpoint(out)
    assert (derived.config.num_steps, derived.config.method) == (1, 'heun')
    images = torch.rand(1, 3, original.config.image_size, original.config.image_size)
    g = torch.Generator().manual_seed(3)
    noise, lang = torch.randn(1, original.config.horizon, 4, generator=g), torch.randn(1, 384, generator=g)
    with torch.no_grad():
        tokens = original.vision(images)
        expected = original.sample_actions(tokens, torch.ones(1, 7), lang, noise, steps=1, method='heun')
        assert torch.equal(derived.sample_actions(tokens, torch.ones(1, 7), lang, noise), expected)
        assert not torch.allclose(original.sample_actions(tokens, torch.ones(1, 7), lang, noise), expected)
    doc = json.loads((out / 'config.json').read_text())
    assert doc['extra']['derived_from']['changed'] == {'num_steps': {'from': 3, 'to': 1},
                                                       'method': {'from': 'euler', 'to': 'heun'}}
    assert (out / 'instructions.safetensors').read_bytes() == (source / 'instructions.safetensors').read_bytes()


def test_noise_scale_scales_the_noise_the_sampler_starts_from(tmp_path):
    """A derived checkpoint at noise_scale s samples from standard-normal noise exactly as its source does from
    s times that noise; 0 makes the chunk independent of the noise."""
    from flow_rag_vla_ros.core.checkpoint import derive_checkpoint
    from flow_rag_vla_ros.tools.testing import make_tiny_checkpoint
    source = make_tiny_checkpoint(tmp_path / 'src')
    doc = json.loads((source / 'config.json').read_text())
    del doc['config']['noise_scale']  # a checkpoint from before the setting existed
    (source / 'config.json').write_text(json.dumps(doc))
    original = load_checkpoint(source)
    cooler = load_checkpoint(derive_checkpoint(source, tmp_path / 'half', noise_scale=0.5))
    assert json.loads((tmp_path / 'half' / 'config.json').read_text())['extra']['derived_from']['changed'] == \
        {'noise_scale': {'from': 1.0, 'to': 0.5}}
    frozen = load_checkpoint(derive_checkpoint(source, tmp_path / 'zero', noise_scale=0.0))
    assert original.config.noise_scale == 1.0 and cooler.config.noise_scale == 0.5
    g = torch.Generator().manual_seed(5)
    images = torch.rand(1, 3, original.config.image_size, original.config.image_size, generator=g)
    noise = torch.randn(1, original.config.horizon, 4, generator=g)
    other = torch.randn(1, original.config.horizon, 4, generator=g)
    lang = torch.randn(1, 384, generator=g)
    with torch.no_grad():
        tokens = original.vision(images)
        sample = lambda m, n: m.sample_actions(tokens, torch.ones(1, 7), lang, n)  # noqa: E731
        assert torch.equal(sample(cooler, noise), sample(original, noise * 0.5))
        assert not torch.allclose(sample(cooler, noise), sample(original, noise))
        assert torch.equal(sample(frozen, noise), sample(frozen, other))
        assert torch.equal(sample(frozen, noise), sample(original, torch.zeros_like(noise)))


@pytest.mark.parametrize('changes, error', [({'d_model': 64}, 'not sampler settings'),
                                            ({'num_steps': 0}, 'num_steps'),
                                            ({'noise_scale': -0.5}, 'noise_scale')])
def test_derive_refuses_what_would_need_retraining_or_is_invalid(tmp_path, changes, error):
    from flow_rag_vla_ros.core.checkpoint import derive_checkpoint
    from flow_rag_vla_ros.tools.testing import make_tiny_checkpoint
    source = make_tiny_checkpoint(tmp_path / 'src')
    with pytest.raises(ValueError, match=error):
        derive_checkpoint(source, tmp_path / 'out', **changes)
    assert not (tmp_path / 'out').exists()
    with pytest.raises(ValueError, match='new directory'):
        derive_checkpoint(source, source, num_steps=2)
