import numpy as np
import pytest

from flow_rag_vla_ros.core.rtc import euler_sample, guided_velocity, prefix_weights, rtc_guided_sample

H, A = 8, 2


def coupled_field(target: np.ndarray, alpha: float = 0.8):
    """A velocity field whose clean-action estimate mixes a target with the neighbours' current values."""
    L = np.zeros((H, H))
    for i in range(H):
        nb = [j for j in (i - 1, i + 1) if 0 <= j < H]
        L[i, nb] = 1.0 / len(nb)

    def v(x, t):
        x0_hat = (1 - alpha) * target + alpha * (L @ x)
        return (x - x0_hat) / t

    return v


@pytest.fixture
def field_and_noise():
    return coupled_field(-np.ones((H, A))), np.random.default_rng(0).standard_normal((H, A))


def test_prefix_weights_shape_and_values():
    w = prefix_weights(8, 2, 6)
    np.testing.assert_array_equal(w[:2], 1.0)
    np.testing.assert_array_equal(w[6:], 0.0)
    c = (6 - 2) / (6 - 2 + 1)
    assert w[2] == pytest.approx(c * np.expm1(c) / np.expm1(1.0))
    assert np.all(np.diff(w[2:7]) < 0) and np.all((w[2:6] > 0) & (w[2:6] < 1))
    np.testing.assert_array_equal(prefix_weights(4, 3, 2), [1, 1, 0, 0])  # frozen beyond the overlap is clipped


def test_guided_sample_matches_the_frozen_prefix(field_and_noise):
    v, noise = field_and_noise
    prefix = np.ones((3, A))
    unguided = euler_sample(v, noise, 10)
    assert np.abs(unguided[:3] - prefix).min() > 0.5  # the unconditional solution disagrees with the prefix
    guided = rtc_guided_sample(v, noise, prefix, prefix_weights(H, 3, 3), steps=10, guidance_weight=1.0)
    assert np.abs(guided[:3] - prefix).max() <= 1e-3
    naive_seam = np.abs(unguided[3] - prefix[-1]).max()  # splicing prefix + unguided chunk
    assert np.abs(np.diff(guided, axis=0)).max() < naive_seam


def test_soft_mask_smooths_the_seam_further(field_and_noise):
    v, noise = field_and_noise
    previous = np.ones((6, A))  # the previous chunk over the overlap
    hard = rtc_guided_sample(v, noise, previous[:2], prefix_weights(H, 2, 2), steps=10)
    soft = rtc_guided_sample(v, noise, previous, prefix_weights(H, 2, 6), steps=10)
    assert np.abs(soft[:2] - 1.0).max() <= 1e-3
    assert np.abs(np.diff(soft, axis=0)).max() < np.abs(np.diff(hard, axis=0)).max()
    assert np.all(soft[2:6] >= hard[2:6] - 1e-9)  # the overlap is pulled towards the previous chunk


def test_zero_guidance_is_the_unguided_sample(field_and_noise):
    v, noise = field_and_noise
    guided = rtc_guided_sample(v, noise, np.ones((3, A)), prefix_weights(H, 3, 3), steps=10, guidance_weight=0.0)
    np.testing.assert_allclose(guided, euler_sample(v, noise, 10), atol=1e-12)


def test_euler_follows_the_flow_convention():
    actions = np.arange(H * A, dtype=float).reshape(H, A) / 10
    noise = np.random.default_rng(1).standard_normal((H, A))
    # the exact field of the straight path x_t = t*noise + (1-t)*actions is v = noise - actions
    np.testing.assert_allclose(euler_sample(lambda x, t: noise - actions, noise, 4), actions, atol=1e-12)


def test_euler_is_the_model_engineers_integrator(field_and_noise):
    flow_matching = pytest.importorskip('flow_rag_vla_ros.core.flow_matching')
    v, noise = field_and_noise
    prefix, weights = np.ones((5, A)), prefix_weights(H, 3, 5)
    guided = rtc_guided_sample(v, noise, prefix, weights, steps=7)
    target = np.pad(prefix, ((0, H - 5), (0, 0)))
    same = flow_matching.euler_integrate(guided_velocity(v, target, weights, 1.0), noise, 7)
    np.testing.assert_allclose(guided, same, rtol=0, atol=1e-12)


@pytest.mark.parametrize('prefix, weights, g', [
    (np.ones((9, A)), np.zeros(H), 1.0),               # prefix longer than the chunk
    (np.ones((2, A)), prefix_weights(H, 3, 3), 1.0),   # weight beyond the prefix
    (np.ones((3, A)), np.full(H, 2.0), 1.0),           # weights outside [0, 1]
    (np.ones((3, A)), prefix_weights(H, 3, 3), 1.5),   # guidance weight outside [0, 1]
])
def test_invalid_arguments_raise(field_and_noise, prefix, weights, g):
    v, noise = field_and_noise
    with pytest.raises(ValueError):
        rtc_guided_sample(v, noise, prefix, weights, steps=10, guidance_weight=g)
