"""Time-indexed execution of action chunks: splicing a new chunk into the executing one without a seam.

Times are integer nanoseconds chosen by the caller (never read from a clock here). A chunk starting at
`start_ns` holds action i for the control slot [start_ns + i*dt, start_ns + (i+1)*dt); a slot that has
ended is in the past and its action is never returned again. Splice modes:

- `ensemble` (ACT temporal ensembling): every stored chunk that covers `now` contributes its action for
  `now`, weighted exp(-ensemble_decay * age) where age is how many control periods the chunk starts before
  the newest covering chunk (decay > 0 favours newer chunks, < 0 older ones as in ACT, 0 = plain mean).
  The decay may be one per action dimension: e.g. motion following the newest chunk, the gripper averaged.
- `replace`: the newest chunk replaces everything (what ros2_control's JointTrajectoryController does).
- `rtc` (Real-Time Chunking splice): the new chunk becomes the plan, but on the steps the previous plan still
  covers it is blended with it: weight 1 on the past / current slot and `rtc_frozen_steps` more (committed),
  then the RTC soft mask decaying to 0 at the end of the previous plan (`rtc.prefix_weights`).

Pinned chunks (the merger pins a replay of commands that once succeeded, accepted at full weight): on the slots
a pinned chunk covers, the newest pinned chunk alone gives the action, in every mode. A replay is only worth
anything executed as it was; the flow chunk of a later frame, whose correction has not arrived yet, would
otherwise blend into it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flow_rag_vla_ros.core.rtc import prefix_weights

SPLICE_MODES = ('ensemble', 'rtc', 'replace')


@dataclass
class _Chunk:
    key: int             # the caller's id for the chunk (the source frame stamp)
    start_ns: int        # time of action 0's slot
    raw: np.ndarray      # (H, A) the chunk as given (possibly revised)
    prior: np.ndarray    # (H, A) the previous plan on these slots (rtc), zeros elsewhere
    mask: np.ndarray     # (H,) weight of `prior` (0 outside rtc mode)
    pinned: bool = False  # executed as is on its slots (see module docstring)

    @property
    def actions(self) -> np.ndarray:  # (H, A)
        return self.mask[:, None] * self.prior + (1.0 - self.mask[:, None]) * self.raw


class ChunkExecutor:
    def __init__(self, dt_ns: int, mode: str = 'ensemble', ensemble_decay: float | Sequence[float] = 0.5,
                 refill_fraction: float = 0.5, rtc_frozen_steps: int = 0):
        decay = np.atleast_1d(np.asarray(ensemble_decay, dtype=np.float64))  # (1,) or (A,)
        if dt_ns <= 0 or mode not in SPLICE_MODES or decay.ndim != 1 or not np.isfinite(decay).all():
            raise ValueError(f'need dt_ns > 0, mode in {SPLICE_MODES}, finite decay; got {dt_ns}, {mode!r}, '
                             f'{ensemble_decay}')
        if not 0.0 < refill_fraction <= 1.0 or rtc_frozen_steps < 0:
            raise ValueError('need 0 < refill_fraction <= 1 and rtc_frozen_steps >= 0')
        self.dt_ns, self.mode, self.decay = int(dt_ns), mode, decay
        self.refill_fraction, self.rtc_frozen_steps = refill_fraction, rtc_frozen_steps
        self.chunks: list[_Chunk] = []  # oldest start first
        self.horizon = 0  # length of the newest chunk
        self.latest_ns = -(2 ** 62)  # latest `now` seen by next_action

    def set_mode(self, mode: str) -> None:
        """Splice later chunks with `mode`; the queued chunks are dropped when it changes (they were spliced
        for the other mode, e.g. several overlapping ones kept for ensembling)."""
        if mode not in SPLICE_MODES:
            raise ValueError(f'splice mode {mode!r} not in {SPLICE_MODES}')
        if mode != self.mode:
            self.mode = mode
            self.clear()

    # -- indexing -----------------------------------------------------------------------------------
    def _index(self, c: _Chunk, t_ns: int) -> int:
        return (t_ns - c.start_ns) // self.dt_ns

    def _covering(self, t_ns: int) -> list[tuple[_Chunk, int]]:
        out = []
        for c in self.chunks:
            i = self._index(c, t_ns)
            if 0 <= i < len(c.raw):
                out.append((c, i))
        return out

    def prune(self, now_ns: int) -> None:
        """Forget chunks whose every slot has ended."""
        self.chunks = [c for c in self.chunks if self._index(c, now_ns) < len(c.raw)]

    # -- input --------------------------------------------------------------------------------------
    def add(self, start_ns: int, actions: np.ndarray, now_ns: int, key: int | None = None,
            pinned: bool = False) -> None:
        """Splice `actions` (H, A), whose action 0 is for the slot starting at `start_ns`, in at time `now_ns`."""
        raw = np.array(actions, dtype=np.float64)
        key = start_ns if key is None else key
        self.chunks = [c for c in self.chunks if c.key != key]  # a re-sent chunk replaces its earlier copy
        self.prune(now_ns)
        prior, mask = np.zeros_like(raw), np.zeros(len(raw))
        if self.mode == 'rtc' and self.chunks and not pinned:
            prior, mask = self._rtc_prior(start_ns, raw, now_ns)
        if self.mode != 'ensemble':
            self.chunks = [c for c in self.chunks if c.pinned]
        self.chunks.append(_Chunk(key, int(start_ns), raw, prior, mask, pinned))
        self.chunks.sort(key=lambda c: c.start_ns)
        self.horizon = len(raw)

    def _rtc_prior(self, start_ns: int, raw: np.ndarray, now_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """The executing plan on the new chunk's slots and the RTC weights of that plan."""
        horizon = len(raw)
        prior = np.zeros_like(raw)
        covered = np.zeros(horizon, dtype=bool)
        for j in range(horizon):
            action = self.action_at(start_ns + j * self.dt_ns)
            if action is not None:
                prior[j], covered[j] = action, True
        overlap = int(np.argmin(covered)) if not covered.all() else horizon  # leading covered run
        frozen = max(0, (now_ns - start_ns) // self.dt_ns) + 1 + self.rtc_frozen_steps  # past + current + extra
        mask = prefix_weights(horizon, frozen, overlap)
        return prior, mask

    def revise(self, key: int, actions: np.ndarray, pinned: bool = False) -> bool:
        """Replace the actions of a stored chunk (a correction that came after it), pinning it or not;
        False if it is gone."""
        for c in self.chunks:
            if c.key == key:
                revised = np.array(actions, dtype=np.float64)
                if revised.shape != c.raw.shape:
                    raise ValueError(f'revision shape {revised.shape} != chunk shape {c.raw.shape}')
                c.raw, c.pinned = revised, pinned
                if pinned:
                    c.mask = np.zeros_like(c.mask)  # as is: no RTC blend with the plan before it
                return True
        return False

    def clear(self) -> None:
        self.chunks = []

    def drop_through(self, key: int) -> None:
        """Forget the chunks whose key (source frame stamp) is <= `key`."""
        self.chunks = [c for c in self.chunks if c.key > key]

    # -- output -------------------------------------------------------------------------------------
    def _weighted(self, t_ns: int) -> list[tuple[_Chunk, int, np.ndarray]]:
        """(chunk, action index, normalised weight (1,) or per dimension (A,)) for every chunk covering `t_ns`,
        newest first."""
        covering = sorted(self._covering(t_ns), key=lambda ci: -ci[0].start_ns)
        if not covering:
            return []
        pinned = [(c, i) for c, i in covering if c.pinned]
        if pinned:
            return [(pinned[0][0], pinned[0][1], np.ones(1))]
        newest = covering[0][0].start_ns
        age = np.array([(newest - c.start_ns) / self.dt_ns for c, _ in covering])  # (n,) control periods
        w = np.exp(-age[:, None] * self.decay[None, :])  # (n, 1) or (n, A)
        w /= w.sum(axis=0, keepdims=True)
        return [(c, i, wi) for (c, i), wi in zip(covering, w)]

    def ensemble_weights(self, t_ns: int) -> list[tuple[int, float]]:
        """(key, normalised weight) of every chunk contributing to the slot at `t_ns`, newest first (per-dimension
        decays: the weight of the first dimension)."""
        return [(c.key, float(w[0])) for c, _, w in self._weighted(t_ns)]

    def action_at(self, t_ns: int) -> np.ndarray | None:
        """The action for the slot containing `t_ns`, or None when no chunk covers it."""
        weighted = self._weighted(t_ns)
        if not weighted:
            return None
        return sum(w * c.actions[i] for c, i, w in weighted)

    def next_action(self, now_ns: int) -> np.ndarray | None:
        """Drop what is past and return the action for the current slot (None: nothing covers `now`).

        Time never runs backwards here: a `now` earlier than a previous call's is treated as that one, so a
        slot that has been left is never executed again.
        """
        self.latest_ns = now_ns = max(now_ns, self.latest_ns)
        self.prune(now_ns)
        return self.action_at(now_ns)

    def sources(self, now_ns: int) -> tuple[int, ...]:
        """Keys of the chunks contributing to the current slot, newest first."""
        return tuple(k for k, _ in self.ensemble_weights(now_ns))

    def remaining(self, now_ns: int) -> int:
        """Queued actions from the current slot on (the longest remaining tail of any stored chunk)."""
        tails = [len(c.raw) - max(self._index(c, now_ns), 0) for c in self.chunks]
        return max([t for t in tails if t > 0], default=0)

    def needs_inference(self, now_ns: int) -> bool:
        """True when fewer than refill_fraction * H actions remain (always True when nothing is queued)."""
        return self.remaining(now_ns) < self.refill_fraction * max(self.horizon, 1)

    def plan(self, now_ns: int, n: int) -> np.ndarray:
        """Up to `n` upcoming actions (m <= n, A) from the current slot on: the committed prefix for RTC."""
        out = []
        for k in range(n):
            a = self.action_at(now_ns + k * self.dt_ns)
            if a is None:
                break
            out.append(a)
        return np.array(out).reshape(len(out), -1)
