"""The RAG failure monitor's logic (rclpy-free): assess states against the memory, learn from episodes.

- `assess(stamp, tokens, proprio, language, chunk)`: embed the state, search the memory, and propose a
  correction when a past failure happened in a similar state. In the parallel pipeline the flow chunk
  of this frame is not known yet (retrieval runs beside the policy), so the transform is applied to the
  latest executed chunk; a stored correction chunk needs no current chunk at all.
- `on_event('failure' | 'timeout', ...)`: the states that led to the failure - the last `store_last_frames`
  states before the event (0: the whole episode), every `store_stride`-th of them, counted back from the
  last one - each become a failure case with the chunk that was executed from it; cases whose correction
  was used in this episode lose confidence. Storing only the end of the episode keeps the memory to the
  states where the failure was decided, not the start states every episode passes through.
- `on_event('success')`: cases matched during the episode gain confidence (once per episode, as they lose it
  once after a failure), and what was actually executed from the state that matched each case best - the next
  H commands (`observe_command`; the policy's own chunk when no command was observed) - is stored as its
  correction.

Success memory (`remember_successes`): a failure case holds one correction, and states of different situations
that match the same case overwrite it with each other's commands. So every successful episode also stores each
of its states with the commands executed from it, as cases of a second FAISS memory (same code and durability,
in `<directory>/successes`; failure_type `success`). Every success, not only those past a known risk: a state
that succeeded once may be flagged later by a like failure of another situation, and its own replay then keeps
the transform (and the failure) away.
`assess` looks there first: a state at least `success_similarity_threshold` like a stored success state gets
that state's commands back (source `replay`, re-executed by the merger at `replay_correction_weight`; its
failure type is the failure memory's best match here, `success` when there is none), step after step along the
successful trajectory.
A failure while replayed commands were still executing (within H steps of a replay) costs those cases
confidence; below `replay_min_confidence` they are not proposed, and a new success in the same state replaces
them (the merge keeps the more confident correction).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from flow_rag_vla_ros.core.config import param, require
from flow_rag_vla_ros.core.memory import FailureCase, FailureMemory, MemoryConfig
from flow_rag_vla_ros.core.memory.corrections import Correction, CorrectionConfig, propose_correction
from flow_rag_vla_ros.core.memory.embedding import EmbeddingConfig, state_embedding
from flow_rag_vla_ros.core.spec import ACTION_DIM

MAX_EPISODE_COMMANDS = 15_000  # 10 min at 25 Hz
SUCCESS = 'success'  # the type of every success-memory case


@dataclass
class MonitorConfig:
    memory_import: str = param('', 'memory export to import at start (seed a new robot); empty = none')
    store_stride: int = param(2, 'on a failure, store every n-th of the stored states as a case')
    store_last_frames: int = param(0, 'on a failure, store only the last n states before it (0 = whole episode)')
    visual_pooling: str = param('spatial', 'state embedding visual block: spatial | mean (see memory/embedding.py)')
    visual_projection: str = param('gaussian', 'state embedding visual projection: gaussian | sparse (see '
                                               'memory/embedding.py)')
    learn: bool = param(True, 'store failures and successful corrections (false: read-only memory)')
    propose_min_confidence: float = param(0.0, 'do not publish corrections below this confidence')
    remember_successes: bool = param(True, 'success memory: a successful episode stores each state with the '
                                           'commands executed from it, replayed in a near-identical state')
    # 0.999: in Push revisits a state of the same situation scores >= 0.999 with its stored twin, while step-1
    # states of different situations reach 0.996 - and replaying one foreign command there turned a situation
    # the policy solves into a timeout (README "RAG failure memory"). A real robot's sensor noise needs its own value.
    success_similarity_threshold: float = param(0.999, 'a state this similar to a stored success state gets its '
                                                       'commands back (stricter than the failure match: a replay '
                                                       'is open loop)')
    success_dedup_threshold: float = param(0.999, 'success states this similar merge (consecutive states of one '
                                                  'trajectory must stay apart)')
    replay_min_confidence: float = param(0.8, 'replays below this confidence * similarity are not proposed')
    success_memory_import: str = param('', 'success memory export (FailureMemory.export of monitor.successes) to '
                                           'import at start; empty = none')

    def __post_init__(self):
        require(self.store_stride >= 1, 'store_stride must be >= 1')
        require(self.store_last_frames >= 0, 'store_last_frames must be >= 0')
        for name in ('success_similarity_threshold', 'success_dedup_threshold', 'replay_min_confidence'):
            require(0.0 <= getattr(self, name) <= 1.0, f'{name} must be in [0, 1]')


def success_memory_config(memory: MemoryConfig, monitor: MonitorConfig) -> MemoryConfig:
    """The success memory: the failure memory's settings, its own thresholds and directory; a fresh success
    starts fully trusted (it just worked)."""
    return dataclasses.replace(
        memory, similarity_threshold=monitor.success_similarity_threshold,
        dedup_threshold=monitor.success_dedup_threshold, initial_confidence=1.0,
        directory=os.path.join(memory.directory, 'successes') if memory.directory else '')


def all_clear_due(mode: str, has_chunk: bool, alarmed_before: bool) -> bool:
    """Whether a frame with no proposal still gets a verdict: an all-clear (confidence 0, no failure type), which
    the merger never blends but which releases a chunk it holds for that frame's verdict. It holds one in
    `sequential` mode (every chunk; the monitor then has it) and in `parallel` mode after an alarm (the
    merger's alarm_wait_ms). Without the all-clear that chunk waits out its whole wait: 20 ms after the
    frame stamp on 1.3 % of the bench's parallel frames (stop 23), which set the pipeline's p99."""
    return has_chunk if mode == 'sequential' else alarmed_before


def verdict_to_send(mode: str, proposal: Correction | None, chunk: np.ndarray | None, alarmed_before: bool,
                    horizon: int) -> Correction | None:
    """What the monitor sends for a frame: its proposal, else an all-clear where one is due (`all_clear_due`;
    it carries the frame's chunk when the monitor has it, else zeros, (H, 4)), else nothing."""
    if proposal is not None:
        return proposal
    if not all_clear_due(mode, chunk is not None, alarmed_before):
        return None
    clear = chunk if chunk is not None else np.zeros((horizon, ACTION_DIM), np.float32)  # (H, 4)
    return Correction(chunk=clear, confidence=0.0, failure_type='', case_id=-1, similarity=0.0, source='')


@dataclass
class _Step:
    embedding: np.ndarray  # (D,)
    chunk: np.ndarray | None = None  # (H, 4) executed from this state, when known
    matched: list[tuple[int, float]] = field(default_factory=list)  # (case id, similarity) that matched this state
    replayed: int | None = None  # success case whose commands were proposed here
    stamp: int = 0


class RagMonitor:
    def __init__(self, config: MonitorConfig, memory_config: MemoryConfig | None = None,
                 correction_config: CorrectionConfig | None = None, logger=None):
        self.config = config
        self.memory_config = memory_config or MemoryConfig()
        self.corrections = correction_config or CorrectionConfig()
        self.embedding_config = EmbeddingConfig(dim=self.memory_config.dim, visual_pooling=config.visual_pooling,
                                               visual_projection=config.visual_projection)
        self.log = logger or logging.getLogger(__name__)
        embedding_id = self.embedding_config.embedding_id
        self.memory = FailureMemory.open(self.memory_config, embedding_id)
        if config.memory_import:
            added, merged = self.memory.import_(config.memory_import)
            self.log.info(f'imported {added} cases ({merged} merged) from {config.memory_import}')
        self.successes = (FailureMemory.open(success_memory_config(self.memory_config, config), embedding_id)
                          if config.remember_successes else None)
        if self.successes is not None and config.success_memory_import:
            added, merged = self.successes.import_(config.success_memory_import)
            self.log.info(f'imported {added} success states ({merged} merged) from {config.success_memory_import}')
        self._lock = threading.Lock()  # episode trace: written by the retrieval thread and the event callback
        self._trace: dict[int, _Step] = {}  # stamp -> step, this episode, in arrival order
        self._last_chunk: np.ndarray | None = None
        # (source frame stamp, (4,) command) of this episode; bounded: a robot without episode events never resets it
        self._commands: deque[tuple[int, np.ndarray]] = deque(maxlen=MAX_EPISODE_COMMANDS)
        self._task = ''

    def embed(self, tokens: np.ndarray, proprio: np.ndarray, language: np.ndarray) -> np.ndarray:
        return state_embedding(tokens, proprio, language, self.embedding_config)

    def observe_chunk(self, stamp: int, chunk: np.ndarray) -> None:
        with self._lock:
            self._last_chunk = chunk
            step = self._trace.get(stamp)
            if step is not None:
                step.chunk = chunk

    def observe_command(self, stamp: int, action: np.ndarray) -> None:
        """A command sent to the robot, stamped with the frame it derives from (what was really executed:
        the flow chunk after merging, ensembling and the safety limits)."""
        with self._lock:
            self._commands.append((int(stamp), np.asarray(action, np.float32).reshape(ACTION_DIM)))

    @property
    def episode_commands(self) -> list[tuple[int, np.ndarray]]:
        """The commands observed since the last episode event, oldest first: [(source frame stamp, (4,)), ...]."""
        with self._lock:
            return list(self._commands)

    def executed_lookup(self, commands: list[tuple[int, np.ndarray]]) -> Callable[[_Step], np.ndarray | None]:
        """step -> (H, 4): the first H commands at or after the step's stamp, the last one's gripper held with zero
        motion after the episode ended; None if no command followed the state. With no command observed at all,
        the policy's own chunk of the step. The commands become arrays once per episode: a success looks up
        every state (a 10-minute episode has 15k states and 15k commands)."""
        horizon = self.memory_config.horizon
        if not commands:
            return lambda step: step.chunk
        stamps = np.fromiter((s for s, _ in commands), np.int64, len(commands))  # (C,) in arrival order
        actions = np.stack([a for _, a in commands])  # (C, 4)

        def executed(step: _Step) -> np.ndarray | None:
            after = actions[np.flatnonzero(stamps >= step.stamp)[:horizon]]  # (<=H, 4)
            if not len(after):
                return None
            chunk = np.zeros((horizon, ACTION_DIM), np.float32)  # (H, 4)
            chunk[:len(after)] = after
            chunk[len(after):, 3] = after[-1, 3]
            return chunk
        return executed

    def assess(self, stamp: int, tokens: np.ndarray, proprio: np.ndarray, language: np.ndarray,
               chunk: np.ndarray | None = None) -> Correction | None:
        embedding = self.embed(tokens, proprio, language)
        hits = self.memory.search(embedding)
        replay = self.replay_for(embedding, hits[0][0].failure_type if hits else SUCCESS)
        with self._lock:
            step = self._trace.setdefault(stamp, _Step(embedding, stamp=stamp))
            if chunk is not None:
                step.chunk = chunk
            step.matched = [(case.id, float(sim)) for case, sim in hits]
            step.replayed = None if replay is None else replay.case_id
            base = chunk if chunk is not None else self._last_chunk
        if replay is not None:
            return replay
        if not hits:
            return None
        if base is None:
            base = np.zeros((self.memory_config.horizon, ACTION_DIM), np.float32)
        proposal = propose_correction(hits, base, self.corrections)
        if proposal is None or proposal.confidence < self.config.propose_min_confidence:
            return None
        return proposal

    def replay_for(self, embedding: np.ndarray, failure_type: str = SUCCESS) -> Correction | None:
        """The commands once executed from the most like (then most confident, newest) stored success state."""
        if self.successes is None:
            return None
        hits = [(case, sim) for case, sim in self.successes.search(embedding)
                if case.correction_chunk is not None and case.confidence * sim >= self.config.replay_min_confidence]
        if not hits:
            return None
        case, sim = max(hits, key=lambda h: (h[1] * h[0].confidence, h[0].id))
        return Correction(chunk=np.clip(case.correction_chunk, -1.0, 1.0), confidence=float(case.confidence * sim),
                          failure_type=failure_type, case_id=int(case.id), similarity=float(sim),
                          source='replay')

    def on_event(self, kind: str, failure_type: str = '', values: dict | None = None) -> None:
        values = values or {}
        with self._lock:
            trace, self._trace = list(self._trace.values()), {}
            commands, self._commands = list(self._commands), deque(maxlen=MAX_EPISODE_COMMANDS)
        if kind == 'start':
            self._task = values.get('task', '')
            return
        if kind not in ('success', 'failure', 'timeout') or not self.config.learn:
            return
        best: dict[int, tuple[float, _Step]] = {}  # case id -> (similarity, the step it matched best), once per case
        for step in trace:
            for case_id, sim in step.matched:
                if case_id not in best or sim > best[case_id][0]:
                    best[case_id] = (sim, step)
        # a success credits every replay of the episode; a failure charges only the replays whose commands were
        # still executing when it happened (the last H states): a replay the episode soon drifted away from (a
        # like state of another situation, passed on the way) did not fail - the policy did, later
        credited = trace if kind == 'success' else trace[-self.memory_config.horizon:]
        for case_id in {step.replayed for step in credited if step.replayed is not None}:
            self._safely(self.successes.update_confidence, case_id, kind == 'success')
        if kind == 'success':
            executed_from = self.executed_lookup(commands)
            for case_id, (_, step) in best.items():
                self._safely(self.memory.update_confidence, case_id, True)
                # from the step most like the case: a case also matches its neighbours, whose commands start later
                executed = executed_from(step)
                if executed is not None:
                    self._safely(self.memory.set_correction, case_id, executed)
            if self.successes is not None:
                self.remember_success(trace, executed_from)
            return
        for case_id in best:
            self._safely(self.memory.update_confidence, case_id, False)
        stored = 0
        for step in self.failure_states(trace):
            failed = step.chunk if step.chunk is not None else np.zeros((self.memory_config.horizon, ACTION_DIM),
                                                                        np.float32)
            self.memory.add(FailureCase(embedding=step.embedding, failed_chunk=failed,
                                        failure_type=failure_type or kind, task=self._task))
            stored += 1
        self.log.info(f'{failure_type or kind}: stored {stored} states; memory has {len(self.memory)} cases')

    def remember_success(self, trace: list[_Step], executed_from: Callable[[_Step], np.ndarray | None]) -> None:
        """Every state of a successful episode, with the commands executed from it (`executed_lookup`), into the
        success memory."""
        cases = []
        for step in trace:
            executed = executed_from(step)
            if executed is None:
                continue
            proposed = step.chunk if step.chunk is not None else executed  # the policy's own chunk, when known
            cases.append(FailureCase(embedding=step.embedding, failed_chunk=proposed, failure_type=SUCCESS,
                                     correction_chunk=executed, task=self._task))
        added, merged = self.successes.add_many(cases)
        self.log.info(f'success: {added} states stored, {merged} merged; '
                      f'success memory has {len(self.successes)} states')

    def failure_states(self, trace: list[_Step]) -> list[_Step]:
        """The states stored for a failure: the last `store_last_frames` (all when 0), every `store_stride`-th
        counted back from the final state (so the state right before the failure is always kept)."""
        if self.config.store_last_frames:
            trace = trace[-self.config.store_last_frames:]
        return trace[::-1][::self.config.store_stride][::-1]

    def _safely(self, fn, *args) -> None:
        try:
            fn(*args)
        except KeyError:  # the case was pruned meanwhile
            pass

    def close(self) -> None:
        self.memory.close()
        if self.successes is not None:
            self.successes.close()
