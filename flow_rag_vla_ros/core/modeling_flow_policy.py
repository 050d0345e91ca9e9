"""FlowPolicy: vision encoder + flow-matching action expert (pi0-style) with normalisation buffers.

    tokens = policy.vision(images)                                  # (B, 3, S, S*n) -> (B, N, C)
    chunk  = policy.sample_actions(tokens, proprio, language, noise)  # raw proprio (B, 7), (B, 384), (B, H, 4)
    out    = policy.compute_loss(batch)                             # FlowLossOutput

Expert ("late fusion"): context tokens [visual tokens (+ learned position per token) | proprio | language]
are projected to d_model, run through `context_layers` self-attention blocks and turned into per-layer
keys/values ONCE per `sample_actions` call (`context_kv`). Each integration step runs only the
[time token | action tokens] sequence through the expert layers; those tokens attend bidirectionally to
each other and to the cached context K/V (`velocity`). `velocity(x_t, t, cache)` is public so guided
integrators (RTC, core/rtc.py) can drive the field themselves. Actions live in normalised space inside
the expert; `sample_actions` returns raw actions. The MLP `VelocityNetwork` baseline shares the API.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from flow_rag_vla_ros.core import flow_matching as fm
from flow_rag_vla_ros.core.configuration_flow_policy import FlowPolicyConfig
from flow_rag_vla_ros.core.normalizer import NormalizerStats, normalize, unnormalize
from flow_rag_vla_ros.core.vision import VisionEncoder

ContextCache = list  # per expert layer (k, v), each (B, heads, N_ctx, d_head); MLP: [(cond, cond)]


@dataclass
class FlowLossOutput:
    loss: torch.Tensor         # () mean squared velocity error (masked)
    per_dim: torch.Tensor      # (A,) error per action dimension


def _check(x: torch.Tensor, shape: tuple, name: str) -> None:
    """Raise a clear ValueError unless x matches shape (None = any size)."""
    ok = x.ndim == len(shape) and all(s is None or int(d) == s for d, s in zip(x.shape, shape))
    if not ok:
        want = '(' + ', '.join('*' if s is None else str(s) for s in shape) + ')'
        raise ValueError(f'{name}: expected shape {want}, got {tuple(x.shape)}')


def sinusoidal_embedding(t: torch.Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """(B,) times -> (B, dim) sin/cos features with periods log-spaced in [min_period, max_period] (pi0)."""
    frac = torch.linspace(0.0, 1.0, dim // 2, device=t.device, dtype=torch.float32)
    period = min_period * (max_period / min_period) ** frac  # (dim/2,)
    ang = t.float()[:, None] * (2 * math.pi / period)[None]  # (B, dim/2)
    return torch.cat([ang.sin(), ang.cos()], dim=-1)  # (B, dim)


class Attention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)  # (B, h, N, dh)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h, n, dh = q.shape
        att = torch.softmax((q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(dh)), dim=-1)  # (B, h, N, M)
        att = F.dropout(att, self.dropout, self.training)
        return self.o((att @ v).transpose(1, 2).reshape(b, n, h * dh))  # (B, N, D)


class MLP(nn.Sequential):
    def __init__(self, d: int, ratio: int, dropout: float):
        super().__init__(nn.Linear(d, ratio * d), nn.GELU(), nn.Linear(ratio * d, d), nn.Dropout(dropout))


class ContextBlock(nn.Module):
    """Pre-LN self-attention block over the context tokens (run once per call)."""

    def __init__(self, c: FlowPolicyConfig):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        self.attn, self.mlp = Attention(c.d_model, c.n_heads, c.dropout), MLP(c.d_model, c.mlp_ratio, c.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn.attend(self.attn.split(self.attn.q(h)), self.attn.split(self.attn.k(h)),
                                 self.attn.split(self.attn.v(h)))
        return x + self.mlp(self.norm2(x))


class ExpertBlock(nn.Module):
    """Action/time tokens attend to [cached context K/V ; their own K/V] (bidirectional, no mask)."""

    def __init__(self, c: FlowPolicyConfig):
        super().__init__()
        d = c.d_model
        self.norm1, self.norm2, self.ctx_norm = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn, self.mlp = Attention(d, c.n_heads, c.dropout), MLP(d, c.mlp_ratio, c.dropout)
        self.ctx_k, self.ctx_v = nn.Linear(d, d), nn.Linear(d, d)

    def context_kv(self, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.ctx_norm(ctx)
        return self.attn.split(self.ctx_k(h)), self.attn.split(self.ctx_v(h))  # (B, h, Nc, dh) x2

    def forward(self, x: torch.Tensor, k_ctx: torch.Tensor, v_ctx: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        a = self.attn
        k = torch.cat([k_ctx, a.split(a.k(h))], dim=2)  # (B, h, Nc + 1 + H, dh)
        v = torch.cat([v_ctx, a.split(a.v(h))], dim=2)
        x = x + a.attend(a.split(a.q(h)), k, v)
        return x + self.mlp(self.norm2(x))


class ContextProjector(nn.Module):
    """Visual tokens (C -> d, + learned position per token), proprio -> 1 token, language -> 1 token."""

    def __init__(self, c: FlowPolicyConfig):
        super().__init__()
        self.visual = nn.Linear(c.vision_dim, c.d_model)
        self.visual_pos = nn.Parameter(0.02 * torch.randn(1, c.num_visual_tokens, c.d_model))
        self.proprio = nn.Linear(c.proprio_dim, c.d_model)
        self.language = nn.Linear(c.language_dim, c.d_model)

    def forward(self, tokens: torch.Tensor, proprio: torch.Tensor, language: torch.Tensor) -> torch.Tensor:
        vis = self.visual(tokens) + self.visual_pos  # (B, N, D)
        return torch.cat([vis, self.proprio(proprio)[:, None], self.language(language)[:, None]], dim=1)  # (B, N+2, D)


class TimeEmbedding(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.d = d
        self.mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(t, self.d))  # (B, D)


def _time_vector(t, batch: int, ref: torch.Tensor) -> torch.Tensor:
    """float, () / (1,) / (B,) tensor -> (B,) tensor on ref's device."""
    if not torch.is_tensor(t):
        return torch.full((batch,), float(t), dtype=ref.dtype, device=ref.device)
    t = t.to(ref.dtype).reshape(-1)
    return t.expand(batch) if t.shape[0] == 1 else t


class FlowActionExpert(nn.Module):
    def __init__(self, c: FlowPolicyConfig):
        super().__init__()
        self.config = c
        self.context_projector = ContextProjector(c)
        self.context_blocks = nn.ModuleList(ContextBlock(c) for _ in range(c.context_layers))
        self.time_embedding = TimeEmbedding(c.d_model)
        self.action_in_proj = nn.Linear(c.action_dim, c.d_model)
        self.action_pos = nn.Parameter(0.02 * torch.randn(1, c.horizon, c.d_model))
        self.blocks = nn.ModuleList(ExpertBlock(c) for _ in range(c.n_layers))
        self.out_norm = nn.LayerNorm(c.d_model)
        self.action_out_proj = nn.Linear(c.d_model, c.action_dim)

    def context_kv(self, tokens: torch.Tensor, proprio: torch.Tensor, language: torch.Tensor) -> ContextCache:
        ctx = self.context_projector(tokens, proprio, language)  # (B, Nc, D)
        for block in self.context_blocks:
            ctx = block(ctx)
        return [block.context_kv(ctx) for block in self.blocks]

    def velocity(self, x: torch.Tensor, t, cache: ContextCache) -> torch.Tensor:
        b = x.shape[0]
        temb = self.time_embedding(_time_vector(t, b, x))[:, None]  # (B, 1, D)
        act = self.action_in_proj(x) + self.action_pos + temb  # (B, H, D)
        h = torch.cat([temb, act], dim=1)  # (B, 1+H, D)
        for block, (k, v) in zip(self.blocks, cache):
            h = block(h, k, v)
        return self.action_out_proj(self.out_norm(h[:, 1:]))  # (B, H, A)


class VelocityNetwork(nn.Module):
    """MLP baseline: [mean-pooled visual tokens, proprio, language] + flat action chunk + t -> velocity."""

    def __init__(self, c: FlowPolicyConfig):
        super().__init__()
        self.config, w = c, c.mlp_hidden
        self.cond = nn.Linear(c.vision_dim + c.proprio_dim + c.language_dim, w)
        self.time_embedding = TimeEmbedding(c.d_model)
        self.action_in_proj = nn.Linear(c.horizon * c.action_dim + c.d_model, w)
        layers = []
        for _ in range(c.mlp_depth):
            layers += [nn.SiLU(), nn.Linear(w, w)]
        self.net = nn.Sequential(*layers, nn.SiLU())
        self.action_out_proj = nn.Linear(w, c.horizon * c.action_dim)

    def context_kv(self, tokens: torch.Tensor, proprio: torch.Tensor, language: torch.Tensor) -> ContextCache:
        cond = self.cond(torch.cat([tokens.mean(1), proprio, language], dim=-1))  # (B, W)
        return [(cond, cond)]  # one 'pair' so the cache type matches the transformer's

    def velocity(self, x: torch.Tensor, t, cache: ContextCache) -> torch.Tensor:
        b = x.shape[0]
        temb = self.time_embedding(_time_vector(t, b, x))  # (B, D)
        h = self.action_in_proj(torch.cat([x.reshape(b, -1), temb], dim=-1)) + cache[0][0]  # (B, W)
        return self.action_out_proj(self.net(h)).reshape(x.shape)  # (B, H, A)


EXPERTS = {'transformer': FlowActionExpert, 'mlp': VelocityNetwork}


class FlowPolicy(nn.Module):
    def __init__(self, config: FlowPolicyConfig, pretrained_vision: bool = True):
        super().__init__()
        self.config = c = config
        self.vision = VisionEncoder(c, pretrained=pretrained_vision)
        self.expert = EXPERTS[c.expert](c)
        self.register_buffer('proprio_mean', torch.zeros(c.proprio_dim))
        self.register_buffer('proprio_std', torch.ones(c.proprio_dim))
        self.register_buffer('action_mean', torch.zeros(c.action_dim))
        self.register_buffer('action_std', torch.ones(c.action_dim))

    # -- normalisation ---------------------------------------------------------------------------
    def set_normalizer(self, proprio: NormalizerStats, action: NormalizerStats) -> None:
        for name, stats, dim in (('proprio', proprio, self.config.proprio_dim), ('action', action, self.config.action_dim)):
            if len(stats.mean) != dim:
                raise ValueError(f'{name} stats have {len(stats.mean)} dims, expected {dim}')
            getattr(self, f'{name}_mean').copy_(torch.tensor(stats.mean))
            getattr(self, f'{name}_std').copy_(torch.tensor(stats.std))

    def normalizer_stats(self) -> dict[str, NormalizerStats]:
        return {n: NormalizerStats(getattr(self, f'{n}_mean').tolist(), getattr(self, f'{n}_std').tolist())
                for n in ('proprio', 'action')}

    # -- inference -------------------------------------------------------------------------------
    def _check_inputs(self, tokens, proprio, language, batch=None):
        c = self.config
        _check(tokens, (batch, c.num_visual_tokens, c.vision_dim), 'visual_tokens')
        b = int(tokens.shape[0])
        _check(proprio, (b, c.proprio_dim), 'proprio')
        _check(language, (b, c.language_dim), 'language')
        return b

    def context_kv(self, visual_tokens: torch.Tensor, proprio: torch.Tensor, language: torch.Tensor) -> ContextCache:
        """Per-layer context K/V, computed once per call; proprio is raw (normalised here)."""
        self._check_inputs(visual_tokens, proprio, language)
        p = normalize(proprio, self.proprio_mean, self.proprio_std)
        return self.expert.context_kv(visual_tokens, p, language)

    def velocity(self, x_t: torch.Tensor, t, cache: ContextCache) -> torch.Tensor:
        """Velocity in normalised action space; x_t (B, H, A), t float or (B,)/(1,) tensor."""
        return self.expert.velocity(x_t, t, cache)

    def sample_actions(self, visual_tokens: torch.Tensor, proprio: torch.Tensor, language: torch.Tensor,
                       noise: torch.Tensor, steps: int | None = None, method: str | None = None) -> torch.Tensor:
        """Integrate from noise (t=1) to actions (t=0); returns raw actions (B, H, A). `noise` is standard normal;
        the sampler starts from it times `config.noise_scale`."""
        c = self.config
        b = self._check_inputs(visual_tokens, proprio, language)
        _check(noise, (b, c.horizon, c.action_dim), 'noise')
        if c.noise_scale != 1.0:  # (1.0 leaves the exported graphs of earlier checkpoints as they were)
            noise = noise * c.noise_scale  # (B, H, A)
        cache = self.context_kv(visual_tokens, proprio, language)
        x = fm.integrate(lambda x, t: self.velocity(x, t, cache), noise, steps or c.num_steps, method or c.method)
        return unnormalize(x, self.action_mean, self.action_std)

    def forward(self, visual_tokens, proprio, language, noise):
        return self.sample_actions(visual_tokens, proprio, language, noise)

    # -- training --------------------------------------------------------------------------------
    def compute_loss(self, batch: dict, generator: torch.Generator | None = None) -> FlowLossOutput:
        """batch: actions (B, H, A) raw, proprio (B, 7), language (B, 384), and visual_tokens (B, N, C) or
        images (B, 3, S, S*n); optional action_mask (B, H), noise (B, H, A), time (B,)."""
        c = self.config
        tokens = batch['visual_tokens'] if 'visual_tokens' in batch else self.vision(batch['images'])
        b = self._check_inputs(tokens, batch['proprio'], batch['language'])
        actions = batch['actions']
        _check(actions, (b, c.horizon, c.action_dim), 'actions')
        a = normalize(actions, self.action_mean, self.action_std)
        noise = batch.get('noise')
        if noise is None:
            noise = torch.randn(a.shape, device=a.device, generator=generator)
        t = batch.get('time')
        if t is None:
            t = fm.sample_time(b, c.time_distribution, a.device, generator)
        x_t = fm.interpolate(a, noise, t[:, None, None])  # (B, H, A)
        cache = self.context_kv(tokens, batch['proprio'], batch['language'])
        err = (self.velocity(x_t, t, cache) - fm.target_velocity(a, noise)) ** 2  # (B, H, A)
        mask = batch.get('action_mask')
        w = torch.ones(err.shape[:2], device=err.device) if mask is None else mask.to(err.dtype)  # (B, H)
        denom = w.sum().clamp_min(1.0)
        per_dim = (err * w[..., None]).sum((0, 1)) / denom  # (A,)
        return FlowLossOutput(loss=per_dim.mean(), per_dim=per_dim)

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]
