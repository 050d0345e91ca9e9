import math

import numpy as np
import pytest

from flow_rag_vla_ros.core.chunk_executor import ChunkExecutor
from flow_rag_vla_ros.core.rtc import prefix_weights

DT = 40_000_000  # ns
S = 1_000_000_000  # a frame stamp


def ramp(h=8, start=0.0):
    """Chunk whose action i is (start + i) in every dimension: the value says which step it is."""
    return np.repeat((start + np.arange(h, dtype=float))[:, None], 4, axis=1)


def test_action_i_is_for_stamp_plus_i_dt():
    ex = ChunkExecutor(DT)
    ex.add(S, ramp(), now_ns=S)
    for i in range(8):
        for frac in (0.0, 0.5, 0.999):
            np.testing.assert_array_equal(ex.action_at(S + int((i + frac) * DT)), ramp()[i])
    assert ex.next_action(S + 8 * DT) is None  # past the end


def test_past_actions_are_never_executed():
    rng = np.random.default_rng(0)
    for _ in range(50):
        ex = ChunkExecutor(DT)
        ex.add(S, ramp(), now_ns=S)
        latest = S
        for t in rng.integers(S, S + 10 * DT, size=12):  # unordered: a caller's clock may jump back
            latest = max(latest, int(t))
            a = ex.next_action(int(t))
            slot = (latest - S) // DT
            if slot >= 8:
                assert a is None
            else:
                assert a[0] == slot  # the slot of the latest time seen, never an earlier one


def test_late_chunk_starts_mid_way():
    ex = ChunkExecutor(DT)
    ex.add(S, ramp(), now_ns=S + 3 * DT + 5)  # inference took 3 periods
    assert ex.next_action(S + 3 * DT + 5)[0] == 3
    assert ex.remaining(S + 3 * DT + 5) == 5


def test_ensemble_weights_exact():
    decay = 0.7
    ex = ChunkExecutor(DT, 'ensemble', ensemble_decay=decay)
    ex.add(S, np.zeros((8, 4)), now_ns=S)
    ex.add(S + DT, np.ones((8, 4)), now_ns=S + DT)
    ex.add(S + 3 * DT, np.full((8, 4), 2.0), now_ns=S + 3 * DT)
    t = S + 3 * DT + 1
    w = np.array([1.0, math.exp(-2 * decay), math.exp(-3 * decay)])  # ages 0, 2, 3 periods
    w /= w.sum()
    keys = [k for k, _ in ex.ensemble_weights(t)]
    assert keys == [S + 3 * DT, S + DT, S]
    np.testing.assert_allclose([wi for _, wi in ex.ensemble_weights(t)], w, rtol=1e-12)
    np.testing.assert_allclose(ex.next_action(t), np.full(4, w @ [2.0, 1.0, 0.0]), rtol=1e-12)
    assert ex.sources(t) == tuple(keys)


def test_per_dimension_decays_weigh_each_dimension_exactly():
    decay = [4.0, 4.0, 4.0, 0.0]  # motion follows the newest chunk, the gripper is the plain mean
    ex = ChunkExecutor(DT, 'ensemble', ensemble_decay=decay)
    ex.add(S, np.zeros((8, 4)), now_ns=S)
    ex.add(S + DT, np.ones((8, 4)), now_ns=S + DT)
    motion = np.array([1.0, math.exp(-4.0)]) / (1.0 + math.exp(-4.0))  # newest first
    np.testing.assert_allclose(ex.next_action(S + DT), [motion[0]] * 3 + [0.5], rtol=1e-12)
    assert ex.ensemble_weights(S + DT) == [(S + DT, pytest.approx(motion[0])), (S, pytest.approx(motion[1]))]
    # one value for every dimension is the scalar decay exactly
    a, b = ChunkExecutor(DT, 'ensemble', ensemble_decay=[0.7] * 4), ChunkExecutor(DT, 'ensemble', ensemble_decay=0.7)
    for ex in (a, b):
        ex.add(S, np.arange(32.0).reshape(8, 4), now_ns=S)
        ex.add(S + 2 * DT, -np.arange(32.0).reshape(8, 4), now_ns=S + 2 * DT)
    np.testing.assert_array_equal(a.next_action(S + 3 * DT), b.next_action(S + 3 * DT))


def test_zero_decay_is_the_mean_and_expired_chunks_stop_counting():
    ex = ChunkExecutor(DT, 'ensemble', ensemble_decay=0.0)
    ex.add(S, np.zeros((2, 4)), now_ns=S)
    ex.add(S + DT, np.ones((8, 4)), now_ns=S + DT)
    np.testing.assert_allclose(ex.next_action(S + DT), 0.5)
    np.testing.assert_allclose(ex.next_action(S + 2 * DT), 1.0)  # the first chunk has ended
    assert len(ex.chunks) == 1


def test_replace_mode_keeps_only_the_newest_chunk():
    ex = ChunkExecutor(DT, 'replace')
    ex.add(S, np.zeros((8, 4)), now_ns=S)
    ex.add(S + DT, np.ones((8, 4)), now_ns=S + DT)
    np.testing.assert_array_equal(ex.next_action(S + DT), np.ones(4))
    assert ex.sources(S + DT) == (S + DT,)


def test_rtc_splice_freezes_committed_steps_and_blends_the_overlap():
    ex = ChunkExecutor(DT, 'rtc', rtc_frozen_steps=2)
    old = ramp(8, start=0.0)
    new = np.full((8, 4), -5.0)
    ex.add(S, old, now_ns=S)
    now = S + 2 * DT + 3  # new chunk from frame S + DT arrives during slot 2 (its index 1)
    ex.add(S + DT, new, now_ns=now)
    # new index j is slot S + (j + 1) * DT; the old plan covers j = 0..6; frozen: past + current + 2 = 4
    w = prefix_weights(8, 4, 7)
    for j in range(8):
        expected = w[j] * old[j + 1, 0] + (1 - w[j]) * -5.0 if j < 7 else -5.0
        assert ex.action_at(S + (j + 1) * DT)[0] == pytest.approx(expected)
    for j in (1, 2, 3):  # current and the two frozen upcoming slots: exactly the old plan
        assert ex.action_at(S + (j + 1) * DT)[0] == old[j + 1, 0]


def test_revise_replaces_future_actions_and_same_key_replaces_the_chunk():
    ex = ChunkExecutor(DT)
    ex.add(S, np.zeros((8, 4)), now_ns=S, key=7)
    assert ex.revise(7, np.ones((8, 4)))
    np.testing.assert_array_equal(ex.next_action(S), np.ones(4))
    assert not ex.revise(8, np.ones((8, 4)))
    with pytest.raises(ValueError):
        ex.revise(7, np.ones((4, 4)))
    ex.add(S, np.full((8, 4), 3.0), now_ns=S, key=7)  # re-sent frame
    assert len(ex.chunks) == 1
    np.testing.assert_array_equal(ex.next_action(S), np.full(4, 3.0))


def test_remaining_and_refill_trigger():
    ex = ChunkExecutor(DT, refill_fraction=0.5)
    assert ex.remaining(S) == 0 and ex.needs_inference(S)
    ex.add(S, ramp(), now_ns=S)
    assert ex.remaining(S) == 8 and not ex.needs_inference(S)
    assert ex.remaining(S + 4 * DT) == 4 and not ex.needs_inference(S + 4 * DT)
    assert ex.remaining(S + 5 * DT) == 3 and ex.needs_inference(S + 5 * DT)
    np.testing.assert_array_equal(ex.plan(S + 5 * DT, 5)[:, 0], [5, 6, 7])


@pytest.mark.parametrize('kwargs', [{'dt_ns': 0}, {'mode': 'blend'}, {'refill_fraction': 0.0},
                                    {'ensemble_decay': float('nan')}, {'ensemble_decay': [0.5, float('inf')]},
                                    {'ensemble_decay': [[0.5]]}, {'rtc_frozen_steps': -1}])
def test_invalid_settings_raise(kwargs):
    with pytest.raises(ValueError):
        ChunkExecutor(**{'dt_ns': DT, **kwargs})


@pytest.mark.parametrize('mode', ['ensemble', 'rtc', 'replace'])
def test_a_pinned_chunk_alone_gives_the_action_on_its_slots(mode):
    ex = ChunkExecutor(DT, mode)
    ex.add(S, ramp(), now_ns=S, pinned=True)
    ex.add(S + DT, ramp(start=100.0), now_ns=S + DT)  # a newer flow chunk: no say where the pinned one runs
    for i in range(1, 8):
        np.testing.assert_array_equal(ex.action_at(S + i * DT), ramp()[i])
    np.testing.assert_array_equal(ex.action_at(S + 8 * DT), ramp(start=100.0)[7])  # after it: the flow chunk
    ex.add(S + 2 * DT, ramp(start=200.0), now_ns=S + 2 * DT, pinned=True)  # the newest pinned chunk wins
    np.testing.assert_array_equal(ex.action_at(S + 3 * DT), ramp(start=200.0)[1])
    assert ex.ensemble_weights(S + 3 * DT) == [(S + 2 * DT, 1.0)]


def test_revise_can_pin_a_chunk():
    ex = ChunkExecutor(DT)
    ex.add(S, ramp(), now_ns=S)
    ex.add(S + DT, ramp(start=100.0), now_ns=S + DT)
    assert ex.revise(S, ramp(start=50.0), pinned=True)
    np.testing.assert_array_equal(ex.action_at(S + 2 * DT), ramp(start=50.0)[2])
    assert ex.revise(S, ramp(start=50.0))  # unpinned again: back to the ensemble
    assert ex.action_at(S + 2 * DT)[0] not in (ramp(start=50.0)[2, 0], ramp(start=100.0)[1, 0])
