from flow_rag_vla_ros.cli import build_parser
from flow_rag_vla_ros.core.config import load_node_parameters
from flow_rag_vla_ros.tools.evaluate import failure_repetitions, markdown, params_file, pipeline_spec


def _args(*extra):
    argv = ['eval', '--task', 'push', *extra]
    return build_parser(argv).parse_args(argv)


def _ep(success, failure_type='', state=(0.0, 0.0)):
    return {'success': success, 'failure_type': failure_type, 'failure_state': list(state)}


def test_failure_repetitions_counts_same_type_in_similar_state_only():
    episodes = [_ep(False, 'timeout', (0, 0)), _ep(False, 'timeout', (0.05, 0)),  # repeat
                _ep(False, 'collision', (0, 0)),                                    # other type
                _ep(False, 'timeout', (0.5, 0)),                                    # other place
                _ep(True), _ep(False, 'timeout', (0.51, 0.01))]                     # repeat of the 4th
    count, running = failure_repetitions(episodes, radius=0.1)
    assert count == 2 and running == [0, 1, 1, 1, 1, 2]
    # any type: the collision where a timeout happened before counts too
    count, running = failure_repetitions(episodes, radius=0.1, same_type=False)
    assert count == 3 and running == [0, 1, 2, 2, 2, 3]


def test_markdown_has_a_row_per_task_and_pipeline():
    row = {'success_rate': 0.5, 'failure_repetitions': 1, 'failures': 2, 'mean_steps_to_success': 10.0,
           'e2e_ms': {'p50': 1.0, 'p95': 2.0, 'p99': 3.0}, 'action_frequency_hz': 20.0, 'corrections_used': 4}
    md = markdown({'scenario': 's', 'episodes': 4, 'seed': 0, 'tasks': {'push': {'flow_only': row, 'parallel': row}}})
    assert '| push | flow_only | 0.50 | 1 |' in md and '| push | parallel |' in md


def test_markdown_names_the_recurring_situations():
    row = {'success_rate': 0.5, 'failure_repetitions': 1, 'failures': 2, 'mean_steps_to_success': 10.0,
           'e2e_ms': {'p50': None, 'p95': None, 'p99': None}, 'action_frequency_hz': 20.0, 'corrections_used': 4}
    report = {'scenario': 's', 'episodes': 40, 'seed': 3, 'tasks': {'push': {'parallel': row}}}
    assert '| push | parallel | 0.50 | 1 | 2 | - |' in markdown(report)  # any-type count absent: '-'
    row['failures_where_one_failed_before'] = 3
    assert '| push | parallel | 0.50 | 1 | 2 | 3 |' in markdown(report)
    assert 'initial states' not in markdown(report)
    assert 'cycling through 10 initial states (seeds 3..12)' in markdown({**report, 'situations': 10})


def test_set_overrides_reach_the_node_graph_and_the_in_process_run(tmp_path):
    args = _args('--set', 'flow_policy.noise_scale=0.5', 'rag_monitor.directory=/elsewhere')
    spec = pipeline_spec(args, 'push', 'rag_only', str(tmp_path / 'memory'))
    assert spec.overrides['flow_policy'] == {'noise_scale': 0.5, 'baseline': 'zero'}
    assert spec.overrides['rag_monitor']['directory'] == str(tmp_path / 'memory')  # each run's own memory wins
    merged = params_file(args, str(tmp_path))
    assert load_node_parameters(merged, 'flow_policy')['noise_scale'] == 0.5
    assert load_node_parameters(merged, 'flow_policy')['checkpoint']  # the rest of stack.yaml is kept
    assert params_file(_args('--params', 'x.yaml'), str(tmp_path)) == 'x.yaml'  # no --set: the file as given


def test_repeated_set_flags_add_up():
    """`--set A --set B` keeps both (argparse's nargs='*' alone kept only the last flag's values)."""
    args = _args('--set', 'flow_policy.noise_scale=0.5', '--set', 'rag_monitor.top_k=3', 'action_merger.deadline_ms=20')
    assert args.set == ['flow_policy.noise_scale=0.5', 'rag_monitor.top_k=3', 'action_merger.deadline_ms=20']
    assert _args().set == []
    bench = build_parser(['bench']).parse_args(['bench', '--set', 'a.b=1', '--set', 'c.d=2'])
    assert bench.set == ['a.b=1', 'c.d=2']


def test_a_report_names_its_checkpoint_and_the_hash_of_its_weights(tmp_path):
    import hashlib

    from flow_rag_vla_ros.core.config import load_node_parameters
    from flow_rag_vla_ros.paths import config_path
    from flow_rag_vla_ros.tools.evaluate import checkpoint_record
    (tmp_path / 'model.safetensors').write_bytes(b'weights')
    rec = checkpoint_record(str(tmp_path), None)
    assert rec == {'path': str(tmp_path), 'model_sha256': hashlib.sha256(b'weights').hexdigest()}
    # no --checkpoint: the one the stack's parameters name, as the runs themselves use
    default = load_node_parameters(config_path('stack.yaml'), 'flow_policy')['checkpoint']
    assert checkpoint_record('', None)['path'] == default


def test_a_report_records_the_parameter_overrides_it_ran_with():
    from flow_rag_vla_ros.tools.evaluate import report_header
    header = report_header(_args('--set', 'action_merger.splice_mode_by_task=[push:ensemble]', 'flow_policy.num_steps=3'))
    assert header['overrides'] == {'action_merger': {'splice_mode_by_task': ['push:ensemble']},
                                   'flow_policy': {'num_steps': 3}}
    assert report_header(_args())['overrides'] == {}  # the shipped defaults
