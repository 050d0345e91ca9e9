"""`flow-rag-vla train --config config/train_reach.yaml [--data DIR] [--out models/NAME] [--resume]`.

Pipeline: read successful episodes of the configured tasks (sim/dataset.py format) -> encode every frame
once with the frozen vision trunk into `DIR/features_<hash>.safetensors` (hash over the episode files, the
vision config and the augmentation settings; optional extra copies with random pixel shifts) -> train the
action expert on cached tokens (AdamW, warmup + cosine LR, grad clip), periodic validation loss on held-out
episodes -> write the checkpoint (core/checkpoint.py) -> roll the policy out in-process in PandaEnv with
temporal ensembling and report success rates. A fine-tuned or from-scratch backbone trains on images; with
`trunk_trainable_blocks` only the trunk's last blocks train, on cached activations of the ones before them.

Resuming: `out/training_state.safetensors` holds the full model state, the AdamW moment tensors and the
torch RNG state, `out/training_state.json` the step and optimizer hyper-parameters (no pickle).
Seeded: the same config and data give the same run.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from flow_rag_vla_ros.core.checkpoint import SAMPLER_FIELDS
from flow_rag_vla_ros.core.config import from_dict, param, require
from flow_rag_vla_ros.core.configuration_flow_policy import FlowPolicyConfig
from flow_rag_vla_ros.core.spec import INSTRUCTIONS, TASKS

STATE_FILE, STATE_JSON = 'training_state.safetensors', 'training_state.json'


@dataclass
class TrainConfig:
    data: str = param('data/demos', 'dataset directory')
    extra_data: list[str] = param([], 'more demonstration datasets recorded like data (same cameras and image size, '
                                      'checked): their successful episodes join data\'s')
    relabelled_data: list[str] = param([], 'datasets of policy rollouts labelled by the expert (flow-rag-vla '
                                           'dagger): every episode is used, whatever the policy\'s outcome')
    init_from: str = param('', 'checkpoint to start from (fine-tuning): its weights and normaliser stats are kept; '
                               'its policy config must equal this one')
    out: str = param('models/reach_v1', 'checkpoint directory')
    tasks: list[str] = param(['reach'], 'tasks to train on')
    seed: int = param(0, 'seed for init, batches, noise')
    steps: int = param(3000, 'optimizer steps')
    batch_size: int = param(128, 'batch size')
    lr: float = param(3e-4, 'peak learning rate')
    weight_decay: float = param(1e-4, 'AdamW weight decay')
    warmup: int = param(200, 'linear warmup steps')
    grad_clip: float = param(1.0, 'gradient norm clip')
    val_fraction: float = param(0.1, 'fraction of episodes held out for validation loss')
    val_every: int = param(500, 'validation period (steps)')
    save_every: int = param(1000, 'training-state save period (steps)')
    augment_copies: int = param(0, 'extra cached copies of every frame with a random pixel shift')
    augment_shift: int = param(4, 'max shift (px) of the augmented copies')
    image_shift: int = param(0, 'training on images (fine-tuned backbone): every sample of every batch has each '
                                'camera view shifted by up to this many px (edge-replicated; 0 = off)')
    freeze_backbone: bool = param(False, 'train only the expert on top of init_from\'s stored (fine-tuned) trunk: '
                                         'the trunk stays as it is and stored, its tokens are cached once')
    trunk_trainable_blocks: int = param(0, 'with freeze_backbone: the trunk\'s last N blocks train too, on cached '
                                           'activations of the blocks before them (a CPU can afford that; 0 = '
                                           'only the expert trains)')
    backbone_lr_scale: float = param(1.0, 'learning rate of a trained backbone relative to the expert\'s')
    backbone_batchnorm: str = param('frozen', 'frozen (a fine-tuned pretrained trunk keeps its BatchNorm running '
                                              'statistics, as while it was frozen) | train (update them)')
    max_episodes: int = param(0, 'episodes per task (0 = all)')
    eval_episodes: int = param(20, 'in-process rollouts per task after training (0 = skip)')
    eval_seed: int = param(100000, 'seed of the first evaluation episode (episode i: seed + i)')
    ensemble_decay: float = param(0.5, 'temporal ensembling: weight exp(-decay * age) per overlapping chunk')
    device: str = param('auto', 'auto (cuda if available) | cpu | cuda')

    def __post_init__(self):
        require(all(t in TASKS for t in self.tasks) and self.tasks, f'tasks must be a non-empty subset of {TASKS}')
        require(self.steps >= 1 and self.batch_size >= 1, 'steps and batch_size must be >= 1')
        require(0.0 <= self.val_fraction < 1.0, 'val_fraction in [0, 1)')
        require(self.augment_copies >= 0 and self.augment_shift >= 0 and self.image_shift >= 0,
                'augmentation settings must be >= 0')
        require(self.backbone_lr_scale >= 0.0, 'backbone_lr_scale must be >= 0')
        require(not (self.freeze_backbone and self.image_shift),
                'freeze_backbone trains on cached tokens: shift them with augment_copies, not image_shift')
        require(not self.freeze_backbone or bool(self.init_from),
                'freeze_backbone keeps init_from\'s trunk: set init_from')
        require(self.backbone_batchnorm in ('frozen', 'train'), 'backbone_batchnorm: frozen | train')
        require(self.trunk_trainable_blocks >= 0, 'trunk_trainable_blocks must be >= 0')
        require(not self.trunk_trainable_blocks or (self.freeze_backbone and self.backbone_batchnorm == 'frozen'),
                'trunk_trainable_blocks trains the last blocks on cached activations: set freeze_backbone, and '
                'keep backbone_batchnorm frozen (the cached blocks\' statistics cannot follow)')


def load_yaml(path: str | os.PathLike) -> tuple[FlowPolicyConfig, TrainConfig]:
    doc = yaml.safe_load(Path(path).read_text()) or {}
    return from_dict(FlowPolicyConfig, doc.get('policy')), from_dict(TrainConfig, doc.get('train'))


# -- data -----------------------------------------------------------------------------------------
def episode_files(data: Path, tasks, max_episodes: int = 0, required: bool = True) -> list[Path]:
    """Episode files of `tasks` under data; a task with none is an error when `required`, else skipped."""
    files = []
    for task in tasks:
        found = sorted((data / task).glob('episode_*.npz'))
        if not found and required:
            raise FileNotFoundError(f'no episodes for task {task!r} under {data}')
        files += found[:max_episodes] if max_episodes else found
    return files


def require_same_recording(data: Path, others: list[str]) -> None:
    """Datasets trained on together must have been rendered alike: other cameras or another image size would
    give frames the model reads differently (each view is resized to the model's size, so nothing else fails)."""
    from flow_rag_vla_ros.sim.dataset import load_meta
    want = {k: load_meta(data).get(k) for k in ('cameras', 'image_size')}
    for other in others:
        have = {k: load_meta(other).get(k) for k in want}
        require(have == want, f'{other} was recorded with {have}, {data} with {want}: train on datasets recorded alike')


def action_chunks(actions: np.ndarray, horizon: int) -> np.ndarray:
    """(T, A) -> (T, H, A): chunk i = actions[i:i+H]; past the end xyz = 0 (hold), gripper = last value."""
    t, a = actions.shape
    pad = np.zeros((horizon - 1, a), np.float32)
    pad[:, 3:] = actions[-1, 3:]
    padded = np.concatenate([actions, pad], axis=0)  # (T+H-1, A)
    idx = np.arange(t)[:, None] + np.arange(horizon)[None]  # (T, H)
    return padded[idx]


def shift_image(image: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
    """Random translation by up to max_shift px (edge-replicated), per camera view of width H."""
    h = image.shape[0]
    views = []
    for i in range(image.shape[1] // h):
        v = image[:, i * h:(i + 1) * h]
        dy, dx = rng.integers(-max_shift, max_shift + 1, size=2)
        p = np.pad(v, ((max_shift, max_shift), (max_shift, max_shift), (0, 0)), mode='edge')
        views.append(p[max_shift + dy:max_shift + dy + h, max_shift + dx:max_shift + dx + h])
    return np.concatenate(views, axis=1)


def shift_views(images: torch.Tensor, n_cameras: int, offsets: torch.Tensor, max_shift: int) -> torch.Tensor:
    """(B, 3, S, S*n) -> each camera view translated: view v of sample b is the window at `offsets[b, v]`
    (row, col in [0, 2*max_shift]) of the view edge-padded by max_shift, as shift_image does on one frame."""
    b, c, s, w = images.shape
    n = n_cameras
    views = images.reshape(b, c, s, n, s).permute(0, 3, 1, 2, 4).reshape(b * n, c, s, s)  # (B*n, 3, S, S)
    padded = F.pad(views, [max_shift] * 4, mode='replicate')  # (B*n, 3, S+2p, S+2p)
    grid = torch.arange(s, device=images.device)
    off = offsets.reshape(b * n, 2).to(images.device)
    rows = (off[:, 0, None] + grid)[:, None, :, None]  # (B*n, 1, S, 1)
    cols = (off[:, 1, None] + grid)[:, None, None, :]  # (B*n, 1, 1, S)
    batch = torch.arange(b * n, device=images.device)[:, None, None, None]
    chan = torch.arange(c, device=images.device)[None, :, None, None]
    out = padded[batch, chan, rows, cols]  # (B*n, 3, S, S)
    return out.reshape(b, n, c, s, s).permute(0, 2, 3, 1, 4).reshape(b, c, s, w)


def random_shift(images: torch.Tensor, n_cameras: int, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """DrQ-style augmentation (Kostrikov et al. 2020) for a backbone trained on images: a new random
    translation of up to max_shift px per sample and camera view."""
    if max_shift == 0:
        return images
    offsets = torch.randint(0, 2 * max_shift + 1, (images.shape[0], n_cameras, 2), generator=generator)
    return shift_views(images, n_cameras, offsets, max_shift)


def features_hash(files: list[Path], pc: FlowPolicyConfig, tc: TrainConfig, backbone: torch.nn.Module) -> str:
    """Names a token cache: the episode files, the vision settings and the trunk's weights (a fine-tuned trunk's
    tokens are not ImageNet's)."""
    h = hashlib.sha256()
    for key, value in backbone.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    for f in files:
        st = f.stat()
        h.update(f'{f.parent.name}/{f.name}:{st.st_size}:{int(st.st_mtime)}'.encode())
    vision = {k: getattr(pc, k) for k in ('image_size', 'n_cameras', 'backbone', 'trunk_blocks', 'image_mean', 'image_std')}
    trained = [tc.trunk_trainable_blocks] if tc.trunk_trainable_blocks else []  # earlier caches keep their names
    h.update(json.dumps([vision, tc.augment_copies, tc.augment_shift, tc.seed] + trained).encode())
    return h.hexdigest()[:16]


def build_dataset(policy, files: list[Path], pc: FlowPolicyConfig, tc: TrainConfig, data: Path, device: str,
                  progress: bool = True, relabelled: frozenset[Path] = frozenset()) -> dict[str, torch.Tensor]:
    """Cached (frozen vision) or raw-image training arrays for every frame of every successful demonstration
    and of every episode in `relabelled` (expert labels on the policy's own states are right whatever the outcome).

    Returns tokens (M*(1+copies), N, C) fp16 -- or, when the trunk's last tc.trunk_trainable_blocks blocks
    train, trunk_features (M*(1+copies), n, C', h', w') fp16 from the blocks before them -- or images
    (M, 3, S, S*n) fp32, and proprio (M, 7), chunks (M, H, 4), task (M,), episode (M,); row r of the cached
    arrays belongs to frame r % M."""
    from safetensors.torch import load_file, save_file
    from tqdm import tqdm

    from flow_rag_vla_ros.core.vision import preprocess
    cached = policy.vision.frozen
    cut = pc.trunk_blocks - tc.trunk_trainable_blocks  # blocks run once, here, when the last ones train
    key = 'trunk_features' if tc.trunk_trainable_blocks else 'tokens'
    path = data / f'features_{features_hash(files, pc, tc, policy.vision.backbone)}.safetensors' if cached else None
    if cached and path.exists():
        return load_file(str(path))
    rng = np.random.default_rng(tc.seed)
    proprio, chunks, task_ids, ep_ids, tokens, images = [], [], [], [], [[] for _ in range(1 + tc.augment_copies)], []
    for e, f in enumerate(tqdm(files, desc='encode' if cached else 'load', disable=not progress)):
        with np.load(f, allow_pickle=False) as z:
            if not bool(z['success']) and f not in relabelled:
                continue
            imgs, task = z['images'], str(z['task'])
            proprio.append(z['proprio'].astype(np.float32))
            if 'chunks' in z:  # relabelled data: the expert's own next H actions from each state (tools/dagger.py)
                require(z['chunks'].shape[1] == pc.horizon,
                        f'{f}: chunks of {z["chunks"].shape[1]} actions, the policy predicts {pc.horizon}')
                chunks.append(z['chunks'].astype(np.float32))
            else:
                chunks.append(action_chunks(z['actions'].astype(np.float32), pc.horizon))
        task_ids.append(np.full(len(imgs), TASKS.index(task)))
        ep_ids.append(np.full(len(imgs), e))
        for k in range(1 + tc.augment_copies if cached else 1):
            views = imgs if k == 0 else np.stack([shift_image(im, rng, tc.augment_shift) for im in imgs])
            x = torch.from_numpy(np.stack([preprocess(im, pc) for im in views]))  # (T, 3, S, S*n)
            if cached:
                with torch.inference_mode():
                    encoded = policy.vision.lower_features(x.to(device), cut) if tc.trunk_trainable_blocks \
                        else policy.vision(x.to(device))  # (T, n, C', h', w') or (T, N, C)
                    tokens[k].append(encoded.half().cpu())
            else:
                images.append(x)
    out = {'proprio': torch.from_numpy(np.concatenate(proprio)), 'chunks': torch.from_numpy(np.concatenate(chunks)),
           'task': torch.from_numpy(np.concatenate(task_ids)), 'episode': torch.from_numpy(np.concatenate(ep_ids))}
    if cached:
        out[key] = torch.cat([torch.cat(t) for t in tokens])
        save_file(out, str(path))
    else:
        out['images'] = torch.cat(images)
    return out


# config fields a fine-tuning run may set otherwise than its init_from checkpoint: they change what trains or
# how actions are sampled, not the weights' shapes or meaning (a frozen trunk can be fine-tuned from)
FINE_TUNE_FIELDS = ('frozen',) + SAMPLER_FIELDS


def init_policy(checkpoint: str, pc: FlowPolicyConfig, device: str):
    """The checkpoint's policy (weights + normaliser stats) to fine-tune; its config must be `pc` except for
    FINE_TUNE_FIELDS, which take pc's values (e.g. `frozen: false` fine-tunes the checkpoint's frozen trunk)."""
    from flow_rag_vla_ros.core.checkpoint import backbone_in_checkpoint, build_policy, load_checkpoint, load_config
    source_config = load_config(checkpoint)
    have, want = asdict(source_config), asdict(pc)
    differ = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k) and k not in FINE_TUNE_FIELDS)
    require(backbone_in_checkpoint(pc) or not backbone_in_checkpoint(source_config),
            f'init_from {checkpoint}: its trunk is trained and stored; `frozen: true` would load ImageNet\'s in its '
            'place. Keep `frozen: false` and set train.freeze_backbone to train only the expert')
    require(not differ, f'init_from {checkpoint}: policy config differs in {differ} '
                        f'(checkpoint {[have.get(k) for k in differ]}, config {[want.get(k) for k in differ]})')
    source = load_checkpoint(checkpoint, 'cpu')
    if asdict(source.config) == want:
        return source.to(device).train()
    policy = build_policy(pc)
    policy.load_state_dict(source.state_dict())  # the trunk too: ImageNet's where the source kept it frozen
    return policy.to(device).train()


def freeze_batchnorm(policy) -> None:
    """BatchNorm layers of the vision backbone to eval mode (running statistics kept, affine weights still train)."""
    for m in policy.vision.backbone.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


# -- training state (no pickle) --------------------------------------------------------------------
def save_training_state(out: Path, policy, optimizer, step: int) -> None:
    from safetensors.torch import save_file
    osd = optimizer.state_dict()
    tensors = {f'model.{k}': v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    for idx, st in osd['state'].items():
        for name, v in st.items():
            tensors[f'optim.{idx}.{name}'] = torch.as_tensor(v).detach().cpu().contiguous()
    tensors['rng.torch'] = torch.get_rng_state()
    save_file(tensors, str(out / STATE_FILE))
    (out / STATE_JSON).write_text(json.dumps({'step': step, 'param_groups': osd['param_groups']}, indent=2))


def load_training_state(out: Path, policy, optimizer) -> int:
    from safetensors.torch import load_file
    tensors = load_file(str(out / STATE_FILE))
    meta = json.loads((out / STATE_JSON).read_text())
    policy.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith('model.')})
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith('optim.'):
            _, idx, name = k.split('.', 2)
            state.setdefault(int(idx), {})[name] = v
    optimizer.load_state_dict({'state': state, 'param_groups': meta['param_groups']})
    torch.set_rng_state(tensors['rng.torch'])
    return int(meta['step'])


def lr_at(step: int, tc: TrainConfig) -> float:
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    frac = (step - tc.warmup) / max(1, tc.steps - tc.warmup)
    return tc.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


# -- in-process evaluation with temporal ensembling ------------------------------------------------
class TemporalEnsembler:
    """Re-plan every step; the command for step k averages every stored chunk's prediction for k with
    weights exp(-decay * age) (age 0 = the newest chunk)."""

    def __init__(self, horizon: int, decay: float):
        self.horizon, self.decay = horizon, decay
        self.chunks: list[tuple[int, np.ndarray]] = []  # (start step, (H, A))

    def reset(self) -> None:
        self.chunks = []

    def add(self, step: int, chunk: np.ndarray) -> np.ndarray:
        self.chunks = [(s, c) for s, c in self.chunks if step - s < self.horizon] + [(step, np.asarray(chunk))]
        preds = np.stack([c[step - s] for s, c in self.chunks])  # (K, A) oldest first
        ages = np.array([step - s for s, _ in self.chunks], dtype=np.float64)
        w = np.exp(-self.decay * ages)
        return (w[:, None] * preds).sum(0) / w.sum()


def evaluate_in_process(policy, task: str, episodes: int, seed: int, language: np.ndarray, cameras=('scene',),
                        decay: float = 0.5, device: str = 'cpu', progress: bool = False, recorder=None,
                        max_steps: int = 0, scenario: str = '') -> dict:
    """Success rate of the policy over `episodes` PandaEnv episodes (episode i: seed + i).

    `recorder` (optional, e.g. tools/dagger.py) sees every rollout: `recorder.start(env, seed)` after each reset,
    `recorder.record(obs, env, tokens)` before each step (the state the next action is chosen in, and its visual
    tokens (N, C) as the policy computed them) and `recorder.end(outcome)` when the episode is done."""
    from tqdm import tqdm

    from flow_rag_vla_ros.core.vision import preprocess
    from flow_rag_vla_ros.sim.panda_env import PandaEnv, SimConfig
    c = policy.config
    env = PandaEnv(SimConfig(task=task, image_size=c.image_size, cameras=list(cameras), max_steps=max_steps,
                             scenario=scenario))
    ens = TemporalEnsembler(c.horizon, decay)
    lang = torch.from_numpy(np.asarray(language, np.float32)[None]).to(device)  # (1, 384)
    outcomes = []
    policy.eval()
    try:
        for i in tqdm(range(episodes), desc=f'eval {task}', disable=not progress):
            obs, ens_rng = env.reset(seed=seed + i), np.random.default_rng(seed + i)
            ens.reset()
            if recorder is not None:
                recorder.start(env, seed + i)
            while True:
                with torch.inference_mode():
                    img = torch.from_numpy(preprocess(obs.image, c)[None]).to(device)
                    tok = policy.vision(img)
                    noise = torch.from_numpy(ens_rng.standard_normal((1, c.horizon, c.action_dim)).astype(np.float32))
                    chunk = policy.sample_actions(tok, torch.from_numpy(obs.proprio[None]).to(device), lang,
                                                  noise.to(device))[0].cpu().numpy()
                if recorder is not None:
                    recorder.record(obs, env, tok[0].cpu().numpy())
                obs, info = env.step(np.clip(ens.add(obs.step, chunk), -1.0, 1.0))
                if info.done:
                    outcomes.append({'seed': seed + i, 'success': info.success, 'steps': obs.step,
                                     'failure_type': info.failure_type})
                    if recorder is not None:
                        recorder.end(outcomes[-1])
                    break
    finally:
        env.close()
    succ = [o for o in outcomes if o['success']]
    return {'task': task, 'episodes': episodes, 'seed': seed, 'success_rate': len(succ) / max(1, episodes),
            'mean_steps_to_success': float(np.mean([o['steps'] for o in succ])) if succ else None,
            'outcomes': outcomes}


# -- main -----------------------------------------------------------------------------------------
def train(pc: FlowPolicyConfig, tc: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    from tqdm import tqdm

    from flow_rag_vla_ros.core.checkpoint import save_checkpoint
    from flow_rag_vla_ros.core.language import InstructionEmbedder
    from flow_rag_vla_ros.core.modeling_flow_policy import FlowPolicy
    from flow_rag_vla_ros.core.normalizer import NormalizerStats
    from flow_rag_vla_ros.sim.dataset import load_meta
    device = ('cuda' if torch.cuda.is_available() else 'cpu') if tc.device == 'auto' else tc.device
    if device.startswith('cuda'):  # fixed shapes every step: let cuDNN pick its fastest convolutions
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(tc.seed)
    data, out = Path(tc.data), Path(tc.out)
    out.mkdir(parents=True, exist_ok=True)
    policy = FlowPolicy(pc).to(device) if not tc.init_from else init_policy(tc.init_from, pc, device)
    if tc.trunk_trainable_blocks:
        policy.vision.train_last_blocks(tc.trunk_trainable_blocks)
    elif tc.freeze_backbone:
        policy.vision.freeze()
    cut = pc.trunk_blocks - tc.trunk_trainable_blocks
    require_same_recording(data, tc.extra_data)
    more = [f for d in tc.extra_data for f in episode_files(Path(d), tc.tasks, required=False)]
    relabelled = [f for d in tc.relabelled_data for f in episode_files(Path(d), tc.tasks, required=False)]
    files = episode_files(data, tc.tasks, tc.max_episodes) + more + relabelled
    ds = build_dataset(policy, files, pc, tc, data, device, progress, frozenset(relabelled))
    m = len(ds['proprio'])
    # a fine-tuned model keeps the instruction vectors it was trained with (its cache; MiniLM only for new ones)
    embedder = InstructionEmbedder.from_checkpoint(tc.init_from) if tc.init_from else InstructionEmbedder()
    lang_table = torch.from_numpy(embedder.embed_many([INSTRUCTIONS[t] for t in TASKS])).to(device)  # (n_tasks, 384)
    if not tc.init_from:  # a fine-tuned model keeps its normaliser: the weights were learned in its units
        policy.set_normalizer(NormalizerStats.from_data(ds['proprio'].numpy()),
                              NormalizerStats.from_data(ds['chunks'].numpy()))
    # episode-level split
    episodes = ds['episode'].unique().numpy()
    rng = np.random.default_rng(tc.seed)
    val_eps = set(rng.choice(episodes, size=int(round(tc.val_fraction * len(episodes))), replace=False).tolist())
    is_val = torch.tensor([int(e) in val_eps for e in ds['episode']])
    train_idx, val_idx = torch.nonzero(~is_val)[:, 0], torch.nonzero(is_val)[:, 0]
    cached = next((k for k in ('tokens', 'trunk_features') if k in ds), None)
    copies = len(ds[cached]) // m if cached else 1
    if device != 'cpu':  # a GPU holds the whole dataset (images included): no host-to-device copy per step
        ds = {k: v.to(device) for k, v in ds.items()}

    def batch_of(idx: torch.Tensor, copy: torch.Tensor | None = None, shift: torch.Generator | None = None) -> dict:
        idx = idx.to(ds['proprio'].device)
        b = {'proprio': ds['proprio'][idx], 'actions': ds['chunks'][idx], 'language': lang_table[ds['task'][idx]]}
        if cached:
            row = idx if copy is None else idx + copy.to(idx.device) * m
            b['visual_tokens'] = ds[cached][row].float().to(device)
            if cached == 'trunk_features':  # the trunk's trained blocks, with gradients
                b['visual_tokens'] = policy.vision.tokens_from_lower(b['visual_tokens'], cut)  # (B, N, C)
        else:
            b['images'] = ds['images'][idx]
            if shift is not None:
                b['images'] = random_shift(b['images'], pc.n_cameras, tc.image_shift, shift)
        return {k: v.to(device) for k, v in b.items()}

    backbone = {id(p) for p in policy.vision.backbone.parameters()}
    groups = [{'params': [p for p in policy.trainable_parameters() if id(p) not in backbone], 'lr_scale': 1.0},
              {'params': [p for p in policy.trainable_parameters() if id(p) in backbone],
               'lr_scale': tc.backbone_lr_scale}]
    optimizer = torch.optim.AdamW([g for g in groups if g['params']], lr=tc.lr, weight_decay=tc.weight_decay)
    step = load_training_state(out, policy, optimizer) if resume and (out / STATE_FILE).exists() else 0
    gen = torch.Generator().manual_seed(tc.seed + step)
    history = []

    def validate() -> float:
        if len(val_idx) == 0:
            return float('nan')
        policy.eval()
        vg, total, n = torch.Generator(device=device).manual_seed(1234), 0.0, 0
        with torch.no_grad():
            for s in range(0, len(val_idx), 512):
                idx = val_idx[s:s + 512]
                total += float(policy.compute_loss(batch_of(idx), generator=vg).loss) * len(idx)
                n += len(idx)
        train_mode()
        return total / n

    def train_mode() -> None:
        policy.train()
        if tc.backbone_batchnorm == 'frozen':
            freeze_batchnorm(policy)

    train_mode()
    bar = tqdm(range(step, tc.steps), desc='train', disable=not progress, initial=step, total=tc.steps)
    t0, loss_ema = time.time(), None
    for step in bar:
        for g in optimizer.param_groups:
            g['lr'] = lr_at(step, tc) * g.get('lr_scale', 1.0)  # a pre-scale training state has none
        pick = torch.randint(len(train_idx), (tc.batch_size,), generator=gen)
        copy = torch.randint(copies, (tc.batch_size,), generator=gen)
        loss = policy.compute_loss(batch_of(train_idx[pick], copy, gen if tc.image_shift else None)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.trainable_parameters(), tc.grad_clip)
        optimizer.step()
        loss_value = loss.item()
        loss_ema = loss_value if loss_ema is None else 0.98 * loss_ema + 0.02 * loss_value
        bar.set_postfix(loss=f'{loss_ema:.4f}')
        if (step + 1) % tc.val_every == 0 or step + 1 == tc.steps:
            history.append({'step': step + 1, 'train_loss': loss_ema, 'val_loss': validate(),
                            'seconds': round(time.time() - t0, 1)})
            bar.write(json.dumps(history[-1]))
        if (step + 1) % tc.save_every == 0:
            save_training_state(out, policy, optimizer, step + 1)
    save_training_state(out, policy, optimizer, tc.steps)
    meta = load_meta(data)
    cameras = meta.get('cameras', ['scene'])
    instructions = {INSTRUCTIONS[t]: embedder.embed(INSTRUCTIONS[t]) for t in TASKS}
    extra = {'train': asdict(tc), 'history': history, 'frames': m, 'episodes': len(episodes),
             'cameras': cameras, 'train_seconds': round(time.time() - t0, 1), 'device': device}
    save_checkpoint(policy, out, extra, instructions)
    results = {}
    for task in tc.tasks if tc.eval_episodes else []:
        r = evaluate_in_process(policy, task, tc.eval_episodes, tc.eval_seed, instructions[INSTRUCTIONS[task]],
                                cameras, tc.ensemble_decay, device, progress)
        results[task] = {k: v for k, v in r.items() if k != 'outcomes'}
    if results:
        extra['eval_in_process'] = results
        save_checkpoint(policy, out, extra, instructions)
    return {'out': str(out), 'history': history, 'eval': results}


def register(subparsers) -> None:
    p = subparsers.add_parser('train', help='train the flow policy')
    p.add_argument('--config', required=True, help='YAML with `policy:` (FlowPolicyConfig) and `train:` sections')
    p.add_argument('--data', help='dataset directory (overrides train.data)')
    p.add_argument('--out', help='checkpoint directory (overrides train.out)')
    p.add_argument('--steps', type=int, help='override train.steps')
    p.add_argument('--relabelled-data', nargs='*', metavar='DIR',
                   help='override train.relabelled_data (no DIR: none, e.g. the demonstrations-only control)')
    p.add_argument('--eval-episodes', type=int, help='override train.eval_episodes')
    p.add_argument('--set', nargs='*', action='extend', default=[], metavar='SECTION.FIELD=VALUE',
                   help='any other override, e.g. train.init_from=DIR policy.noise_scale=0.25 (value parsed as YAML)')
    p.add_argument('--resume', action='store_true', help='continue from out/training_state.*')
    p.add_argument('--no-progress', action='store_true')
    p.set_defaults(func=run)


def configs_from_args(args: argparse.Namespace) -> tuple[FlowPolicyConfig, TrainConfig]:
    """The YAML's configs with the command line's overrides (flags, then `--set`) applied and validated."""
    from flow_rag_vla_ros.launcher import parse_overrides
    pc, tc = load_yaml(args.config)
    sets = parse_overrides(args.set)
    unknown = sorted(set(sets) - {'policy', 'train'})
    if unknown:
        raise SystemExit(f'train --set: sections are policy and train, not {unknown}')
    overrides = {'data': args.data, 'out': args.out, 'steps': args.steps, 'eval_episodes': args.eval_episodes,
                 'relabelled_data': args.relabelled_data}
    pc = from_dict(FlowPolicyConfig, {**asdict(pc), **sets.get('policy', {})})
    tc = from_dict(TrainConfig, {**asdict(tc), **sets.get('train', {}),
                                 **{k: v for k, v in overrides.items() if v is not None}})
    return pc, tc


def run(args: argparse.Namespace) -> int:
    pc, tc = configs_from_args(args)
    result = train(pc, tc, resume=args.resume, progress=not args.no_progress)
    print(json.dumps({'out': result['out'], 'final': result['history'][-1] if result['history'] else None,
                      'eval': result['eval']}, indent=2))
    return 0
