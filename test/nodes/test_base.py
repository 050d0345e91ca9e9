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

    from flow_rag_vla_ros.tools.testing import node_process
    cpu = max(os.sched_getaffinity(0))
    with node_process('flow_rag_vla_ros.nodes.action_merger_node', {'cpu_affinity': f'[{cpu}]'},
                      tmp_path / 'merger.log', b'pinned to CPUs') as proc:
        tasks = os.listdir(f'/proc/{proc.pid}/task')
        assert len(tasks) > 2 and all(os.sched_getaffinity(int(t)) == {cpu} for t in tasks)


def test_cpu_affinity_refuses_a_negative_cpu():
    from flow_rag_vla_ros.nodes.base import NodeProcessConfig
    with pytest.raises(ValueError, match='cpu_affinity'):
        NodeProcessConfig(cpu_affinity=[-1])
