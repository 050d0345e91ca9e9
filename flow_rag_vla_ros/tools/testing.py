"""Small real artefacts for tests and smoke runs: a randomly initialised checkpoint in the shipped format, and a
stack node run as its own process."""
from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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
    # recorded as `train` records them: a multi-camera checkpoint must say which cameras the sim renders
    cameras = ['scene', 'side', 'front', 'top'][:config.n_cameras]
    return save_checkpoint(policy, Path(directory), extra={'cameras': cameras}, instructions=instructions)


@contextmanager
def node_process(module: str, params: dict[str, str], log: Path, ready: bytes,
                 timeout_s: float = 60.0) -> Iterator[subprocess.Popen]:
    """A stack node run as its own process (`python -m MODULE --ros-args -p NAME:=VALUE ...`, its main() as
    `ros2 launch` starts it), yielded once `ready` is in its log; terminated on exit. Fails with the log when
    the process dies or `ready` does not come within `timeout_s`."""
    args = [a for name, value in params.items() for a in ('-p', f'{name}:={value}')]
    with open(log, 'wb') as out:
        proc = subprocess.Popen([sys.executable, '-m', module, '--ros-args', *args], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while ready not in log.read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)
