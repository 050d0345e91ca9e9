"""What every stack node shares: native thread pools are capped so idle BLAS / OpenMP workers cannot spin."""
import numpy as np  # noqa: F401  (loads OpenBLAS, the pool the cap must reach)
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from flow_rag_vla_ros.nodes.base import limit_native_threads


@pytest.mark.parametrize('env, expected', [(None, 1), ('2', 2)])
def test_limit_native_threads_follows_omp_num_threads(monkeypatch, env, expected):
    if env is None:
        monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    else:
        monkeypatch.setenv('OMP_NUM_THREADS', env)
    with threadpool_limits(limits=None):  # restores this process's pools on exit
        threadpool_limits(3)
        assert {info['num_threads'] for info in threadpool_info()} == {3}
        reported = limit_native_threads()
        assert 'openblas' in reported
        assert set(reported.values()) == {expected}
        assert {info['num_threads'] for info in threadpool_info()} == {expected}


@pytest.mark.ros
@pytest.mark.skipif(len(__import__('os').sched_getaffinity(0)) < 2, reason='needs two CPUs to pin to one of them')
def test_cpu_affinity_pins_every_thread_of_a_node_process(tmp_path):
    """`cpu_affinity` as its own process: executor, DDS and worker threads all on the given CPUs."""
    import os
    import subprocess
    import sys
    import time
    cpu = max(os.sched_getaffinity(0))
    log = tmp_path / 'merger.log'
    with open(log, 'wb') as out:
        proc = subprocess.Popen([sys.executable, '-m', 'flow_rag_vla_ros.nodes.action_merger_node', '--ros-args',
                                 '-p', f'cpu_affinity:=[{cpu}]'], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while b'pinned to CPUs' not in log.read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        tasks = os.listdir(f'/proc/{proc.pid}/task')
        assert len(tasks) > 2 and all(os.sched_getaffinity(int(t)) == {cpu} for t in tasks)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cpu_affinity_refuses_a_negative_cpu():
    from flow_rag_vla_ros.nodes.base import NodeProcessConfig
    with pytest.raises(ValueError, match='cpu_affinity'):
        NodeProcessConfig(cpu_affinity=[-1])
