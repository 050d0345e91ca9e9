"""Real-Time Chunking (Black et al. 2025), simplified: the soft prefix mask and guided flow sampling.

While a new chunk is being inferred the robot keeps executing the previous one. RTC makes the new chunk
agree with what is already committed: its first `frozen` actions must equal the previous chunk's, the
overlap after them is pulled towards the previous chunk with weights that decay to 0, and the rest is
free. The same mask is used twice in this package: by the sampler below (the policy inpaints the prefix)
and by `ChunkExecutor` in `rtc` splice mode (an unguided chunk is blended into the executing plan).

Flow convention (shared with the policy): x_t = t * noise + (1 - t) * actions, v = noise - actions,
integrated with Euler from t = 1 (noise) to t = 0 (actions). The clean action predicted at time t is
x0_hat = x_t - t * v. Guidance replaces x0_hat on the mask by x0_hat + g * W * (Y - x0_hat) and uses the
velocity consistent with it, v' = (x_t - x0_hat') / t. With g = 1 and W = 1 the last Euler step lands
exactly on Y, so frozen positions reproduce the committed prefix; the free positions see the guided
positions through the model (velocity_fn couples positions), which keeps the seam smooth. This is the
projection form of the paper's inpainting guidance (no vector-Jacobian product through the model).

`euler_sample` is the same integrator as `flow_matching.euler_integrate` (same time grid; a test checks it)
but numpy-only: flow_matching imports torch, which the merger and an ONNX Runtime policy node must not load.
Guidance needs t > 0 at every evaluation, so it pairs with Euler, not with Heun (which evaluates t = 0).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

VelocityFn = Callable[[np.ndarray, float], np.ndarray]


def prefix_weights(horizon: int, frozen: int, overlap: int) -> np.ndarray:
    """(horizon,) guidance weights: 1 on [0, frozen), exponential decay on [frozen, overlap), 0 after.

    The decay is the paper's soft mask: c_i (e^c_i - 1) / (e - 1) with c_i = (overlap - i) / (overlap - frozen + 1),
    so the weight falls from just below 1 after the frozen prefix to just above 0 at the end of the overlap.
    """
    if horizon < 0 or frozen < 0 or overlap < 0:
        raise ValueError(f'horizon, frozen and overlap must be >= 0, got {horizon}, {frozen}, {overlap}')
    overlap = min(overlap, horizon)
    frozen = min(frozen, overlap)
    w = np.zeros(horizon, dtype=np.float64)
    w[:frozen] = 1.0
    i = np.arange(frozen, overlap)
    c = (overlap - i) / (overlap - frozen + 1.0)
    w[frozen:overlap] = c * np.expm1(c) / np.expm1(1.0)
    return w


def guided_velocity(velocity_fn: VelocityFn, target: np.ndarray, weights: np.ndarray,
                    guidance_weight: float) -> VelocityFn:
    """Wrap a velocity field so its predicted clean chunk is pulled towards `target` (H, A) on `weights` (H,)."""
    w = guidance_weight * np.asarray(weights, dtype=np.float64)[:, None]  # (H, 1)

    def v(x: np.ndarray, t: float) -> np.ndarray:
        x0_hat = x - t * velocity_fn(x, t)  # (..., H, A)
        x0_guided = x0_hat + w * (target - x0_hat)
        return (x - x0_guided) / t

    return v


def euler_sample(velocity_fn: VelocityFn, noise: np.ndarray, steps: int) -> np.ndarray:
    """Euler integration of dx/dt = v from t = 1 (noise) to t = 0; v is evaluated at t = 1, 1 - 1/steps, ..."""
    if steps < 1:
        raise ValueError(f'steps must be >= 1, got {steps}')
    x = np.array(noise, dtype=np.float64)
    dt = 1.0 / steps
    for k in range(steps):
        t = 1.0 - k * dt
        x = x - dt * np.asarray(velocity_fn(x, t), dtype=np.float64)
    return x


def rtc_guided_sample(velocity_fn: VelocityFn, noise: np.ndarray, prefix: np.ndarray, weights: np.ndarray,
                      steps: int = 10, guidance_weight: float = 1.0) -> np.ndarray:
    """Sample a chunk that agrees with the committed `prefix` where `weights` say so.

    velocity_fn(x (..., H, A), t float) -> v (..., H, A); noise (..., H, A); prefix (P, A): the previous
    chunk's actions on the first P positions (the frozen ones and the overlap); weights (H,) in [0, 1],
    zero from position P on (e.g. `prefix_weights(H, d, P)`); guidance_weight in [0, 1] (1 = exact inpainting
    on weight-1 positions, 0 = unguided). Returns the sampled chunk (..., H, A) as float64.
    """
    noise = np.asarray(noise, dtype=np.float64)
    prefix = np.asarray(prefix, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    horizon, dim = noise.shape[-2:]
    if prefix.ndim != 2 or prefix.shape[0] > horizon or prefix.shape[1] != dim:
        raise ValueError(f'prefix must be (P <= {horizon}, {dim}), got {prefix.shape}')
    if weights.shape != (horizon,) or not np.all((weights >= 0) & (weights <= 1)):
        raise ValueError(f'weights must be ({horizon},) in [0, 1], got {weights.shape}')
    if np.any(weights[prefix.shape[0]:] > 0):
        raise ValueError(f'weights must be 0 beyond the prefix (length {prefix.shape[0]})')
    if not 0.0 <= guidance_weight <= 1.0:
        raise ValueError(f'guidance_weight must be in [0, 1], got {guidance_weight}')
    target = np.zeros((horizon, dim))
    target[:prefix.shape[0]] = prefix
    return euler_sample(guided_velocity(velocity_fn, target, weights, guidance_weight), noise, steps)
