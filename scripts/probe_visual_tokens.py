"""Do the frozen visual tokens say where the Push cube and target are? A linear probe, cross-validated by episode.

Issue 3 asks why Push stays near 0.6 while the scripted expert gets 0.94; README names finer visual tokens as
an untried fix. This measures the premise without training a policy: ridge regression from the tokens of a
trunk depth (EfficientNet-Lite0 blocks, frozen ImageNet weights, the shipped preprocessing) to the cube's and
the target's table position, on the Push demonstrations. The positions come from replaying each episode's
stored actions from its seed in the sim (checked against the stored images). A linear probe is a lower bound
on what the policy's attention can read out; the comparison between depths is the point.

    .venv/bin/python scripts/probe_visual_tokens.py --data data/demos_2cam_base --json out.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import GroupKFold, cross_val_predict

from flow_rag_vla_ros.core.checkpoint import load_config
from flow_rag_vla_ros.core.preprocess import preprocess
from flow_rag_vla_ros.core.vision import VisionEncoder
from flow_rag_vla_ros.sim.panda_env import PandaEnv, SimConfig

TARGETS = ('cube_xy', 'target_xy', 'target_minus_cube_xy')


def replay_positions(env: PandaEnv, episode: np.lib.npyio.NpzFile, check_images: bool) -> np.ndarray:
    """(T, 4): cube xy and target xy before each stored action, by replaying the actions from the seed."""
    obs = env.reset(seed=int(episode['seed']))
    images, actions = episode['images'], episode['actions']
    out = np.zeros((len(actions), 4), np.float32)
    for t, action in enumerate(actions):
        if check_images and t in (0, len(actions) - 1) and not np.array_equal(obs.image, images[t]):
            raise RuntimeError(f'replayed frame {t} of seed {int(episode["seed"])} differs from the stored one')
        state = env.privileged_state()
        out[t] = (*state['object_pos'][:2], *state['goal_pos'][:2])
        obs, _ = env.step(action)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', default='data/demos_2cam_base')
    ap.add_argument('--checkpoint', default='models/vla_v6_ns025', help='preprocessing and cameras from here')
    ap.add_argument('--cameras', nargs='+', default=['scene', 'side'])
    ap.add_argument('--depths', nargs='+', type=int, default=[5, 8, 11],
                    help='trunk blocks: 5 = stride 8 (12x12x40 per camera at 96 px), 8 = stride 16 (6x6x80), '
                         '11 = the shipped tokens (6x6x112)')
    ap.add_argument('--episodes', type=int, default=600)
    ap.add_argument('--frames-per-episode', type=int, default=3, help='evenly spaced, first and last included')
    ap.add_argument('--json', default='')
    args = ap.parse_args()
    torch.manual_seed(0)
    pc = load_config(args.checkpoint)
    files = sorted(Path(args.data, 'push').glob('episode_*.npz'))[:args.episodes]
    config = SimConfig(task='push', cameras=args.cameras, image_size=pc.image_size)
    checked_env = PandaEnv(config)  # renders: the first episodes' frames are compared with the stored ones
    env = PandaEnv(dataclasses.replace(config, render=False))  # positions only (rendering does not touch physics)
    frames, positions, groups = [], [], []
    for e, f in enumerate(files):
        with np.load(f, allow_pickle=False) as z:
            if not bool(z['success']):
                continue
            pos = replay_positions(checked_env if e < 20 else env, z, check_images=e < 20)
            picks = np.unique(np.linspace(0, len(pos) - 1, args.frames_per_episode).round().astype(int))
            frames += [preprocess(z['images'][t], pc) for t in picks]  # (3, S, S*n) each
            positions.append(pos[picks])
            groups += [e] * len(picks)
    env.close()
    checked_env.close()
    pos = np.concatenate(positions)  # (M, 4)
    y = {'cube_xy': pos[:, :2], 'target_xy': pos[:, 2:], 'target_minus_cube_xy': pos[:, 2:] - pos[:, :2]}
    x_images = torch.from_numpy(np.stack(frames))  # (M, 3, S, S*n)
    groups = np.asarray(groups)
    report = {'episodes': int(len(np.unique(groups))), 'frames': int(len(groups)), 'depths': {},
              'std_cm': {k: float(np.sqrt(((v - v.mean(0)) ** 2).sum(1).mean()) * 100) for k, v in y.items()}}
    for depth in args.depths:
        encoder = VisionEncoder(dataclasses.replace(pc, trunk_blocks=depth)).eval()
        with torch.inference_mode():
            tokens = torch.cat([encoder(b) for b in x_images.split(64)])  # (M, N, C)
        x = tokens.flatten(1).numpy().astype(np.float64)  # (M, N*C)
        x = (x - x.mean(0)) / (x.std(0) + 1e-6)
        row = {'tokens': list(tokens.shape[1:]), 'rmse_cm': {}, 'median_error_cm': {}, 'alpha': {}, 'fit_s': 0.0}
        for name, target in y.items():
            model = RidgeCV(alphas=np.logspace(0, 6, 13))
            started = time.perf_counter()
            pred = cross_val_predict(model, x, target, groups=groups, cv=GroupKFold(5))
            err = np.linalg.norm(pred - target, axis=1) * 100  # (M,) cm
            row['rmse_cm'][name] = float(np.sqrt((err ** 2).mean()))
            row['median_error_cm'][name] = float(np.median(err))
            row['alpha'][name] = float(model.fit(x, target).alpha_)
            row['fit_s'] += time.perf_counter() - started
        report['depths'][str(depth)] = row
        print(f'blocks {depth:2d} tokens {row["tokens"]}: ' + ', '.join(
            f'{k} rmse {row["rmse_cm"][k]:.2f} cm (median {row["median_error_cm"][k]:.2f})' for k in TARGETS))
    print('spread (rms distance to the mean): ' + ', '.join(f'{k} {v:.2f} cm' for k, v in report['std_cm'].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == '__main__':
    main()
