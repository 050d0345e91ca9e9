"""`flow-rag-vla bench` end to end on a tiny checkpoint: the JSON keys the README and issues rely on."""
import json

import numpy as np
import pytest

from flow_rag_vla_ros.cli import main

pytestmark = pytest.mark.ros


def test_bench_writes_pipelines_sim_loop_and_retrieval(tmp_path):
    from flow_rag_vla_ros.tools.testing import make_tiny_checkpoint
    ckpt = make_tiny_checkpoint(tmp_path / 'ckpt')
    out = tmp_path / 'bench.json'
    assert main(['bench', '--sections', 'replay', 'stack', 'retrieval', '--frames', '15', '--rate', '10',
                 '--pipelines', 'flow_only', 'parallel', '--layouts', 'processes', '--checkpoint', str(ckpt),
                 '--backend', 'torch', '--retrieval-sizes', '2000', '--set', 'rag_monitor.worker_priority=nice',
                 '--json', str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result['pipelines']) == {'flow_only', 'parallel'}
    for pipeline, run in result['pipelines'].items():
        e2e = run['e2e_ms']
        assert e2e['n'] >= 10 and 0 < e2e['p50'] <= e2e['p95'] <= e2e['p99'], (pipeline, e2e)
        assert run['frames_replayed'] >= 15 and run['bad_outputs'] == []
        # per stage: time inside the node, and camera stamp -> that stage's output (which must come later)
        stages = {'features', 'chunk', 'command'} | ({'correction'} if pipeline == 'parallel' else set())
        assert set(run['stage_ms']) == stages, pipeline
        since = run['since_frame_ms']
        assert since['features']['p50'] < since['chunk']['p50'] <= e2e['p50'] + 1e-6, (pipeline, since)
        assert {'vision_encoder', 'flow_policy', 'action_merger'} <= set(run['peak_rss_mb'])
        assert run['peak_rss_mb_stack_total'] == pytest.approx(sum(run['peak_rss_mb'].values()))
        # CPU per frame after the warm-up, every node: the encoder runs a CNN on each frame
        assert set(run['cpu_ms_per_frame']) == set(run['peak_rss_mb'])
        assert 0.5 < run['cpu_ms_per_frame']['vision_encoder'] < 1000 / result['replay']['settings']['rate_hz'] * 2
    assert 'rag_monitor' in result['pipelines']['parallel']['peak_rss_mb']
    assert result['pipelines'] == result['replay']['pipelines']  # the headline is the camera-rate replay
    assert set(result['sim_loop']['layouts']['processes']) == {'flow_only', 'parallel'}
    assert result['replay']['settings']['set'] == ['rag_monitor.worker_priority=nice']
    assert result['retrieval_ms']['2000']['p99'] > 0
    assert result['machine']['cores'] >= 1
    assert result['machine']['packages']['numpy'] == np.__version__  # what the numbers depend on besides the code


def test_cpu_seconds_counts_this_process_and_is_none_for_a_finished_one():
    import os
    import subprocess
    import sys
    import time

    from flow_rag_vla_ros.tools.bench import cpu_seconds
    before = cpu_seconds(os.getpid())
    end = time.process_time() + 0.2
    while time.process_time() < end:  # burn 0.2 s of CPU
        pass
    assert cpu_seconds(os.getpid()) - before >= 0.15
    done = subprocess.Popen([sys.executable, '-c', 'pass'])
    done.wait()
    assert cpu_seconds(done.pid) is None
