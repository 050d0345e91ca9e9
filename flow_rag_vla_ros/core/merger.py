"""Deadline-aware merge of the flow chunk with a RAG correction, then time-indexed, safe command emission.

The flow chunk is primary. A correction is blended in, (1 - w) * flow + w * correction per step, only when
its source stamp is the chunk's frame stamp or newer, it arrived no later than its source stamp + deadline
(the chunk's frame stamp for a same-frame correction), and its confidence >= threshold. Every chunk gets a
`MergeRecord` saying what was used, and every command carries the record of its newest source chunk.

Emission rules (`ActionMerger`; all times are nanoseconds passed in by the caller):
- parallel pipeline (wait_for_correction=False): `on_chunk` does not wait (but see alarm_wait_ms). It merges
  with the newest correction already received and returns the command for the current slot at once. A
  correction that arrives later, within its deadline, is blended into the newest chunk's queued actions (the
  first accepted correction of a chunk wins); `on_correction` returns None and the following ticks carry it.
  With alarm_wait_ms > 0, a chunk whose previous frame had a usable correction (the monitor is flagging a
  risk) waits like a sequential one, but only until its frame stamp + alarm_wait_ms.
- sequential pipeline (wait_for_correction=True): `on_chunk` returns None while it waits for a correction of
  that frame (or a newer one); the correction's `on_correction` returns the command, or the first `tick` at
  or after frame stamp + deadline returns it (merged without the correction). A chunk that arrives after its
  deadline, or finds its correction already there, is emitted at once.
- `tick` (the control timer): the wait release above, else hold if the chunk stream is stale (no valid
  chunk arrived within stale_timeout_s) or invalid, else the queued action for `now` (clock='time').
- clock='frames' (lockstep sim): every new frame stamp is one control step, so chunk indexing does not depend
  on how long inference took (reproducible); commands come from chunks only and `tick` returns None
  except to end a sequential wait. A re-sent frame (a chunk with the stamp of the last command) is the same
  step: it gets that command again, so the rate limiter never steps twice for one frame and a run does not
  depend on how often a frame had to be re-sent.
- invalid chunk (NaN/inf/wrong shape): rejected whole, the queue is cleared and `on_chunk` returns a
  'hold_invalid' command stamped with that frame; holds stay 'hold_invalid' until a valid chunk arrives or
  stale_timeout_s passes ('hold_stale'). Chunks older than the newest one seen are dropped (None).
- `restart(stamp)` (an episode 'start' event): what was queued for the previous episode is dropped and the
  rate limiter restarts from the hold, so an episode's first commands do not depend on how the last ended.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from flow_rag_vla_ros.core.chunk_executor import SPLICE_MODES, ChunkExecutor
from flow_rag_vla_ros.core.config import param, require
from flow_rag_vla_ros.core.safety import SafetyFilter, chunk_problem
from flow_rag_vla_ros.core.spec import ACTION_DIM, CONTROL_DT, TASKS

STATES = ('ok', 'hold_stale', 'hold_invalid')
REJECT_REASONS = ('none', 'stale', 'late', 'all_clear', 'low_confidence', 'no_overlap')


def is_alarm(verdict) -> bool:
    """A monitor verdict that flags a risk (a failure type with confidence > 0), as opposed to none or an
    all-clear (which only ends a wait for the verdict)."""
    return verdict is not None and bool(verdict.failure_type) and verdict.confidence > 0


def verdict_label(used: bool, reason: str) -> str:
    """One command's correction outcome for counting: 'used', or why not (REJECT_REASONS; '' counts as 'none')."""
    return 'used' if used else (reason or 'none')
CLOCKS = ('time', 'frames')


@dataclass
class MergerConfig:
    deadline_ms: float = param(25.0, 'a correction counts only if it arrives by its source frame stamp + this')
    correction_weight: float = param(0.3, 'blend weight w of an accepted correction: (1-w)*flow + w*correction')
    confidence_threshold: float = param(0.8, 'corrections with confidence below this are not used')
    stored_correction_weight: float = param(0.3, "blend weight of a 'stored' correction (the commands that "
                                                 'once succeeded from a similar state) instead of correction_weight')
    replay_correction_weight: float = param(1.0, "blend weight of a 'replay' correction (the commands executed from "
                                                 'a near-identical state in an episode that succeeded): 1.0 '
                                                 're-executes them')
    pin_replays: bool = param(True, 'a replay used at weight 1.0 is executed as is on its slots: later flow chunks '
                                    'do not blend into it (its correction may reach us after the next chunk)')
    control_period_s: float = param(CONTROL_DT, 'control period dt: chunk action i is for frame stamp + i*dt')
    action_low: list[float] = param([-1.0] * ACTION_DIM, 'lower command bound per dimension (dx, dy, dz, gripper)')
    action_high: list[float] = param([1.0] * ACTION_DIM, 'upper command bound per dimension')
    # 1.0 (of the [-1, 1] range) per step: the scripted experts change by > 0.5 on ~40 % of Push / PickAndPlace
    # steps (p95 ~1.0), and a 0.5 limit cut vla_v2's PickAndPlace success from 0.45 to 0.15 (20 episodes)
    max_delta_per_step: list[float] = param([1.0, 1.0, 1.0, 2.0], 'largest change between consecutive commands')
    stale_timeout_s: float = param(0.08, 'hold (zero motion, gripper unchanged) when no valid chunk arrived '
                                         'for this long')
    splice_mode: str = param('ensemble', 'ensemble (temporal ensembling) | rtc (frozen prefix + soft mask) | '
                                         'replace (newest chunk wins)')
    # vla_v9 / vla_v13 push best on their newest chunk (Push 0.90 vs 0.82 over 250 episodes with vla_v13) but
    # carry and lift in PickAndPlace need the ensembling (149 -> 124 of 150 with vla_v9): README "Task success"
    splice_mode_by_task: list[str] = param(['push:replace'], "'task:mode' pairs: while the instruction is that "
                                           "task's (spec.INSTRUCTIONS), its chunks are spliced with mode instead of "
                                           'splice_mode; other tasks and unknown instructions use splice_mode')
    ensemble_decay: float = param(0.5, 'ensemble weight exp(-decay * age in control periods); > 0 favours '
                                       'newer chunks, < 0 older ones (ACT), 0 = mean')
    ensemble_decay_per_dim: list[float] = param([], 'ensemble decay per action dimension (dx, dy, dz, gripper), '
                                                    'e.g. motion following the newest chunk and the gripper '
                                                    'averaged; empty = ensemble_decay for every dimension')
    rtc_frozen_steps: int = param(0, 'rtc: upcoming slots after the current one kept on the previous plan')
    refill_fraction: float = param(0.5, 'needs_inference() when fewer than this fraction of H actions remain')
    wait_for_correction: bool = param(False, 'sequential pipeline: hold a chunk back until its correction or '
                                             'its deadline')
    # risk comes in streaks (consecutive states match past failures): while the monitor is flagging one, its
    # verdict for the next frame is likely a correction too, and a few ms late it would miss that frame
    alarm_wait_ms: float = param(20.0, 'parallel pipeline: when the previous frame had a correction at or above '
                                      'confidence_threshold, hold the next chunk back until its own correction '
                                      'or its frame stamp + this; 0 = never wait')
    gripper_hold_value: float = param(0.0, 'gripper command of a hold before any command was issued '
                                           '(afterwards a hold keeps the last gripper command)')
    clock: str = param('time', 'time: actions indexed by wall time since the frame stamp (robot, realtime '
                               'sim) | frames: each new frame stamp is one control step (lockstep sim)')

    def task_splice_mode(self, task: str | None) -> str:
        """The splice mode for chunks of `task` (None: the task is unknown)."""
        return dict(entry.split(':') for entry in self.splice_mode_by_task).get(task, self.splice_mode)

    def __post_init__(self):
        require(self.deadline_ms > 0, f'deadline_ms must be > 0, got {self.deadline_ms}')
        require(0.0 <= self.alarm_wait_ms <= self.deadline_ms, 'alarm_wait_ms must be in [0, deadline_ms]')
        require(0.0 <= self.correction_weight <= 1.0, 'correction_weight must be in [0, 1]')
        require(0.0 <= self.stored_correction_weight <= 1.0, 'stored_correction_weight must be in [0, 1]')
        require(0.0 <= self.replay_correction_weight <= 1.0, 'replay_correction_weight must be in [0, 1]')
        require(0.0 <= self.confidence_threshold <= 1.0, 'confidence_threshold must be in [0, 1]')
        require(self.control_period_s > 0 and self.stale_timeout_s > 0, 'control_period_s, stale_timeout_s > 0')
        for name in ('action_low', 'action_high', 'max_delta_per_step'):
            v = getattr(self, name)
            require(len(v) == ACTION_DIM and all(math.isfinite(x) for x in v),
                    f'{name} must hold {ACTION_DIM} finite numbers, got {v}')
        require(all(lo <= 0.0 <= hi for lo, hi in zip(self.action_low[:-1], self.action_high[:-1])),
                'motion bounds must contain 0 (the hold command)')
        require(all(d > 0 for d in self.max_delta_per_step), 'max_delta_per_step must be > 0')
        require(self.action_low[-1] <= self.gripper_hold_value <= self.action_high[-1],
                'gripper_hold_value must lie within the gripper bounds')
        require(self.splice_mode in SPLICE_MODES, f'splice_mode {self.splice_mode!r} not in {SPLICE_MODES}')
        require(math.isfinite(self.ensemble_decay), 'ensemble_decay must be finite')
        pairs = [entry.split(':') for entry in self.splice_mode_by_task]
        require(all(len(p) == 2 and p[0] in TASKS and p[1] in SPLICE_MODES for p in pairs),
                f"splice_mode_by_task: 'task:mode' with task in {TASKS} and mode in {SPLICE_MODES}, got "
                f'{self.splice_mode_by_task}')
        require(len({p[0] for p in pairs}) == len(pairs), 'splice_mode_by_task names a task twice')
        require(len(self.ensemble_decay_per_dim) in (0, ACTION_DIM)
                and all(math.isfinite(d) for d in self.ensemble_decay_per_dim),
                f'ensemble_decay_per_dim: empty or {ACTION_DIM} finite values')
        require(self.rtc_frozen_steps >= 0, 'rtc_frozen_steps must be >= 0')
        require(0.0 < self.refill_fraction <= 1.0, 'refill_fraction must be in (0, 1]')
        require(self.clock in CLOCKS, f'clock {self.clock!r} not in {CLOCKS}')


@dataclass
class Correction:
    source_stamp_ns: int
    chunk: np.ndarray  # (Hc, 4); action k is for source stamp + k*dt
    confidence: float
    failure_type: str = ''
    arrival_ns: int = 0
    source: str = ''  # 'replay' | 'stored' (commands that once succeeded) | 'transform' | '' (unknown)

    def weight(self, config: MergerConfig) -> float:
        return {'replay': config.replay_correction_weight,
                'stored': config.stored_correction_weight}.get(self.source, config.correction_weight)


@dataclass(frozen=True)
class MergeRecord:
    frame_stamp_ns: int
    used_correction: bool
    reason: str  # '' when used, else one of REJECT_REASONS
    correction_stamp_ns: int = 0
    confidence: float = float('nan')
    failure_type: str = ''
    weight: float = 0.0  # blend weight actually applied


@dataclass
class Command:
    action: np.ndarray  # (4,) float64, within bounds
    source_stamp_ns: int  # frame stamp of the newest chunk behind it (or of the rejected/held frame)
    state: str  # one of STATES
    record: MergeRecord | None = None  # None on holds
    sources: tuple[int, ...] = field(default_factory=tuple)  # frame stamps of every contributing chunk
    message: str = ''


def correction_verdict(frame_stamp_ns: int, correction: Correction | None, deadline_ns: int,
                       threshold: float) -> str:
    """'' when `correction` may be used for the chunk of `frame_stamp_ns`, else the reason it may not."""
    if correction is None:
        return 'none'
    if correction.source_stamp_ns < frame_stamp_ns:
        return 'stale'
    if correction.arrival_ns > correction.source_stamp_ns + deadline_ns:
        return 'late'
    if not correction.failure_type and correction.confidence <= 0:
        return 'all_clear'  # the monitor's verdict that nothing is wrong (it ends a wait for the verdict)
    if correction.confidence < threshold:
        return 'low_confidence'
    return ''


def blend(flow: np.ndarray, correction: np.ndarray, weight: float, offset: int = 0) -> np.ndarray:
    """(1 - w) * flow + w * correction on the steps both cover; correction step k is flow step k + offset."""
    out = np.array(flow, dtype=np.float64)
    corr = np.asarray(correction, dtype=np.float64)
    lo, hi = max(offset, 0), min(len(out), offset + len(corr))
    if hi > lo:
        out[lo:hi] = (1.0 - weight) * out[lo:hi] + weight * corr[lo - offset:hi - offset]
    return out


def merge_chunk(frame_stamp_ns: int, flow: np.ndarray, correction: Correction | None, config: MergerConfig
                ) -> tuple[np.ndarray, MergeRecord]:
    """The chunk to execute for `flow` (H, 4) of `frame_stamp_ns`, and the record of what was used."""
    deadline_ns = round(config.deadline_ms * 1e6)
    dt_ns = round(config.control_period_s * 1e9)
    reason = correction_verdict(frame_stamp_ns, correction, deadline_ns, config.confidence_threshold)
    flow = np.asarray(flow, dtype=np.float64)
    if correction is None:
        return flow.copy(), MergeRecord(frame_stamp_ns, False, reason)
    offset = round((correction.source_stamp_ns - frame_stamp_ns) / dt_ns)
    if not reason and offset >= len(flow):
        reason = 'no_overlap'
    used = not reason
    record = MergeRecord(frame_stamp_ns, used, reason, correction.source_stamp_ns, correction.confidence,
                         correction.failure_type, correction.weight(config) if used else 0.0)
    if not used:
        return flow.copy(), record
    return blend(flow, correction.chunk, correction.weight(config), offset), record


class ActionMerger:
    """Flow chunks + corrections -> safe commands. See the module docstring for when commands are emitted."""

    def __init__(self, config: MergerConfig | None = None):
        self.config = cfg = config or MergerConfig()
        self.dt_ns = round(cfg.control_period_s * 1e9)
        self.deadline_ns = round(cfg.deadline_ms * 1e6)
        self.stale_ns = round(cfg.stale_timeout_s * 1e9)
        self.safety = SafetyFilter(cfg.action_low, cfg.action_high, cfg.max_delta_per_step, cfg.gripper_hold_value)
        self.executor = ChunkExecutor(self.dt_ns, cfg.splice_mode,
                                      cfg.ensemble_decay_per_dim or cfg.ensemble_decay, cfg.refill_fraction,
                                      cfg.rtc_frozen_steps)
        self.correction: Correction | None = None  # newest (by source stamp) correction received
        self.flows: dict[int, np.ndarray] = {}  # frame stamp -> flow chunk as received (for late corrections)
        self.records: dict[int, MergeRecord] = {}
        self.pending: tuple[int, np.ndarray, int] | None = None  # (stamp, flow, exec start) awaiting correction
        self.pending_until_ns = 0  # when `tick` releases the pending chunk without its correction
        self.newest_stamp: int | None = None
        self.last_accepted: int | None = None
        self.last_valid_arrival_ns: int | None = None
        self.invalid: tuple[int, str] | None = None  # (arrival, reason) of the latest chunk if it was rejected
        self.frame_step = -1  # clock='frames': index of the newest frame
        self.last_command: Command | None = None  # clock='frames': the command of the newest frame
        self.last_emitted_stamp: int | None = None  # source frame of the last non-hold command
        self.counts = {'chunks': 0, 'dropped_out_of_order': 0, 'rejected_chunks': 0, 'corrections': 0,
                       'rejected_corrections': 0, 'repeated_frames': 0}
        self.state = 'ok'

    # -- time ---------------------------------------------------------------------------------------
    def _register_frame(self, stamp_ns: int) -> int:
        """Execution time of the slot of action 0 for a chunk of this frame (advances the frame clock)."""
        if self.config.clock == 'time':
            return stamp_ns
        if self.newest_stamp is None or stamp_ns > self.newest_stamp:
            self.frame_step += 1
        return self.frame_step * self.dt_ns

    def _exec_now(self, now_ns: int) -> int:
        return now_ns if self.config.clock == 'time' else max(self.frame_step, 0) * self.dt_ns

    # -- inputs -------------------------------------------------------------------------------------
    def on_chunk(self, frame_stamp_ns: int, chunk, now_ns: int) -> Command | None:
        self.counts['chunks'] += 1
        previous_stamp = self.newest_stamp
        if self.newest_stamp is not None and frame_stamp_ns < self.newest_stamp:
            self.counts['dropped_out_of_order'] += 1
            return None
        last = self.last_command
        if self.config.clock == 'frames' and last is not None and last.source_stamp_ns == frame_stamp_ns:
            self.counts['repeated_frames'] += 1
            return last
        if self.pending is not None and self.pending[0] != frame_stamp_ns:
            self._accept(*self.pending, now_ns, emit=False)  # superseded while waiting: joins the queue
            self.pending = None
        start_ns = self._register_frame(frame_stamp_ns)
        self.newest_stamp = frame_stamp_ns
        problem = chunk_problem(chunk)
        if problem:
            self.counts['rejected_chunks'] += 1
            self.invalid = (now_ns, f'chunk {frame_stamp_ns} rejected: {problem}')
            self.executor.clear()
            self.pending = None
            return self._frame_command(self._hold('hold_invalid', frame_stamp_ns, self.invalid[1]))
        self.invalid = None
        self.last_valid_arrival_ns = now_ns
        flow = np.asarray(chunk, dtype=np.float64)
        covered = self.correction is not None and self.correction.source_stamp_ns >= frame_stamp_ns
        wait_ns = self._wait_ns(previous_stamp)
        if wait_ns and not covered and now_ns < frame_stamp_ns + wait_ns:
            self.pending, self.pending_until_ns = (frame_stamp_ns, flow, start_ns), frame_stamp_ns + wait_ns
            return None
        self.pending = None
        return self._accept(frame_stamp_ns, flow, start_ns, now_ns)

    def on_correction(self, source_stamp_ns: int, correction, now_ns: int) -> Command | None:
        """`correction`: anything with .chunk (H, 4), .confidence and optionally .failure_type."""
        chunk = getattr(correction, 'chunk', None)
        confidence = float(getattr(correction, 'confidence', float('nan')))
        if chunk_problem(chunk) or not math.isfinite(confidence):
            self.counts['rejected_corrections'] += 1
            return None
        if self.correction is not None and source_stamp_ns < self.correction.source_stamp_ns:
            return None  # older than the one we hold
        self.counts['corrections'] += 1
        self.correction = Correction(source_stamp_ns, np.array(chunk, dtype=np.float64), confidence,
                                     str(getattr(correction, 'failure_type', '')), now_ns,
                                     str(getattr(correction, 'source', '')))
        if self.pending is not None and source_stamp_ns >= self.pending[0]:
            pending, self.pending = self.pending, None
            return self._accept(*pending, now_ns)
        self._revise_newest()
        return None

    def tick(self, now_ns: int) -> Command | None:
        if self.pending is not None and now_ns >= self.pending_until_ns:
            pending, self.pending = self.pending, None
            return self._accept(*pending, now_ns)
        if self.config.clock == 'frames':
            return None
        if self.invalid is not None and now_ns - self.invalid[0] <= self.stale_ns:
            return self._hold('hold_invalid', self.newest_stamp, self.invalid[1])
        if self.last_valid_arrival_ns is None:
            return self._hold('hold_stale', self.newest_stamp, 'no valid chunk received yet')
        age_ns = now_ns - self.last_valid_arrival_ns
        if age_ns > self.stale_ns:
            return self._hold('hold_stale', self.newest_stamp, f'no fresh chunk for {age_ns / 1e9:.3f} s '
                                                               f'(stale_timeout_s {self.config.stale_timeout_s})')
        return self._emit(now_ns)

    def set_task(self, task: str | None) -> str:
        """The task being executed (None: unknown) picks the splice mode (MergerConfig.splice_mode_by_task);
        a change of mode drops the queued chunks. Returns the mode in use."""
        self.executor.set_mode(self.config.task_splice_mode(task))
        return self.executor.mode

    def restart(self, stamp_ns: int) -> None:
        """A new episode starts after the frame stamped `stamp_ns` (an episode 'start' event carries the
        stamp of the previous episode's last frame). The queued actions, the chunk held back for its
        correction and the correction itself were planned for a robot state the reset replaced: drop them,
        so the first command of the episode comes from its own first chunk, and rate-limit that command
        against the hold (zero motion), not against the previous episode's last command. Chunks of newer
        frames (the event may arrive after the first chunk of the episode) are kept."""
        self.executor.drop_through(stamp_ns)
        if self.pending is not None and self.pending[0] <= stamp_ns:
            self.pending = None
        if self.correction is not None and self.correction.source_stamp_ns <= stamp_ns:
            self.correction = None
        if self.last_emitted_stamp is None or self.last_emitted_stamp <= stamp_ns:
            self.safety.hold()  # commits the hold as the rate limiter's reference

    # -- queries ------------------------------------------------------------------------------------
    def remaining(self, now_ns: int) -> int:
        return self.executor.remaining(self._exec_now(now_ns))

    def needs_inference(self, now_ns: int) -> bool:
        return self.executor.needs_inference(self._exec_now(now_ns))

    def plan(self, now_ns: int, n: int) -> np.ndarray:
        """Up to n upcoming queued actions (m, 4): the committed prefix an RTC-guided policy should inpaint."""
        return self.executor.plan(self._exec_now(now_ns), n)

    def pending_deadline_ns(self) -> int | None:
        """When the chunk held back for its correction will be released by `tick` (None: nothing waits)."""
        return None if self.pending is None else self.pending_until_ns

    # -- internals ----------------------------------------------------------------------------------
    def _wait_ns(self, previous_stamp_ns: int | None) -> int:
        """How long after its frame stamp a new chunk may wait for its correction: the deadline (sequential),
        alarm_wait_ms while the previous frame had a usable correction (parallel), else 0."""
        if self.config.wait_for_correction:
            return self.deadline_ns
        c = self.correction
        alarming = (c is not None and previous_stamp_ns is not None and c.source_stamp_ns >= previous_stamp_ns
                    and c.confidence >= self.config.confidence_threshold and bool(c.failure_type))
        return round(self.config.alarm_wait_ms * 1e6) if alarming else 0

    def _accept(self, stamp_ns: int, flow: np.ndarray, start_ns: int, now_ns: int, emit: bool = True
                ) -> Command | None:
        actions, record = merge_chunk(stamp_ns, flow, self.correction, self.config)
        self.executor.add(start_ns, actions, self._exec_now(now_ns), key=stamp_ns, pinned=self._pins(record))
        live = {c.key for c in self.executor.chunks}
        self.flows = {k: v for k, v in self.flows.items() if k in live}
        self.records = {k: v for k, v in self.records.items() if k in live}
        self.flows[stamp_ns], self.records[stamp_ns] = flow, record
        self.last_accepted = stamp_ns
        return self._frame_command(self._emit(now_ns, stamp_ns)) if emit else None

    def _frame_command(self, command: Command) -> Command:
        if self.config.clock == 'frames':
            self.last_command = command
        return command

    def _revise_newest(self) -> None:
        """Blend a correction that came after the newest chunk into that chunk's queued actions."""
        key = self.last_accepted
        if key is None or key not in self.records or self.records[key].used_correction:
            return
        actions, record = merge_chunk(key, self.flows[key], self.correction, self.config)
        if record.used_correction:
            self.executor.revise(key, actions, pinned=self._pins(record))
        self.records[key] = record

    def _pins(self, record: MergeRecord) -> bool:
        """A replay that replaced the flow chunk outright is executed as is (ChunkExecutor: pinned)."""
        return (self.config.pin_replays and record.used_correction and record.weight >= 1.0
                and self.correction is not None and self.correction.source == 'replay')

    def _emit(self, now_ns: int, source_stamp_ns: int | None = None) -> Command:
        t = self._exec_now(now_ns)
        action = self.executor.next_action(t)
        stamp = self.newest_stamp if source_stamp_ns is None else source_stamp_ns
        if action is None:
            return self._hold('hold_stale', stamp, 'no queued action for now (the queue ran out)')
        safe = self.safety.apply(action)
        if safe is None:  # unreachable with validated inputs; a NaN must still never get out
            self.executor.clear()
            return self._hold('hold_invalid', stamp, 'non-finite action in the queue')
        sources = self.executor.sources(t)
        if source_stamp_ns is None:
            stamp = sources[0]
        self.state = 'ok'
        self.last_emitted_stamp = stamp
        return Command(safe, stamp, 'ok', self.records.get(stamp), sources)

    def _hold(self, state: str, stamp_ns: int | None, message: str) -> Command:
        self.state = state
        return Command(self.safety.hold(), 0 if stamp_ns is None else stamp_ns, state, None, (), message)
