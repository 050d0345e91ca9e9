"""On-disk episode dataset (docs/DESIGN.md): DIR/meta.json + DIR/<task>/episode_NNNNN.npz.

Files are written to a temporary name and renamed, so a reader (e.g. a trainer started while
collection runs) never sees a half-written episode or meta.json. Everything loads with
allow_pickle=False (strings are stored as numpy unicode scalars).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from flow_rag_vla_ros.core.spec import ACTION_DIM, PROPRIO_DIM, TASKS


@dataclass
class Episode:
    images: np.ndarray      # (T, H, W, 3) uint8
    proprio: np.ndarray     # (T, 7) float32
    actions: np.ndarray     # (T, 4) float32
    success: bool
    instruction: str
    task: str
    seed: int
    failure_type: str       # '' on success
    chunks: np.ndarray | None = None  # (T, H, 4) float32, relabelled data only: the expert's next H actions per state

    def __post_init__(self):
        t = len(self.actions)
        if self.chunks is not None and (self.chunks.ndim != 3 or self.chunks.shape[0] != t
                                        or self.chunks.shape[2] != ACTION_DIM):
            raise ValueError(f'chunks must be (T, H, {ACTION_DIM}) with T={t}, got {self.chunks.shape}')
        if self.images.ndim != 4 or self.images.dtype != np.uint8 or len(self.images) != t:
            raise ValueError(f'images must be (T,H,W,3) uint8 with T={t}, got {self.images.shape} {self.images.dtype}')
        if self.proprio.shape != (t, PROPRIO_DIM) or self.actions.shape != (t, ACTION_DIM):
            raise ValueError(f'proprio {self.proprio.shape} / actions {self.actions.shape} do not match T={t}')


def episode_path(root: str | os.PathLike, task: str, index: int) -> Path:
    return Path(root) / task / f'episode_{index:05d}.npz'


def episode_arrays(episode: Episode) -> dict[str, np.ndarray]:
    """Every field but the images as the arrays an episode file stores (scripts/pack_dataset.py stores them too)."""
    extra = {} if episode.chunks is None else {'chunks': episode.chunks.astype(np.float32)}
    return dict(proprio=episode.proprio.astype(np.float32), actions=episode.actions.astype(np.float32),
                success=np.array(bool(episode.success)), instruction=np.array(episode.instruction),
                task=np.array(episode.task), seed=np.array(int(episode.seed), dtype=np.int64),
                failure_type=np.array(episode.failure_type), **extra)


def episode_from_arrays(z, images: np.ndarray) -> Episode:
    """The Episode whose `episode_arrays` are in `z` (an npz file or a dict), with these images."""
    return Episode(images=images, proprio=z['proprio'], actions=z['actions'], success=bool(z['success']),
                   instruction=str(z['instruction']), task=str(z['task']), seed=int(z['seed']),
                   failure_type=str(z['failure_type']), chunks=z['chunks'] if 'chunks' in z else None)


def write_episode(root: str | os.PathLike, episode: Episode, index: int) -> Path:
    path = episode_path(root, episode.task, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    with open(tmp, 'wb') as f:  # a file object: np.savez would otherwise append '.npz' to the temp name
        np.savez_compressed(f, images=episode.images.astype(np.uint8), **episode_arrays(episode))
    os.replace(tmp, path)
    return path


def read_episode(path: str | os.PathLike) -> Episode:
    with np.load(path, allow_pickle=False) as z:
        return episode_from_arrays(z, z['images'])


def iter_episodes(root: str | os.PathLike, task: str | None = None, success_only: bool = False) -> Iterator[Episode]:
    """Episodes in file order, for one task or all tasks found under root."""
    tasks = [task] if task else [t for t in TASKS if (Path(root) / t).is_dir()]
    for t in tasks:
        for path in sorted((Path(root) / t).glob('episode_*.npz')):
            ep = read_episode(path)
            if ep.success or not success_only:
                yield ep


def load_meta(root: str | os.PathLike) -> dict:
    path = Path(root) / 'meta.json'
    return json.loads(path.read_text()) if path.exists() else {}


def update_meta(root: str | os.PathLike, task: str, stats: dict, **fields) -> dict:
    """Merge one task's stats into meta.json (other tasks' entries are kept)."""
    meta = load_meta(root)
    meta.setdefault('tasks', {})[task] = stats
    meta.update(fields)
    meta['task_list'] = [t for t in TASKS if t in meta['tasks']]
    path = Path(root) / 'meta.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name('meta.json.tmp')
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return meta


# -- collection -------------------------------------------------------------------------------------
def run_expert_episode(env, task: str, seed: int, expert_config=None) -> Episode:
    """One expert episode; the image/proprio recorded at step t is what the action at t was chosen on."""
    from flow_rag_vla_ros.sim.experts import make_expert
    obs = env.reset(seed=seed)
    expert = make_expert(task, np.random.default_rng(seed), expert_config)
    state = env.privileged_state()
    images, proprio, actions = [], [], []
    while True:
        action = expert.act(state)
        images.append(obs.image)
        proprio.append(obs.proprio)
        actions.append(action)
        obs, info = env.step(action)
        state = info.state
        if info.done:
            break
    return Episode(np.stack(images), np.stack(proprio), np.stack(actions), info.success, obs.instruction, task,
                   seed, '' if info.success else info.failure_type)


_WORKER_ENV = None  # this worker process's env and expert settings (collect's pool initializer sets them)
_WORKER_EXPERT = None


def _worker_init(sim_config: dict, expert_config: dict | None = None) -> None:
    global _WORKER_ENV, _WORKER_EXPERT
    from flow_rag_vla_ros.core.config import from_dict
    from flow_rag_vla_ros.sim.experts import ExpertConfig
    from flow_rag_vla_ros.sim.panda_env import PandaEnv, SimConfig
    _WORKER_ENV = PandaEnv(from_dict(SimConfig, sim_config))
    _WORKER_EXPERT = from_dict(ExpertConfig, expert_config or {})


def _worker_episode(job: tuple[str, int, int]) -> dict:
    out_dir, index, seed = job
    ep = run_expert_episode(_WORKER_ENV, _WORKER_ENV.task, seed, _WORKER_EXPERT)
    write_episode(out_dir, ep, index)
    return {'success': ep.success, 'failure_type': ep.failure_type, 'steps': len(ep.actions)}


def collect(task: str, episodes: int, seed: int, out_dir: str | os.PathLike, sim_config=None,
            progress: bool = True, workers: int = 1, expert_config=None) -> dict:
    """Run the expert for `episodes` episodes (episode i uses seed + i) and write them under out_dir.

    Returns this task's stats (also merged into meta.json, with the expert settings when not the defaults).
    workers > 1 runs one env per process.
    """
    from flow_rag_vla_ros.sim.panda_env import DEFAULT_MAX_STEPS, SimConfig
    from tqdm import tqdm
    cfg = asdict(sim_config) if sim_config is not None else {}
    cfg['task'] = task
    cfg = asdict(SimConfig(**cfg))  # validate
    jobs = [(str(out_dir), i, seed + i) for i in range(episodes)]
    bar = tqdm(total=episodes, desc=f'collect {task}', disable=not progress, unit='ep')
    results = []
    expert = asdict(expert_config) if expert_config is not None else {}
    if workers <= 1:
        _worker_init(cfg, expert)
        for job in jobs:
            results.append(_worker_episode(job))
            bar.update()
    else:
        import multiprocessing as mp
        with mp.get_context('spawn').Pool(workers, _worker_init, (cfg, expert)) as pool:
            for r in pool.imap_unordered(_worker_episode, jobs, chunksize=4):
                results.append(r)
                bar.update()
    bar.close()
    ok = sum(r['success'] for r in results)
    stats = {'episodes': episodes, 'successes': ok, 'expert_success_rate': ok / max(episodes, 1),
             'steps': int(sum(r['steps'] for r in results)), 'seed': seed,
             'failure_types': dict(Counter(r['failure_type'] for r in results if not r['success']))}
    if expert:
        stats['expert'] = expert
    update_meta(out_dir, task, stats, image_size=cfg['image_size'], cameras=list(cfg['cameras']),
                fov_deg=cfg['fov_deg'], max_steps=cfg['max_steps'] or DEFAULT_MAX_STEPS, scenario=cfg['scenario'])
    return stats
