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
                 '--rounds', '2', '--pipelines', 'flow_only', 'parallel', '--layouts', 'processes',
                 '--checkpoint', str(ckpt),
                 '--backend', 'torch', '--retrieval-sizes', '2000', '--set', 'rag_monitor.worker_priority=nice',
                 '--json', str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result['pipelines']) == {'flow_only', 'parallel'}
    for pipeline, run in result['pipelines'].items():
        e2e = run['e2e_ms']
        assert e2e['n'] >= 10 and 0 < e2e['p50'] <= e2e['p95'] <= e2e['p99'], (pipeline, e2e)
        middleware = run['e2e_middleware_ms']  # the same frames, received earlier: before the harness's callback
        assert middleware['n'] == e2e['n'] and 0 < middleware['p50'] <= e2e['p50'], (pipeline, middleware)
        assert run['frames_replayed'] >= 2 * 15 and run['bad_outputs'] == []  # two rounds of 15 frames
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
        # two rounds pooled: every round's frames count, and each round keeps its own summary
        assert [r['round'] for r in run['rounds']] == [0, 1]
        assert sum(run['command_paths'].values()) == e2e['n']  # how each measured frame's command was released
        assert {p: v['n'] for p, v in run['e2e_ms_by_path'].items()} == run['command_paths']
        assert e2e['n'] == sum(r['e2e_ms']['n'] for r in run['rounds'])
    gap = result['replay']['parallel_minus_flow_only_p99_ms']
    assert gap['pooled'] == pytest.approx(result['pipelines']['parallel']['e2e_ms']['p99']
                                          - result['pipelines']['flow_only']['e2e_ms']['p99'])
    assert len(gap['rounds']) == 2
    assert gap['ci95'][0] <= gap['ci95'][1] and 0.0 <= gap['share_of_resamples_above_1ms'] <= 1.0
    gap_middleware = result['replay']['parallel_minus_flow_only_p99_middleware_ms']
    assert gap_middleware['pooled'] == pytest.approx(result['pipelines']['parallel']['e2e_middleware_ms']['p99']
                                                     - result['pipelines']['flow_only']['e2e_middleware_ms']['p99'])
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


def test_round_orders_put_every_pipeline_in_every_slot():
    from flow_rag_vla_ros.tools.bench import round_orders
    orders = round_orders(['flow_only', 'sequential', 'parallel'], 4)
    assert orders == [['flow_only', 'sequential', 'parallel'], ['sequential', 'parallel', 'flow_only'],
                      ['parallel', 'flow_only', 'sequential'], ['flow_only', 'sequential', 'parallel']]
    assert round_orders(['parallel'], 2) == [['parallel'], ['parallel']]


def _round(k, e2e, cpu, rss):
    from flow_rag_vla_ros.core.latency import summarize
    return {'round': k, 'slot': k, 'e2e_ms': summarize(e2e),
            'samples_ms': {'stamp_to_command': e2e, 'stage': {'chunk': [1.0] * len(e2e)},
                           'stamp_to_command_by_path': {'chunk': e2e[:-1], 'tick': e2e[-1:]},
                           'since_frame': {'chunk': [x - 1 for x in e2e]}},
            'frames_replayed': len(e2e), 'frames_commanded': len(e2e), 'dropped_frames': 0, 'frame_rate_hz': 20.0,
            'wall_s': 1.0, 'peak_rss_mb': {'flow_policy': rss}, 'peak_rss_mb_stack_total': rss,
            'bad_outputs': [], 'cpu_ms_per_frame': {'flow_policy': cpu},
            'command_paths': {'chunk': len(e2e) - 1, 'tick': 1}}


def test_pool_rounds_takes_percentiles_over_all_frames_not_the_mean_of_rounds():
    from flow_rag_vla_ros.tools.bench import pool_rounds
    fast = [10.0] * 99 + [12.0]
    slow = [10.0] * 90 + [30.0] * 10
    pooled = pool_rounds([_round(0, fast, 4.0, 100.0), _round(1, slow, 6.0, 120.0)])
    assert pooled['rounds'][0]['e2e_ms']['n'] == 100
    assert pooled['e2e_ms']['n'] == 200
    # pooled p99 sits inside the slow round's tail: 200 frames, 10 of them at 30 ms
    assert pooled['e2e_ms']['p99'] == pytest.approx(30.0)
    assert pooled['e2e_ms']['p50'] == pytest.approx(10.0)
    assert [r['e2e_ms']['p99'] for r in pooled['rounds']] == pytest.approx([np.percentile(fast, 99), 30.0])
    assert pooled['since_frame_ms']['chunk']['max'] == pytest.approx(29.0)
    assert pooled['cpu_ms_per_frame'] == {'flow_policy': pytest.approx(5.0)}
    assert pooled['peak_rss_mb'] == {'flow_policy': 120.0} and pooled['peak_rss_mb_stack_total'] == 120.0
    assert pooled['frames_replayed'] == 200 and pooled['dropped_frames'] == 0
    assert pooled['command_paths'] == {'chunk': 198, 'tick': 2}
    # each path's frames pooled over the rounds: the two ticks are the rounds' last frames (12 and 30 ms)
    assert pooled['e2e_ms_by_path']['tick']['n'] == 2 and pooled['e2e_ms_by_path']['tick']['max'] == 30.0
    assert pooled['e2e_ms_by_path']['chunk']['n'] == 198
