"""Durability: snapshot + journal recovery, SIGKILL while adding, corrupted journal tails."""
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from memory_helpers import case, embedding_for

from flow_rag_vla_ros.core.memory import FailureMemory, MemoryConfig
from flow_rag_vla_ros.core.memory.journal import SNAPSHOT_NAME

REDUCED = os.environ.get('FLOW_RAG_VLA_CI_REDUCED') == '1'
HERE = Path(__file__).parent


def state(m: FailureMemory) -> dict:
    return {c.id: (c.failure_type, c.seen, round(c.confidence, 6), c.corrected_success,
                   c.failed_chunk.tobytes(), None if c.correction_chunk is None else c.correction_chunk.tobytes(),
                   c.embedding.tobytes()) for c in m.cases()}


def test_reopen_restores_snapshot_plus_journal(tmp_path):
    config = MemoryConfig(directory=str(tmp_path), snapshot_every=5, approx_threshold=8)
    m = FailureMemory.open(config)
    ids = [m.add(case(embedding_for(i), seed=i))[0] for i in range(12)]
    m.remove(ids[3:5])
    m.update_confidence(ids[0], True)
    m.set_correction(ids[1], np.full((8, 4), -0.5))
    expected, kind = state(m), m.index_kind
    m.close()
    assert (tmp_path / SNAPSHOT_NAME).exists()
    again = FailureMemory.open(config)
    assert state(again) == expected and again.index_kind == kind == 'ivf'
    assert again.search(embedding_for(11))[0][0].id == ids[11] and again.search(embedding_for(3)) == []
    new_id, _ = again.add(case(embedding_for(50)))
    assert new_id > max(ids)  # ids are never reused


def test_crash_between_snapshot_and_journal_cleanup_keeps_everything(tmp_path):
    config = MemoryConfig(directory=str(tmp_path), snapshot_every=0)
    m = FailureMemory.open(config)
    for i in range(4):
        m.add(case(embedding_for(i)))
    old_segments = sorted(tmp_path.glob('journal-*.log'))
    keep = {p: p.read_bytes() for p in old_segments}
    m.snapshot()
    m.add(case(embedding_for(10)))
    expected = state(m)
    m.close()
    for p, data in keep.items():  # as if the process died before dropping covered segments
        p.write_bytes(data)
    assert state(FailureMemory.open(config)) == expected


def _run_writer(directory: Path, start: int) -> list[tuple[int, int]]:
    """Start a writer, SIGKILL it at a random moment, return the acknowledged (i, case_id) pairs."""
    proc = subprocess.Popen([sys.executable, str(HERE / 'kill_writer.py'), str(directory), str(start), str(HERE)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    acked, first = [], threading.Event()

    def read():
        for line in proc.stdout:
            if line.endswith('\n'):
                i, cid, _ = map(int, line.split())
                acked.append((i, cid))
                first.set()
    reader = threading.Thread(target=read)
    reader.start()
    assert first.wait(30), 'writer never acknowledged an add'
    time.sleep(random.uniform(0.02, 0.6))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader.join()
    return acked


@pytest.mark.slow
def test_sigkill_while_adding_loses_no_acknowledged_case(tmp_path):
    rounds = 2 if REDUCED else 6
    acked: dict[int, int] = {}
    start = 0
    for _ in range(rounds):
        pairs = _run_writer(tmp_path, start)
        assert pairs, 'the writer must have acknowledged adds before the kill'
        acked.update({cid: i for i, cid in pairs})
        start = pairs[-1][0] + 10_000  # fresh embeddings for the next incarnation
        m = FailureMemory.open(MemoryConfig(directory=str(tmp_path), approx_threshold=60))
        for cid, i in acked.items():
            stored = m.get(cid)
            assert stored is not None, f'acknowledged case {cid} (add #{i}) lost after SIGKILL'
            assert np.allclose(stored.embedding, embedding_for(i), atol=1e-6)
        assert m.search(embedding_for(pairs[-1][0]))[0][0].id == pairs[-1][1]
        m.close()


def _last_segment(directory: Path) -> Path:
    return sorted(directory.glob('journal-*.log'))[-1]


@pytest.mark.parametrize('damage', ['truncate', 'flip'])
def test_corrupt_journal_tail_is_reported_and_skipped(tmp_path, caplog, damage):
    config = MemoryConfig(directory=str(tmp_path), snapshot_every=0)
    m = FailureMemory.open(config)
    ids = [m.add(case(embedding_for(i), seed=i))[0] for i in range(10)]
    m.close()
    seg = _last_segment(tmp_path)
    data = bytearray(seg.read_bytes())
    if damage == 'truncate':
        data = data[:-37]  # cut the last record mid-payload
    else:
        for off in range(len(data) - 300, len(data) - 290):
            data[off] ^= 0xFF
    seg.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        again = FailureMemory.open(config)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(seg) in warnings[0] and 'offset' in warnings[0]
    assert ('torn' if damage == 'truncate' else 'CRC32') in warnings[0]
    assert sorted(c.id for c in again.cases()) == ids[:9]
    new_id, _ = again.add(case(embedding_for(99)))  # appends after the repaired tail stay readable
    again.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        third = FailureMemory.open(config)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    assert sorted(c.id for c in third.cases()) == ids[:9] + [new_id]


def test_one_writer_per_directory_and_a_killed_writer_leaves_it_free(tmp_path):
    from flow_rag_vla_ros.core.memory.journal import DirectoryInUse
    config = MemoryConfig(directory=str(tmp_path))
    first = FailureMemory.open(config)
    first.add(case(embedding_for(0)))
    with pytest.raises(DirectoryInUse, match=str(os.getpid())):
        FailureMemory.open(config)
    first.close()
    second = FailureMemory.open(config)  # closed: free again
    assert len(second) == 1
    other = subprocess.run([sys.executable, '-c', 'from flow_rag_vla_ros.core.memory import FailureMemory, '
                            f'MemoryConfig; FailureMemory.open(MemoryConfig(directory={str(tmp_path)!r}))'],
                           capture_output=True, text=True, timeout=60)
    assert other.returncode != 0 and f'is open in another process (pid {os.getpid()})' in other.stderr
    second.close()
    holder = subprocess.Popen([sys.executable, '-c', 'import time; from flow_rag_vla_ros.core.memory import '
                               f'FailureMemory, MemoryConfig; m = FailureMemory.open(MemoryConfig(directory='
                               f'{str(tmp_path)!r})); print("open", flush=True); time.sleep(60)'],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == 'open'
    with pytest.raises(DirectoryInUse):
        FailureMemory.open(config)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    after_kill = FailureMemory.open(config)  # the kernel dropped the dead holder's lock
    assert len(after_kill) == 1
    after_kill.close()
