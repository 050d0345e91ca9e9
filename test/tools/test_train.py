"""Training CLI pieces: which episodes become training frames, fine-tuning from a checkpoint."""
import json

import numpy as np
import pytest

from flow_rag_vla_ros.core.checkpoint import load_checkpoint
from flow_rag_vla_ros.core.configuration_flow_policy import FlowPolicyConfig
from flow_rag_vla_ros.core.spec import INSTRUCTIONS
from flow_rag_vla_ros.sim.dataset import Episode, update_meta, write_episode
from flow_rag_vla_ros.tools.train import TrainConfig, action_chunks, train

SMALL = dict(image_size=32, d_model=32, n_heads=2, n_layers=1, horizon=4)


def episode(t: int, success: bool, seed: int) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(rng.integers(0, 255, (t, 32, 32, 3), dtype=np.uint8), rng.normal(size=(t, 7)).astype(np.float32),
                   rng.uniform(-1, 1, (t, 4)).astype(np.float32), success, INSTRUCTIONS['push'], 'push', seed,
                   '' if success else 'timeout')


def run(tmp_path, name: str, **train_fields) -> dict:
    tc = TrainConfig(data=str(tmp_path / 'demos'), out=str(tmp_path / name), tasks=['push'], steps=2, batch_size=4,
                     val_fraction=0.0, eval_episodes=0, warmup=1, **train_fields)
    train(FlowPolicyConfig(**SMALL), tc, progress=False)
    return json.loads((tmp_path / name / 'config.json').read_text())


@pytest.fixture
def datasets(tmp_path):
    write_episode(tmp_path / 'demos', episode(5, True, 1), 0)
    write_episode(tmp_path / 'demos', episode(7, False, 2), 1)   # a failed demonstration: not imitated
    write_episode(tmp_path / 'relabelled', episode(9, False, 3), 0)  # the policy failed, the labels are the expert's
    return tmp_path


def test_action_chunks_hold_xyz_and_keep_the_gripper_past_the_end():
    actions = np.arange(12, dtype=np.float32).reshape(3, 4)
    chunks = action_chunks(actions, 2)  # (3, 2, 4)
    np.testing.assert_array_equal(chunks[0], actions[:2])
    np.testing.assert_array_equal(chunks[2], [actions[2], [0, 0, 0, actions[2, 3]]])


def test_relabelled_episodes_are_used_whatever_the_outcome_demonstrations_only_when_successful(datasets):
    assert run(datasets, 'demos_only')['extra']['frames'] == 5
    doc = run(datasets, 'with_relabelled', relabelled_data=[str(datasets / 'relabelled')])
    assert doc['extra']['frames'] == 5 + 9


def test_fine_tuning_starts_from_the_checkpoint_and_keeps_its_normaliser(datasets):
    base = run(datasets, 'base')
    tuned = run(datasets, 'tuned', relabelled_data=[str(datasets / 'relabelled')], init_from=str(datasets / 'base'))
    # the data changed (9 more frames) but the model keeps the units its weights were learned in
    assert tuned['normalizer'] == base['normalizer']
    fresh = run(datasets, 'fresh', relabelled_data=[str(datasets / 'relabelled')], seed=1)
    assert fresh['normalizer'] != base['normalizer']
    # and it starts from the checkpoint's weights: after 2 small steps it is far closer to them than a fresh init
    a, b, c = (load_checkpoint(datasets / n).state_dict() for n in ('base', 'tuned', 'fresh'))
    key = next(k for k in a if k.endswith('action_out_proj.weight'))
    assert float((a[key] - b[key]).abs().max()) < float((a[key] - c[key]).abs().max())


def test_fine_tuning_refuses_a_checkpoint_of_another_architecture(datasets):
    run(datasets, 'base')
    tc = TrainConfig(data=str(datasets / 'demos'), out=str(datasets / 'x'), tasks=['push'], steps=1, batch_size=2,
                     val_fraction=0.0, eval_episodes=0, init_from=str(datasets / 'base'))
    with pytest.raises(ValueError, match=r"differs in \['d_model'"):
        train(FlowPolicyConfig(**{**SMALL, 'd_model': 64}), tc, progress=False)


def test_relabelled_chunks_are_the_targets_and_must_match_the_horizon(datasets):
    ep = episode(6, False, 4)
    ep.chunks = np.repeat(ep.actions[:, None], 4, axis=1)  # (T, H=4, 4)
    write_episode(datasets / 'chunked', ep, 0)
    assert run(datasets, 'chunked', relabelled_data=[str(datasets / 'chunked')])['extra']['frames'] == 5 + 6
    ep.chunks = ep.chunks[:, :3]
    write_episode(datasets / 'short', ep, 0)
    with pytest.raises(ValueError, match='chunks of 3 actions, the policy predicts 4'):
        run(datasets, 'short', relabelled_data=[str(datasets / 'short')])


def test_cli_relabelled_data_override_distinguishes_none_from_unset():
    from flow_rag_vla_ros.cli import build_parser
    parse = build_parser(['train']).parse_args
    assert parse(['train', '--config', 'c.yaml']).relabelled_data is None  # keep the config's
    assert parse(['train', '--config', 'c.yaml', '--relabelled-data']).relabelled_data == []  # none
    assert parse(['train', '--config', 'c.yaml', '--relabelled-data', 'a', 'b']).relabelled_data == ['a', 'b']


def test_shift_views_translates_each_camera_view_like_shift_image():
    import torch

    from flow_rag_vla_ros.tools.train import shift_image, shift_views
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (8, 16, 3), dtype=np.uint8)  # two 8x8 cameras side by side
    images = torch.from_numpy(frame).permute(2, 0, 1)[None].float()  # (1, 3, 8, 16)
    offsets = torch.tensor([[[0, 5], [3, 3]]])  # camera 0 moved (row -3, col +2), camera 1 not at all

    class Fixed:  # the numpy reference draws (dy, dx) per view: give it the same offsets
        def __init__(self):
            self.draws = iter([np.array([-3, 2]), np.array([0, 0])])

        def integers(self, *args, **kwargs):
            return next(self.draws)

    expected = shift_image(frame, Fixed(), 3)
    got = shift_views(images, 2, offsets, 3)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got[:, 8:], frame[:, 8:])
    assert not np.array_equal(got[:, :8], frame[:, :8])


def test_a_frozen_checkpoint_fine_tunes_its_trunk_at_a_scaled_learning_rate(datasets):
    import torch

    from flow_rag_vla_ros.core.checkpoint import BACKBONE_PREFIX
    from flow_rag_vla_ros.tools.train import init_policy
    run(datasets, 'base')  # frozen ImageNet trunk: not stored in the checkpoint
    unfrozen = FlowPolicyConfig(**SMALL, frozen=False)
    start = init_policy(str(datasets / 'base'), unfrozen, 'cpu')
    base = load_checkpoint(datasets / 'base')
    assert all(p.requires_grad for p in start.vision.backbone.parameters())
    for k, v in base.state_dict().items():  # the trunk is ImageNet's, the rest the checkpoint's
        assert torch.equal(start.state_dict()[k], v), k
    with pytest.raises(ValueError, match=r"differs in \['d_model'"):
        init_policy(str(datasets / 'base'), FlowPolicyConfig(**{**SMALL, 'd_model': 64}, frozen=False), 'cpu')

    tc = TrainConfig(data=str(datasets / 'demos'), out=str(datasets / 'tuned'), tasks=['push'], steps=2, batch_size=4,
                     val_fraction=0.0, eval_episodes=0, warmup=1, init_from=str(datasets / 'base'), image_shift=2)
    train(unfrozen, tc, progress=False)
    tuned = load_checkpoint(datasets / 'tuned')
    assert not tuned.config.frozen
    stem = f'{BACKBONE_PREFIX}_conv_stem.weight'
    moved = lambda name, key: float((load_checkpoint(datasets / name).state_dict()[key]  # noqa: E731
                                     - base.state_dict()[key]).abs().max())
    assert moved('tuned', stem) > 0  # the trunk trained and is stored
    bn = f'{BACKBONE_PREFIX}_bn0.running_mean'
    assert moved('tuned', bn) == 0  # BatchNorm statistics kept (backbone_batchnorm: frozen)
    train(unfrozen, TrainConfig(**{**tc.__dict__, 'out': str(datasets / 'still'), 'backbone_lr_scale': 0.0}),
          progress=False)
    assert moved('still', stem) == 0 and moved('still', next(k for k in base.state_dict()
                                                              if k.endswith('action_out_proj.weight'))) > 0


def test_cli_set_overrides_either_section_and_refuses_others():
    from flow_rag_vla_ros.cli import build_parser
    from flow_rag_vla_ros.tools.train import configs_from_args
    parse = build_parser(['train']).parse_args
    pc, tc = configs_from_args(parse(['train', '--config', 'config/train_vla_v8.yaml', '--steps', '7', '--set',
                                      'policy.noise_scale=0.5', 'train.backbone_lr_scale=1.0', 'train.tasks=[push]']))
    assert (pc.noise_scale, pc.frozen, tc.backbone_lr_scale, tc.tasks, tc.steps) == (0.5, False, 1.0, ['push'], 7)
    with pytest.raises(SystemExit, match='not'):
        configs_from_args(parse(['train', '--config', 'config/train_vla_v8.yaml', '--set', 'merger.x=1']))
    with pytest.raises(ValueError, match='backbone_lr_scale'):
        configs_from_args(parse(['train', '--config', 'config/train_vla_v8.yaml', '--set', 'train.backbone_lr_scale=-1']))


UNFROZEN = FlowPolicyConfig(**SMALL, frozen=False)
COMMON = dict(tasks=['push'], steps=2, batch_size=4, val_fraction=0.0, eval_episodes=0, warmup=1)


@pytest.fixture
def tuned_trunk(datasets):
    """A checkpoint whose trunk was fine-tuned on images, so it is stored."""
    train(UNFROZEN, TrainConfig(**COMMON, data=str(datasets / 'demos'), out=str(datasets / 'tuned'), image_shift=2),
          progress=False)
    return datasets / 'tuned'


def test_freeze_backbone_trains_only_the_expert_on_a_stored_trunk_and_keeps_it_stored(datasets, tuned_trunk):
    import torch

    from flow_rag_vla_ros.core.checkpoint import BACKBONE_PREFIX
    from flow_rag_vla_ros.tools.train import init_policy
    tuned = load_checkpoint(tuned_trunk).state_dict()
    # the cache must hold the tuned trunk's tokens, not ImageNet's from an earlier frozen run on the same files
    run(datasets, 'frozen_base')
    before = set((datasets / 'demos').glob('features_*'))
    train(UNFROZEN, TrainConfig(**COMMON, data=str(datasets / 'demos'), out=str(datasets / 'expert'),
                                init_from=str(tuned_trunk), freeze_backbone=True), progress=False)
    assert len(set((datasets / 'demos').glob('features_*')) - before) == 1
    doc = json.loads((datasets / 'expert' / 'config.json').read_text())
    assert doc['vision_source'] == 'model.safetensors' and not doc['config']['frozen']
    expert = load_checkpoint(datasets / 'expert').state_dict()
    trunk = [k for k in tuned if k.startswith(BACKBONE_PREFIX)]
    assert trunk and all(torch.equal(expert[k], tuned[k]) for k in trunk)  # stored, unchanged
    out_proj = next(k for k in tuned if k.endswith('action_out_proj.weight'))
    assert not torch.equal(expert[out_proj], tuned[out_proj])  # the expert trained
    # frozen: true on a stored trunk would load ImageNet's in its place at the next load: refused
    with pytest.raises(ValueError, match='freeze_backbone'):
        init_policy(str(tuned_trunk), FlowPolicyConfig(**SMALL), 'cpu')
    with pytest.raises(ValueError, match='augment_copies'):
        TrainConfig(freeze_backbone=True, image_shift=2, init_from=str(tuned_trunk))
    with pytest.raises(ValueError, match='set init_from'):
        TrainConfig(freeze_backbone=True)


def test_trunk_trainable_blocks_train_the_last_blocks_on_cached_activations_of_the_first(datasets, tuned_trunk):
    import torch
    from safetensors import safe_open

    from flow_rag_vla_ros.core.checkpoint import BACKBONE_PREFIX
    tuned = load_checkpoint(tuned_trunk).state_dict()
    train(UNFROZEN, TrainConfig(**COMMON, data=str(datasets / 'demos'), out=str(datasets / 'upper'),
                                init_from=str(tuned_trunk), freeze_backbone=True, trunk_trainable_blocks=2,
                                augment_copies=1), progress=False)
    cache, = (datasets / 'demos').glob('features_*')
    with safe_open(str(cache), 'pt') as f:
        assert f.get_slice('trunk_features').get_shape() == [2 * 5, 1, 112, 2, 2]  # 5 frames x 2 copies, block 9's
    upper = load_checkpoint(datasets / 'upper').state_dict()
    changed = {k.split('.')[3] for k in tuned
               if k.startswith(BACKBONE_PREFIX + '_blocks.') and not torch.equal(upper[k], tuned[k])}
    assert changed == {'9', '10'}  # the last two blocks trained, the cached ones did not
    assert all(torch.equal(upper[k], tuned[k]) for k in tuned if 'running_' in k)  # BatchNorm statistics kept
    out_proj = next(k for k in tuned if k.endswith('action_out_proj.weight'))
    assert not torch.equal(upper[out_proj], tuned[out_proj])
    with pytest.raises(ValueError, match='set freeze_backbone'):
        TrainConfig(trunk_trainable_blocks=2, init_from=str(tuned_trunk))


def test_extra_demonstrations_join_only_their_successful_episodes(datasets):
    write_episode(datasets / 'more', episode(4, True, 5), 0)
    write_episode(datasets / 'more', episode(6, False, 6), 1)  # a failed demonstration: not imitated here either
    assert run(datasets, 'more', extra_data=[str(datasets / 'more')])['extra']['frames'] == 5 + 4


def test_extra_demonstrations_must_be_recorded_like_the_data(datasets):
    update_meta(datasets / 'demos', 'push', {}, image_size=32, cameras=['scene'])
    write_episode(datasets / 'side', episode(4, True, 5), 0)
    update_meta(datasets / 'side', 'push', {}, image_size=32, cameras=['side'])
    with pytest.raises(ValueError, match="recorded with {'cameras': \\['side'\\]"):
        run(datasets, 'side', extra_data=[str(datasets / 'side')])
