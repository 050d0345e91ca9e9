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
