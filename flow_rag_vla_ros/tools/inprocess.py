"""The node graph's lockstep control loop in ONE process, no ROS: fast evaluation of the same logic.

`run_inprocess(...)` drives the same core pieces the nodes wrap, in the order the lockstep graph runs them:

    sim frame k (obs, stamp_k)                                            (sim_node: render, stamp, publish)
      -> tokens = backend.encode(image)                                   (vision_encoder_node)
      -> parallel / rag_only: monitor.assess(stamp_k, tokens, proprio, language, None)
                              base = the latest chunk the monitor has seen (rag_monitor_node, parallel mode)
      -> chunk = backend.act(tokens, proprio, language, frame_noise(noise_seed, tokens, (H, 4)))
                 (rag_only: zeros, like flow_policy baseline='zero')   (flow_policy_node)
      -> merger.on_correction(stamp_k, verdict) then merger.on_chunk(stamp_k, chunk)   (action_merger_node)
         sequential: merger.on_chunk (waits) -> assess with this chunk -> on_correction or the deadline tick
         verdict: the proposal, else an all-clear where the node sends one (core.monitor.verdict_to_send)
      -> monitor.observe_chunk(stamp_k, chunk)
      -> env.step(command)  (a missing command = hold: zero motion, gripper unchanged, like the sim node)
    events: monitor.on_event('start', '', {task, episode, seed}), merger.restart(last stamp) at each reset;
            on_event(event, failure_type, {...}) when the episode ends (exactly what the sim node publishes).

Timing is virtual: frame k is stamped `k * dt` and every message "arrives" at its source stamp plus
`correction_latency_ms` (corrections) or 0 (chunks), so the merger's deadline rules run unchanged
(a correction later than `deadline_ms` is rejected as 'late', as in the graph). In the parallel graph the
retrieval (~1 ms) usually finishes before the policy's chunk, which is the order used here; the graph is
racy about this, this loop is deterministic (same seed -> identical results).

Like the graph, ONE merger and ONE monitor live for the whole run (the merger drops its queue and restarts
its rate limiter at each episode start, as the node does on the 'start' event), and one warm-up frame (the
sim's initial reset with the run seed) goes through the stack before episode 0 (its command only starts
the run).

Parameters come from `config/stack.yaml` (rag_monitor / action_merger sections, as the nodes read them)
with the per-call overrides on top; the merger runs on the frames clock (what lockstep runs use).
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from flow_rag_vla_ros.core.config import from_dict, load_node_parameters
from flow_rag_vla_ros.core.spec import ACTION_DIM, CONTROL_DT, DEFAULT_CHECKPOINT

PIPELINES = ('flow_only', 'parallel', 'sequential', 'rag_only')


def _section(params: str | Path | None, node: str) -> dict:
    if params is None:
        from flow_rag_vla_ros.paths import config_path
        params = config_path('stack.yaml')
    try:
        return load_node_parameters(params, node)
    except FileNotFoundError:
        return {}


def _config(cls, *layers: dict):
    values: dict = {}
    for layer in layers:
        values.update(layer or {})
    names = {f.name for f in dataclasses.fields(cls)}
    return from_dict(cls, {k: v for k, v in values.items() if k in names})


def build_configs(pipeline: str, params=None, merger: dict | None = None, monitor: dict | None = None,
                  memory: dict | None = None, correction: dict | None = None):
    """(MergerConfig, MonitorConfig, MemoryConfig, CorrectionConfig) as the nodes would declare them."""
    from flow_rag_vla_ros.core.memory import MemoryConfig
    from flow_rag_vla_ros.core.memory.corrections import CorrectionConfig
    from flow_rag_vla_ros.core.merger import MergerConfig
    from flow_rag_vla_ros.core.monitor import MonitorConfig
    rag = _section(params, 'rag_monitor')
    rag.pop('directory', None)  # eval runs start from an empty (volatile) memory, as `eval` does
    merger_values = {**_section(params, 'action_merger'), **(merger or {})}
    merger_values['wait_for_correction'] = pipeline == 'sequential'
    merger_values.setdefault('clock', 'frames')  # lockstep
    if merger and 'clock' in merger:
        merger_values['clock'] = merger['clock']
    return (_config(MergerConfig, merger_values), _config(MonitorConfig, rag, monitor),
            _config(MemoryConfig, rag, memory), _config(CorrectionConfig, rag, correction))


def _stack_checkpoint(params) -> str:
    return _section(params, 'flow_policy').get('checkpoint', DEFAULT_CHECKPOINT)


def run_inprocess(task: str = 'reach', episodes: int = 10, seed: int = 0, pipeline: str = 'parallel',
                  scenario: str = '', checkpoint: str = '', backend: str = 'torch', *, params=None,
                  merger: dict | None = None, monitor: dict | None = None, memory: dict | None = None,
                  correction: dict | None = None, noise_seed: int | None = None, image_size: int = 96,
                  max_steps: int = 0, correction_latency_ms: float = 0.0, warmup: bool = True,
                  policy_backend=None, language: np.ndarray | None = None, rag_monitor=None,
                  situations: int = 0) -> dict:
    """Run `episodes` episodes of `task` through the pipeline in this process; returns run_stack's summary shape.

    `policy_backend` / `language` / `rag_monitor` may be passed in (tests, or reusing a loaded model / a
    pre-filled memory); otherwise they are built from `checkpoint` (default: the stack.yaml checkpoint)
    and the configs.
    """
    from flow_rag_vla_ros.core.merger import ActionMerger, is_alarm, verdict_label
    from flow_rag_vla_ros.core.monitor import RagMonitor, verdict_to_send
    from flow_rag_vla_ros.nodes.runtime import checkpoint_cameras, frame_noise, resolve_checkpoint
    from flow_rag_vla_ros.sim.panda_env import PandaEnv, SimConfig

    if pipeline not in PIPELINES:
        raise ValueError(f'pipeline {pipeline!r} not in {PIPELINES}')
    started = time.monotonic()
    merger_cfg, monitor_cfg, memory_cfg, correction_cfg = build_configs(pipeline, params, merger, monitor,
                                                                        memory, correction)
    if noise_seed is None:
        noise_seed = int(_section(params, 'flow_policy').get('noise_seed', 0))
    cameras = None
    if policy_backend is None:
        from flow_rag_vla_ros.core.backends import load_policy_backend
        ckpt = resolve_checkpoint(checkpoint or _stack_checkpoint(params))
        policy_backend = load_policy_backend(backend, ckpt, device='cpu', threads=1)
        cameras = checkpoint_cameras(ckpt)  # render what the policy was trained on
    env = PandaEnv(SimConfig(task=task, seed=seed, scenario=scenario, image_size=image_size, max_steps=max_steps,
                             cameras=cameras or ['scene'], situations=situations))
    if language is None:
        from flow_rag_vla_ros.core.language import InstructionEmbedder
        language = np.asarray(InstructionEmbedder.from_checkpoint(
            resolve_checkpoint(checkpoint or _stack_checkpoint(params))).embed(env.instruction), np.float32)
    language = np.asarray(language, np.float32)
    use_monitor = pipeline != 'flow_only'
    mon = rag_monitor if rag_monitor is not None else (
        RagMonitor(monitor_cfg, memory_cfg, correction_cfg) if use_monitor else None)
    if not use_monitor:
        mon = None
    act_merger = ActionMerger(merger_cfg)
    act_merger.set_task(task)  # as the merger node does from the instruction
    horizon = int(policy_backend.horizon or memory_cfg.horizon)
    shape = (horizon, ACTION_DIM)
    dt_ns = round(CONTROL_DT * 1e9)
    latency_ns = round(correction_latency_ms * 1e6)
    deadline_ns = round(merger_cfg.deadline_ms * 1e6)
    frame = [0]
    counts = {'corrections_proposed': 0, 'holds': 0}
    command_paths: dict[str, int] = {}
    verdicts: dict[str, int] = {}

    alarmed = [False]  # the monitor's last verdict was an alarm (rag_monitor_node's `alarmed`)
    monitor_mode = 'sequential' if pipeline == 'sequential' else 'parallel'  # rag_monitor's `mode` in the graph

    def monitor_verdict(stamp, tokens, proprio, chunk):
        """What the monitor node sends for this frame (`verdict_to_send`), as the merger node receives it."""
        proposal = mon.assess(stamp, tokens, proprio, language, chunk)
        if proposal is not None:
            counts['corrections_proposed'] += 1
        verdict = verdict_to_send(monitor_mode, proposal, chunk, alarmed[0], mon.memory_config.horizon)
        alarmed[0] = is_alarm(proposal)
        return None if verdict is None else _as_merger_correction(verdict)

    def control(obs):
        """One frame through the stack -> the command (float32 (4,)) or None (no command: the sim holds)."""
        frame[0] += 1
        stamp = frame[0] * dt_ns
        tokens = np.ascontiguousarray(policy_backend.encode(obs.image), dtype=np.float32)
        proprio = np.asarray(obs.proprio, np.float32)
        if pipeline == 'rag_only':
            chunk = np.zeros(shape, np.float32)
        else:
            chunk = np.asarray(policy_backend.act(tokens, proprio, language, frame_noise(noise_seed, tokens, shape)),
                               np.float32)
        command, path = None, 'chunk'
        if pipeline in ('parallel', 'rag_only'):
            verdict = monitor_verdict(stamp, tokens, proprio, None)
            if verdict is not None:
                act_merger.on_correction(stamp, verdict, stamp + latency_ns)
            command = act_merger.on_chunk(stamp, chunk, stamp)
            mon.observe_chunk(stamp, chunk)
        elif pipeline == 'sequential':
            command = act_merger.on_chunk(stamp, chunk, stamp)
            mon.observe_chunk(stamp, chunk)
            verdict = monitor_verdict(stamp, tokens, proprio, chunk)
            if verdict is not None and latency_ns <= deadline_ns:
                c = act_merger.on_correction(stamp, verdict, stamp + latency_ns)
                command, path = (c, 'correction') if c is not None else (command, path)
        else:
            command = act_merger.on_chunk(stamp, chunk, stamp)
        release_ns = act_merger.pending_deadline_ns()
        if command is None and release_ns is not None:
            # the chunk still waits for a correction of its frame (sequential; parallel's alarm_wait_ms), and none
            # will come: this frame's verdict is in. The merger node's deadline timer releases it then (_arm_deadline)
            command, path = act_merger.tick(release_ns), 'deadline'
        if command is None:
            return None
        if mon is not None:
            mon.observe_command(command.source_stamp_ns, command.action)  # the stamp the merger node sends it with
        command_paths[path] = command_paths.get(path, 0) + 1
        if command.record is not None:
            verdict = verdict_label(command.record.used_correction, command.record.reason)
            verdicts[verdict] = verdicts.get(verdict, 0) + 1
        if command.state != 'ok':
            counts['holds'] += 1
        return np.asarray(command.action, np.float32)

    results: list[dict] = []
    frames = 0
    try:
        if warmup:  # the sim's first frame (reset with the run seed) answered before episode 0 starts
            control(env.reset(seed=seed))
        for episode in range(episodes):
            ep_seed = env.config.episode_seed(episode)
            obs = env.reset(seed=ep_seed)
            act_merger.restart(frame[0] * dt_ns)  # the merger node's answer to the 'start' event
            if mon is not None:
                mon.on_event('start', '', {'episode': episode, 'task': task, 'step': 0, 'seed': ep_seed,
                                           'scenario': scenario})
            steps, held, gripper = 0, 0, 0.0
            while True:
                action = control(obs)
                frames += 1
                if action is None:
                    action = np.array([0.0, 0.0, 0.0, gripper], np.float32)
                    held += 1
                gripper = float(action[3])
                obs, info = env.step(action)
                steps += 1
                if info.done:
                    situation = np.concatenate([info.state['object_start'], info.state['goal_pos']]).round(4)
                    results.append({'episode': episode, 'seed': ep_seed, 'success': bool(info.success),
                                    'steps': steps, 'event': info.event, 'failure_type': info.failure_type,
                                    'held_steps': held, 'failure_state': situation.tolist()})
                    if mon is not None:
                        mon.on_event(info.event, info.failure_type, {
                            'episode': episode, 'task': task, 'step': steps, 'failure_type': info.failure_type,
                            'seed': ep_seed, 'success': bool(info.success)})
                    break
    finally:
        env.close()
        memory_size = len(mon.memory) if mon is not None else 0
        if mon is not None and rag_monitor is None:
            mon.close()
    wall_s = time.monotonic() - started
    n = len(results)
    successes = [r for r in results if r['success']]
    return {
        'task': task, 'pipeline': pipeline, 'layout': 'inprocess', 'clock_mode': 'lockstep',
        'scenario': scenario, 'seed': seed, 'backend': getattr(policy_backend, 'name', ''),
        'episodes': n,
        'success_rate': (len(successes) / n) if n else 0.0,
        'mean_steps_to_success': float(np.mean([r['steps'] for r in successes])) if successes else None,
        'e2e_ms': {'p50': None, 'p95': None, 'p99': None, 'mean': None, 'max': None, 'n': 0},
        'e2e_samples_ms': [], 'stage_ms': {}, 'since_frame_ms': {},
        'frames_published': frames, 'frames_commanded': frames, 'dropped_frames': 0,
        'frame_rate_hz': frames / wall_s if wall_s else 0.0,
        'command_paths': command_paths,
        'corrections_used': verdicts.get('used', 0),
        'correction_verdicts': verdicts,
        'corrections_proposed': counts['corrections_proposed'],
        'hold_commands': counts['holds'],
        'memory_cases': memory_size,
        'nodes': [], 'peak_rss_mb': {}, 'wall_s': wall_s,
        'merger_config': dataclasses.asdict(merger_cfg),
        'per_episode': results,
    }


def _as_merger_correction(proposal):
    """What msg_to_correction hands the merger node: float32 chunk, confidence, failure type."""
    return argparse.Namespace(chunk=np.asarray(proposal.chunk, np.float32), confidence=float(proposal.confidence),
                              failure_type=proposal.failure_type, similarity=float(proposal.similarity),
                              case_id=int(proposal.case_id), source=proposal.source)
