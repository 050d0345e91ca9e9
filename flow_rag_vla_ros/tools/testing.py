"""Small real artefacts for tests and smoke runs: a randomly initialised checkpoint in the shipped format."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from flow_rag_vla_ros.core.spec import INSTRUCTIONS


def make_tiny_checkpoint(directory: str | Path, seed: int = 0, **config_overrides) -> Path:
    """A small policy (small CNN backbone, narrow expert), random weights, real checkpoint layout.

    Instruction embeddings are random unit vectors, so loading it never needs the sentence model.
    """
    import torch

    from flow_rag_vla_ros.core.checkpoint import build_policy, save_checkpoint
    from flow_rag_vla_ros.core.configuration_flow_policy import FlowPolicyConfig

    torch.manual_seed(seed)
    config = FlowPolicyConfig(**{'backbone': 'small_cnn', 'small_cnn_channels': 16, 'd_model': 32, 'n_layers': 1,
                                 'n_heads': 2, 'num_steps': 3, **config_overrides})
    policy = build_policy(config).eval()
    rng = np.random.default_rng(seed)
    instructions = {text: (v / np.linalg.norm(v)).astype(np.float32)
                    for text, v in ((t, rng.standard_normal(config.language_dim)) for t in INSTRUCTIONS.values())}
    return save_checkpoint(policy, Path(directory), instructions=instructions)
