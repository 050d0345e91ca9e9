"""A small stand-in with FlowPolicy's API (docs/DESIGN.md, Model API), for backend tests that must not
depend on the real model: conv vision -> tokens; pi0-style expert with context K/V computed once per call
and reused by every Euler step; proprio/action normalisation buffers inside the module."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class StandInConfig:
    image_size: int = 32
    n_cameras: int = 1  # the frame is image_size x (image_size * n_cameras), as in FlowPolicyConfig
    vision_dim: int = 32
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    horizon: int = 8
    num_steps: int = 10
    proprio_dim: int = 7
    action_dim: int = 4
    language_dim: int = 384


class StandInVision(nn.Module):
    def __init__(self, c: StandInConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 16, 4, 4), nn.ReLU(), nn.Conv2d(16, c.vision_dim, 4, 4))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).flatten(2).transpose(1, 2)  # (B, N, C)


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.out = nn.Linear(d, d), nn.Linear(d, d)
        self.ctx_k, self.ctx_v = nn.Linear(d, d), nn.Linear(d, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def context(self, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split(self.ctx_k(ctx)), self.split(self.ctx_v(ctx))

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = self.split(self.q(self.norm1(x)))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v
        x = x + self.out(att.transpose(1, 2).reshape(x.shape))
        return x + self.mlp(self.norm2(x))


class ContextProjector(nn.Module):
    def __init__(self, c: StandInConfig):
        super().__init__()
        self.visual = nn.Linear(c.vision_dim, c.d_model)
        self.proprio = nn.Linear(c.proprio_dim, c.d_model)
        self.language = nn.Linear(c.language_dim, c.d_model)

    def forward(self, tokens, proprio, language):
        return torch.cat([self.visual(tokens), self.proprio(proprio)[:, None], self.language(language)[:, None]],
                         1)  # (B, N + 2, D)


class StandInPolicy(nn.Module):
    def __init__(self, config: StandInConfig | None = None):
        super().__init__()
        self.config = c = config or StandInConfig()
        self.vision = StandInVision(c)
        self.context_projector = ContextProjector(c)
        self.action_in_proj = nn.Linear(c.action_dim + c.d_model, c.d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(1, c.horizon, c.d_model))
        self.blocks = nn.ModuleList(Block(c.d_model, c.n_heads) for _ in range(c.n_layers))
        self.action_out_proj = nn.Linear(c.d_model, c.action_dim)
        self.register_buffer('proprio_mean', torch.linspace(-0.5, 0.5, c.proprio_dim))
        self.register_buffer('proprio_std', torch.linspace(0.5, 1.5, c.proprio_dim))
        self.register_buffer('action_mean', torch.zeros(c.action_dim))
        self.register_buffer('action_std', torch.full((c.action_dim,), 0.5))

    def context_kv(self, tokens, proprio, language):
        p = (proprio - self.proprio_mean) / self.proprio_std
        ctx = self.context_projector(tokens, p, language)
        return [blk.context(ctx) for blk in self.blocks]

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        half = self.config.d_model // 2
        freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        ang = t.reshape(-1, 1) * 1000.0 * freqs
        return torch.cat([ang.sin(), ang.cos()], -1)

    def velocity(self, x, t, kv):
        temb = self.time_embedding(t)[:, None].expand(x.shape[0], x.shape[1], -1)
        h = self.action_in_proj(torch.cat([x, temb], -1)) + self.pos
        for blk, (k, v) in zip(self.blocks, kv):
            h = blk(h, k, v)
        return self.action_out_proj(h)

    def sample_actions(self, visual_tokens, proprio, language, noise):
        kv = self.context_kv(visual_tokens, proprio, language)
        x, steps = noise, self.config.num_steps
        for i in range(steps):  # Euler from t=1 (noise) to t=0 (data)
            t = torch.full((x.shape[0],), 1.0 - i / steps, dtype=x.dtype, device=x.device)
            x = x - self.velocity(x, t, kv) / steps
        return x * self.action_std + self.action_mean


class DivergentVision(nn.Module):
    """Data-dependent Python branch: tracing freezes one side, so the export disagrees on other inputs."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scale = 2.0 if float(images.mean()) > 0 else -3.0
        return (images.flatten(2).transpose(1, 2) * scale)[:, :4]
