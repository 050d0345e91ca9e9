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
