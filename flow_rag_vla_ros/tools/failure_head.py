"""`flow-rag-vla failure-head`: train the learned failure head on the policy's own rollouts, report held-out
precision / recall.

    flow-rag-vla failure-head --checkpoint models/vla_v9 --runs push:heavy_cube push:slippery_zone \
        push:external_push pick_and_place: --episodes 25 --train-seed 0 --test-seed 5000 \
        --out models/failure_head --json out.json

Rollouts: the policy in PandaEnv (in-process, temporal ensembling, as `train` evaluates it), one run per
`task:scenario`, episodes `seed .. seed + episodes - 1`. Every step records the monitor's state embedding
(core/memory/embedding.py: the frame's visual tokens, proprio, instruction). Examples: (embedding at step t,
embedding H steps later, the chunk horizon; clipped to the last recorded step), labelled 1 when the sim's
ground-truth failure event (sim/panda_env.py) ends the episode within those H steps. The head (FailureHead in
core/memory/detector.py) trains on the `--train-seed` rollouts, its L2 penalty chosen on every 5th of those
episodes, and is scored on the `--test-seed` ones: other initial states, never seen in training or selection.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


class EmbeddingRecorder:
    """A rollout recorder (tools/train.py evaluate_in_process): the state embedding before every step, from the
    visual tokens the policy computed for that frame."""

    def __init__(self, language: np.ndarray, embedding_config=None):
        self.language, self.config = np.asarray(language, np.float32), embedding_config
        self.episodes: list[dict] = []

    def start(self, env, seed: int) -> None:
        self.current = {'seed': seed, 'embeddings': []}

    def record(self, obs, env, tokens: np.ndarray) -> None:
        from flow_rag_vla_ros.core.memory.embedding import state_embedding
        self.current['embeddings'].append(state_embedding(tokens, obs.proprio, self.language, self.config))

    def end(self, outcome: dict) -> None:
        self.current.update(success=bool(outcome['success']), failure_type=outcome['failure_type'])
        self.episodes.append(self.current)


def chunk_pairs(embeddings: np.ndarray, failed: bool, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T, D) embeddings of one episode -> before (T, D), after (T, D), label (T,): step t against step
    min(t + H, T - 1); 1 when the episode ended in a failure within those H steps."""
    t = len(embeddings)
    idx = np.arange(t)
    after = np.minimum(idx + horizon, t - 1)
    label = (failed & (idx + horizon >= t - 1)).astype(np.float32)
    return embeddings[idx], embeddings[after], label


def rollouts(policy, checkpoint: Path, cameras: list[str], runs: list[str], episodes: int, seed: int,
             progress: bool) -> list[dict]:
    from flow_rag_vla_ros.core.language import InstructionEmbedder
    from flow_rag_vla_ros.core.spec import INSTRUCTIONS
    from flow_rag_vla_ros.tools.train import evaluate_in_process
    embedder = InstructionEmbedder.from_checkpoint(checkpoint)
    out = []
    for run in runs:
        task, _, scenario = run.partition(':')
        language = embedder.embed(INSTRUCTIONS[task])
        recorder = EmbeddingRecorder(language)
        evaluate_in_process(policy, task, episodes, seed, language, cameras, progress=progress,
                            recorder=recorder, scenario=scenario)
        out += [{**e, 'run': run} for e in recorder.episodes]
    return out


def dataset(episodes: list[dict], horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts = [chunk_pairs(np.stack(e['embeddings']), not e['success'], horizon) for e in episodes]
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))


def register(subparsers) -> None:
    p = subparsers.add_parser('failure-head', help='train the learned failure head on policy rollouts')
    p.add_argument('--checkpoint', default='models/vla_v9')
    p.add_argument('--runs', nargs='+', default=['push:heavy_cube', 'push:slippery_zone', 'push:external_push',
                                                 'pick_and_place:'], metavar='TASK:SCENARIO')
    p.add_argument('--episodes', type=int, default=25, help='episodes per run, for training and again for testing')
    p.add_argument('--train-seed', type=int, default=0)
    p.add_argument('--test-seed', type=int, default=5000)
    p.add_argument('--threshold', type=float, default=0.5)
    p.add_argument('--l2', type=float, nargs='+', default=[1e-3, 1e-2, 1e-1, 1.0],
                   help='L2 penalties tried; the best F1 on every 5th training episode is kept')
    p.add_argument('--out', help='write failure_head.safetensors / .json here')
    p.add_argument('--json', help='write the report here')
    p.add_argument('--no-progress', action='store_true')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from flow_rag_vla_ros.core.checkpoint import load_checkpoint
    from flow_rag_vla_ros.core.memory.detector import FailureHead
    from flow_rag_vla_ros.nodes.runtime import checkpoint_cameras, resolve_checkpoint
    from flow_rag_vla_ros.sim.scenarios import list_scenarios
    for r in args.runs:
        task, sep, scenario = r.partition(':')
        if not sep or (scenario and scenario not in list_scenarios()):
            raise SystemExit(f'failure-head: run {r!r} is not task:scenario (scenarios: {list_scenarios()})')
    if args.episodes * len(args.runs) < 5:
        raise SystemExit('failure-head: needs 5 or more training episodes in all (every 5th one validates the L2 '
                         f'choice); {args.episodes} x {len(args.runs)} runs')
    ckpt = resolve_checkpoint(args.checkpoint)
    policy, cameras = load_checkpoint(ckpt), checkpoint_cameras(ckpt) or ['scene']
    h = policy.config.horizon
    report: dict = {'checkpoint': args.checkpoint, 'runs': args.runs, 'episodes': args.episodes, 'horizon': h}
    episodes = {name: rollouts(policy, ckpt, cameras, args.runs, args.episodes, seed, not args.no_progress)
                for name, seed in (('train', args.train_seed), ('test', args.test_seed))}
    split = {name: dataset(eps, h) for name, eps in episodes.items()}
    for name, seed in (('train', args.train_seed), ('test', args.test_seed)):
        eps, labels = episodes[name], split[name][2]
        report[name] = {'seed': seed, 'episodes': len(eps), 'failed': sum(not e['success'] for e in eps),
                        'examples': int(len(labels)), 'positives': int(labels.sum())}
    # L2 chosen on a validation split of the training rollouts (every 5th episode), never on the test rollouts
    fit_part = dataset([e for i, e in enumerate(episodes['train']) if i % 5 != 4], h)
    val_part = dataset([e for i, e in enumerate(episodes['train']) if i % 5 == 4], h)
    dim = split['train'][0].shape[1]
    report['l2_selection'] = {str(l2): FailureHead(dim, threshold=args.threshold).fit(*fit_part, l2=l2)
                              .precision_recall(*val_part)['f1'] for l2 in args.l2}
    best = max(args.l2, key=lambda l2: report['l2_selection'][str(l2)])
    report['l2'] = best
    head = FailureHead(dim, threshold=args.threshold).fit(*split['train'], l2=best)
    report['train_scores'] = head.precision_recall(*split['train'])
    report['test_scores'] = head.precision_recall(*split['test'])  # held-out rollouts: the reported numbers
    if args.out:
        head.save(args.out)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text)
    return 0
