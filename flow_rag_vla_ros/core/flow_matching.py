"""Flow-matching math shared by training, sampling and guided samplers (stateless, torch or numpy).

Convention (pi0 / openpi, also core/rtc.py): t = 1 is pure noise, t = 0 is data.
    x_t = t * noise + (1 - t) * actions          (interpolate)
    v   = d x_t / d t = noise - actions          (target_velocity)
Sampling integrates dx/dt = v from t = 1 down to t = 0 with `steps` equal steps of size dt = 1 / steps.
`velocity_fn(x, t)` takes the state and a python float t, so the same integrators drive a torch model,
a numpy field, or a guided wrapper of either (e.g. rtc.guided_velocity).
"""
from __future__ import annotations

from typing import Callable, TypeVar

import torch

X = TypeVar('X')  # torch.Tensor or numpy.ndarray
VelocityFn = Callable[[X, float], X]


def interpolate(actions: X, noise: X, t: X) -> X:
    """x_t = t * noise + (1 - t) * actions; t broadcasts against actions (e.g. (B, 1, 1) for (B, H, A))."""
    return t * noise + (1 - t) * actions


def target_velocity(actions: X, noise: X) -> X:
    """The constant velocity of the straight path from actions (t=0) to noise (t=1)."""
    return noise - actions


def time_grid(steps: int) -> list[float]:
    """The times at which Euler evaluates the field: 1, 1 - 1/steps, ..., 1/steps."""
    if steps < 1:
        raise ValueError(f'steps must be >= 1, got {steps}')
    return [1.0 - i / steps for i in range(steps)]


def euler_integrate(velocity_fn: VelocityFn, noise: X, steps: int) -> X:
    """Explicit Euler from t=1 to t=0: x <- x - dt * v(x, t). Exact for a velocity constant in t."""
    x, dt = noise, 1.0 / steps
    for t in time_grid(steps):
        x = x - dt * velocity_fn(x, t)
    return x


def heun_integrate(velocity_fn: VelocityFn, noise: X, steps: int) -> X:
    """Heun (explicit trapezoid), 2 evaluations per step. Exact for a velocity affine in t."""
    x, dt = noise, 1.0 / steps
    for t in time_grid(steps):
        v1 = velocity_fn(x, t)
        x_pred = x - dt * v1
        v2 = velocity_fn(x_pred, t - dt)
        x = x - dt * 0.5 * (v1 + v2)
    return x


INTEGRATORS = {'euler': euler_integrate, 'heun': heun_integrate}


def integrate(velocity_fn: VelocityFn, noise: X, steps: int, method: str = 'euler') -> X:
    if method not in INTEGRATORS:
        raise ValueError(f'unknown integration method {method!r}; choose from {sorted(INTEGRATORS)}')
    return INTEGRATORS[method](velocity_fn, noise, steps)


def sample_time(batch: int, distribution: str, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,) training times in (0, 1]. 'beta': pi0's Beta(1.5, 1) (more weight on noisy t), 'uniform'."""
    if distribution == 'uniform':
        u = torch.rand(batch, device=device, generator=generator)
    elif distribution == 'beta':
        # Beta(1.5, 1) by inverse CDF: F(t) = t^1.5  ->  t = u^(2/3)
        u = torch.rand(batch, device=device, generator=generator) ** (2.0 / 3.0)
    else:
        raise ValueError(f"time distribution must be 'beta' or 'uniform', got {distribution!r}")
    return u * 0.999 + 0.001
