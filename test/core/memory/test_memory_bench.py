"""Retrieval benchmark: the index the config picks meets the latency budget at 10k cases."""
import os

from flow_rag_vla_ros.core.memory.bench import retrieval_benchmark


def test_retrieval_at_10k_is_under_one_millisecond_p99():
    queries = 200 if os.environ.get('FLOW_RAG_VLA_CI_REDUCED') == '1' else 1000
    r = retrieval_benchmark(sizes=(10_000,), queries=queries, seed=1)['10000']
    assert r['index'] == 'ivf' and r['build_s'] < 60
    assert r['p50'] <= r['p99'] <= 1.0
    assert r['recall_at_5'] > 0.9
