"""scripts/parallel_gap_runs.py: runs grouped by their --set overrides, the rule and the goal counted per run."""
import json
import sys
from pathlib import Path

import pytest

@pytest.fixture(scope='module')
def gap_runs(load_script):
    return load_script('parallel_gap_runs')


def _bench(path: Path, flow_only_p99: float, parallel_p99: float, overrides=()) -> Path:
    e2e = lambda p99: {'e2e_ms': {'p99': p99}}  # noqa: E731
    path.write_text(json.dumps({'replay': {
        'settings': {'set': list(overrides)},
        'pipelines': {'flow_only': e2e(flow_only_p99), 'parallel': e2e(parallel_p99)},
        'parallel_minus_flow_only_p99_ms': {'pooled': parallel_p99 - flow_only_p99, 'ci95': [-1.0, 2.0]}}}))
    return path


def test_runs_are_summarised_per_setting(gap_runs, tmp_path, monkeypatch):
    files = [_bench(tmp_path / 'a.json', 11.0, 11.5), _bench(tmp_path / 'b.json', 12.5, 14.5),
             _bench(tmp_path / 'c.json', 10.0, 13.0, ['action_merger.alarm_wait_ms=0'])]
    (tmp_path / 'sim_only.json').write_text(json.dumps({'sim_loop': {}}))  # no replay: skipped
    out = tmp_path / 'summary.json'
    monkeypatch.setattr(sys, 'argv', ['parallel_gap_runs.py', *map(str, files), str(tmp_path / 'sim_only.json'),
                                      '--json', str(out)])
    gap_runs.main()
    result = json.loads(out.read_text())
    assert [Path(r['file']).name for r in result['runs']] == ['a.json', 'b.json', 'c.json']
    defaults = result['by_setting']['defaults']
    assert defaults['runs'] == 2 and defaults['mean_gap'] == pytest.approx(1.25)
    assert defaults['within_limit'] == 1 and defaults['max_gap'] == pytest.approx(2.0)
    assert defaults['flow_only_meets_goal'] == 1 and defaults['parallel_meets_goal'] == 1  # 11.0 / 11.5 <= 12 ms
    no_wait = result['by_setting']['action_merger.alarm_wait_ms=0']
    assert no_wait == {'runs': 1, 'mean_gap': 3.0, 'min_gap': 3.0, 'max_gap': 3.0, 'within_limit': 0,
                       'flow_only_meets_goal': 1, 'parallel_meets_goal': 0}


def test_files_without_a_replay_are_refused(gap_runs, tmp_path, monkeypatch):
    (tmp_path / 'sim_only.json').write_text(json.dumps({'sim_loop': {}}))
    monkeypatch.setattr(sys, 'argv', ['parallel_gap_runs.py', str(tmp_path / 'sim_only.json')])
    with pytest.raises(SystemExit, match='replay section'):
        gap_runs.main()
