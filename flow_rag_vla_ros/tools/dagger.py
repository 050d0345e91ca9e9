"""`flow-rag-vla dagger`: roll a policy out and label every state it visits with the scripted expert (DAgger).

Demonstrations only cover the states the expert visits. A cloned policy drifts off them by small errors and
then acts in states no demonstration shows, where its errors compound (Ross, Gordon & Bagnell 2011: DAgger).
This records the states the POLICY visits, rolled out exactly as `train` evaluates it (in-process, temporal
ensembling), and labels each with the chunk the expert would execute from it: the expert's next H actions,
simulated from that state and then undone (`PandaEnv.lookahead`). Labels come from a noiseless expert (no
action noise, waypoint offsets or random gain): they are targets, not diverse demonstrations. Only experts that
can be asked in any state (`Expert.stateless`: Reach, Push) label; the PickAndPlace expert counts its own
closing steps and labels a grasp it did not make "open".

Why whole simulated chunks: a first version labelled each state with the expert's single next action and built
chunk targets from consecutive labels (`action_chunks`), i.e. the expert's reactions to the POLICY's next
states, which are no plan from the first state. Fine-tuning `vla_v5` on those (with PickAndPlace labels) took
Push from 26 to 8 successes of 50 (docs/results/dagger/).

Episodes are written in the dataset format (sim/dataset.py) with `chunks` (T, H, 4); `actions` is each chunk's
first action; `success` / `failure_type` are the POLICY's outcome, kept for the record.
`train.relabelled_data` trains on every one of them.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from flow_rag_vla_ros.core.spec import TASKS
from flow_rag_vla_ros.sim.experts import EXPERTS, ExpertConfig, make_expert

LABEL_EXPERT = ExpertConfig(action_noise=0.0, gain_range=(1.0, 1.0), offset_m=0.0)


class ExpertLabeller:
    """A `recorder` for `train.evaluate_in_process`: keeps (image, proprio, expert chunk) per visited state and
    writes each finished episode to `out` as episode `first_index + n`."""

    def __init__(self, task: str, out: str | Path, horizon: int, first_index: int = 0):
        self.task, self.out, self.horizon, self.index = task, Path(out), horizon, first_index
        self.expert = make_expert(task, np.random.default_rng(0), LABEL_EXPERT)
        if not self.expert.stateless:
            raise ValueError(f'the {task} expert keeps state across steps (Expert.stateless is False): it cannot '
                             "label a policy's states")
        self.written: list[dict] = []

    def start(self, env, seed: int) -> None:
        self.expert.reset()
        self.seed, self.instruction = seed, env.instruction
        self.images, self.proprio, self.labels = [], [], []

    def record(self, obs, env, tokens) -> None:
        self.images.append(obs.image)
        self.proprio.append(obs.proprio)
        self.labels.append(env.lookahead(self.expert.act, self.horizon))  # (H, 4)

    def end(self, outcome: dict) -> None:
        from flow_rag_vla_ros.sim.dataset import Episode, write_episode
        chunks = np.stack(self.labels).astype(np.float32)  # (T, H, 4)
        ep = Episode(np.stack(self.images), np.stack(self.proprio).astype(np.float32), chunks[:, 0],
                     bool(outcome['success']), self.instruction, self.task, self.seed,
                     '' if outcome['success'] else (outcome.get('failure_type') or ''), chunks=chunks)
        write_episode(self.out, ep, self.index)
        self.written.append({'index': self.index, 'seed': self.seed, 'success': ep.success,
                             'failure_type': ep.failure_type, 'steps': len(ep.actions)})
        self.index += 1


def relabel(checkpoint: str, task: str, episodes: int, seed: int, out: str | Path, first_index: int = 0,
            decay: float = 0.5, max_steps: int = 0, progress: bool = False) -> list[dict]:
    """Roll `checkpoint` out for `episodes` episodes (episode i: seed + i), write them labelled; returns one
    record per episode (index, seed, the policy's success / failure_type, steps)."""
    from flow_rag_vla_ros.core.checkpoint import load_checkpoint
    from flow_rag_vla_ros.core.language import InstructionEmbedder
    from flow_rag_vla_ros.core.spec import INSTRUCTIONS
    from flow_rag_vla_ros.nodes.runtime import checkpoint_cameras
    from flow_rag_vla_ros.tools.train import evaluate_in_process
    policy = load_checkpoint(checkpoint)
    language = InstructionEmbedder.from_checkpoint(checkpoint).embed(INSTRUCTIONS[task])
    labeller = ExpertLabeller(task, out, policy.config.horizon, first_index)
    evaluate_in_process(policy, task, episodes, seed, language, checkpoint_cameras(checkpoint) or ['scene'],
                        decay, progress=progress, recorder=labeller, max_steps=max_steps)
    return labeller.written


def _worker(job: dict) -> list[dict]:
    import torch
    torch.set_num_threads(1)
    return relabel(**job)


def register(subparsers) -> None:
    p = subparsers.add_parser('dagger', help="label the policy's own rollouts with the scripted expert")
    p.add_argument('--checkpoint', required=True, help='the policy to roll out')
    p.add_argument('--task', choices=[t for t in TASKS if EXPERTS[t].stateless], required=True,
                   help='tasks whose expert can label any state')
    p.add_argument('--episodes', type=int, default=100)
    p.add_argument('--seed', type=int, default=200000, help='seed of episode 0 (episode i uses seed + i)')
    p.add_argument('--out', required=True, help='dataset directory (train.relabelled_data)')
    p.add_argument('--workers', type=int, default=1, help='processes, each rolling out a contiguous share')
    p.add_argument('--max-steps', type=int, default=0, help='steps per episode (0 = task default, 50)')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from flow_rag_vla_ros.sim.dataset import load_meta, update_meta
    from flow_rag_vla_ros.nodes.runtime import checkpoint_cameras, resolve_checkpoint
    checkpoint = str(resolve_checkpoint(args.checkpoint))
    workers = max(1, min(args.workers, args.episodes))
    shares = np.array_split(np.arange(args.episodes), workers)
    jobs = [dict(checkpoint=checkpoint, task=args.task, episodes=len(s), seed=args.seed + int(s[0]), out=args.out,
                 first_index=int(s[0]), max_steps=args.max_steps, progress=workers == 1) for s in shares if len(s)]
    if workers == 1:
        written = _worker(jobs[0])
    else:
        import multiprocessing as mp
        pool = mp.get_context('spawn').Pool(workers)
        try:
            written = [r for part in pool.map(_worker, jobs) for r in part]
        finally:  # close + join, not terminate: workers exit normally and release tqdm's lock (no leak warning)
            pool.close()
            pool.join()
    ok = sum(r['success'] for r in written)
    stats = {'episodes': len(written), 'policy_successes': ok, 'policy_success_rate': ok / max(1, len(written)),
             'steps': int(sum(r['steps'] for r in written)), 'seed': args.seed,
             'failure_types': dict(Counter(r['failure_type'] for r in written if not r['success']))}
    cameras = checkpoint_cameras(checkpoint) or ['scene']
    previous = load_meta(args.out).get('relabelled_by', {})
    labels = {'policy': checkpoint, 'expert': 'noiseless scripted, simulated H-step chunks'}
    update_meta(args.out, args.task, stats, cameras=list(cameras), relabelled_by={**previous, args.task: labels})
    print(json.dumps(stats, indent=2))
    return 0
