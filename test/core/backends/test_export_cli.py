"""`flow-rag-vla export` subcommand: parser wiring and a full run on the stand-in checkpoint."""
from __future__ import annotations

import argparse
import json

from flow_rag_vla_ros.tools import export as export_tool


def test_export_command_writes_verified_files(tmp_path, standin_loaders, capsys):
    parser = argparse.ArgumentParser()
    export_tool.register(parser.add_subparsers(dest='command'))
    ckpt, out = tmp_path / 'ckpt', tmp_path / 'out'
    ckpt.mkdir()
    args = parser.parse_args(['export', '--checkpoint', str(ckpt), '--out', str(out), '--int8'])
    assert args.func(args) == 0
    assert {'vision.onnx', 'policy.onnx', 'policy.int8.onnx', 'export.json'} <= {p.name for p in out.iterdir()}
    printed = json.loads(capsys.readouterr().out)
    assert printed['policy']['relative_error']['random'] <= 1e-4


def test_export_command_refuses_bad_export(tmp_path, standin_loaders, capsys):
    parser = argparse.ArgumentParser()
    export_tool.register(parser.add_subparsers(dest='command'))
    out = tmp_path / 'out'
    args = parser.parse_args(['export', '--checkpoint', str(tmp_path), '--out', str(out), '--tolerance', '0'])
    assert args.func(args) == 1
    assert 'export refused' in capsys.readouterr().err
    assert not list(out.glob('*.onnx'))


def test_export_num_steps_writes_a_derived_verified_checkpoint(tmp_path, capsys):
    from flow_rag_vla_ros.core.checkpoint import load_config
    from flow_rag_vla_ros.tools.testing import make_tiny_checkpoint
    parser = argparse.ArgumentParser()
    export_tool.register(parser.add_subparsers(dest='command'))
    ckpt = make_tiny_checkpoint(tmp_path / 'ckpt', num_steps=3)
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    args = parser.parse_args(['export', '--checkpoint', str(ckpt), '--num-steps', '2'])
    assert args.func(args) == 2 and '--out' in capsys.readouterr().err  # never re-samples the source in place
    out = tmp_path / 'k2'
    args = parser.parse_args(['export', '--checkpoint', str(ckpt), '--num-steps', '2', '--out', str(out)])
    assert args.func(args) == 0
    assert load_config(out).num_steps == 2 and load_config(ckpt).num_steps == 3
    report = json.loads((out / 'export.json').read_text())
    assert report['files']['policy']['relative_error']['random'] <= 1e-4
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before  # the source is untouched


def test_export_int8_errors_measures_each_group_on_recorded_frames(tmp_path, capsys):
    import numpy as np

    from flow_rag_vla_ros.core.spec import INSTRUCTIONS
    from flow_rag_vla_ros.sim.dataset import Episode, write_episode
    from flow_rag_vla_ros.tools.testing import make_tiny_checkpoint
    ckpt = make_tiny_checkpoint(tmp_path / 'ckpt')
    rng = np.random.default_rng(0)
    for i in range(2):
        write_episode(tmp_path / 'data', Episode(
            rng.integers(0, 255, (6, 96, 96, 3), dtype=np.uint8), rng.normal(size=(6, 7)).astype(np.float32),
            rng.uniform(-1, 1, (6, 4)).astype(np.float32), False, INSTRUCTIONS['push'], 'push', i, 'timeout'), i)
    parser = argparse.ArgumentParser()
    export_tool.register(parser.add_subparsers(dest='command'))
    out_json = tmp_path / 'errors.json'
    args = parser.parse_args(['export', '--checkpoint', str(ckpt), '--dataset', str(tmp_path / 'data'),
                              '--int8-errors', str(out_json)])
    assert args.func(args) == 0
    report = json.loads(out_json.read_text())
    assert report['inputs'] == 2 * 3 and report['task'] == 'push'
    groups = report['groups']
    # one block, 3 unrolled Euler steps: 3 copies of each per-block MatMul, 3 output projections
    assert {g: groups[g]['nodes'] for g in ('mlp_down', 'mlp_up', 'qkv', 'attention_out', 'action_out_proj')} == {
        'mlp_down': 3, 'mlp_up': 3, 'qkv': 9, 'attention_out': 3, 'action_out_proj': 3}
    assert all(0 < groups[g]['median'] <= groups[g]['p90'] < 1 for g in groups)  # quantised: moved, not broken
    assert json.loads(capsys.readouterr().out)['int8_errors'].keys() == groups.keys()
    # graphs exported elsewhere (--out holds no config or instructions): measured on those graphs, same numbers
    args = parser.parse_args(['export', '--checkpoint', str(ckpt), '--out', str(tmp_path / 'out'), '--dataset',
                              str(tmp_path / 'data'), '--int8-errors', str(tmp_path / 'errors_out.json')])
    assert args.func(args) == 0
    assert json.loads((tmp_path / 'errors_out.json').read_text())['groups'] == groups
    capsys.readouterr()
    # without recorded frames there is nothing to measure on
    args = parser.parse_args(['export', '--checkpoint', str(ckpt), '--int8-errors', str(out_json)])
    assert args.func(args) == 2 and '--dataset' in capsys.readouterr().err
