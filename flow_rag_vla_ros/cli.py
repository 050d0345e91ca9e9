"""`flow-rag-vla`: the user-facing command line. Each subcommand lives in `flow_rag_vla_ros.tools.<name>`.

A tool module exposes `register(subparsers)`, which adds its parser and sets `func=run` on it. Modules
are imported lazily per subcommand so `flow-rag-vla sim` never pays for training-only imports.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
SUBCOMMANDS = {
    'sim': ('flow_rag_vla_ros.tools.sim', 'run the full node graph in the PyBullet sim loop'),
    'collect': ('flow_rag_vla_ros.tools.collect', 'collect scripted-expert demonstrations'),
    'train': ('flow_rag_vla_ros.tools.train', 'train the flow policy'),
    'dagger': ('flow_rag_vla_ros.tools.dagger', "label the policy's own rollouts with the scripted expert"),
    'eval': ('flow_rag_vla_ros.tools.evaluate', 'evaluate tasks, scenarios and pipelines'),
    'failure-head': ('flow_rag_vla_ros.tools.failure_head', 'train the learned failure head on policy rollouts'),
    'bench': ('flow_rag_vla_ros.tools.bench', 'latency / retrieval / backend benchmarks'),
    'export': ('flow_rag_vla_ros.tools.export', 'export the model to ONNX (verified)'),
    'memory': ('flow_rag_vla_ros.tools.memory', 'inspect or export a failure memory directory'),
    'record': ('flow_rag_vla_ros.tools.record', 'record the stack topics to a rosbag2'),
    'replay': ('flow_rag_vla_ros.tools.replay', 'replay a rosbag2 through the stack and compare'),
    'launch': ('flow_rag_vla_ros.launcher', 'start the stack nodes (pip-side equivalent of ros2 launch)'),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='flow-rag-vla', description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    wanted = next((a for a in argv if not a.startswith('-')), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        if name == wanted:
            importlib.import_module(module).register(sub)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if getattr(args, 'func', None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == '__main__':
    sys.exit(main())
