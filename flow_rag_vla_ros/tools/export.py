"""`flow-rag-vla export`: ONNX export of a checkpoint (vision.onnx + policy.onnx + export.json), verified
against PyTorch on random and real inputs; a bad export is refused (exit code 1, nothing written).
`--num-steps K` / `--method M` first derive a new checkpoint in `--out` (same weights, other sampler)."""
from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser('export', help='export the model to ONNX (verified)')
    p.add_argument('--checkpoint', required=True, help='checkpoint directory (config.json + model.safetensors)')
    p.add_argument('--out', default='', help='output directory (default: the checkpoint directory)')
    p.add_argument('--int8', action='store_true', help='also write the dynamic int8 expert (policy.int8.onnx)')
    p.add_argument('--dataset', default='', help='dataset directory whose frames are used as real inputs')
    p.add_argument('--tolerance', type=float, default=1e-4, help='max relative error vs PyTorch (fp32)')
    p.add_argument('--opset', type=int, default=17)
    p.add_argument('--num-steps', type=int, default=0,
                   help='sampler integration steps for a derived checkpoint written to --out (0 = keep)')
    p.add_argument('--method', choices=('euler', 'heun'), default='',
                   help='sampler integration method for a derived checkpoint written to --out (default: keep)')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from flow_rag_vla_ros.core.export import ExportError, export_checkpoint
    from flow_rag_vla_ros.nodes.runtime import resolve_checkpoint
    ckpt = resolve_checkpoint(args.checkpoint)
    sampler = {k: v for k, v in (('num_steps', args.num_steps), ('method', args.method)) if v}
    if sampler:  # same weights, another sampler: a new checkpoint directory, exported below
        from flow_rag_vla_ros.core.checkpoint import derive_checkpoint
        if not args.out:
            print('export refused: --num-steps / --method write a derived checkpoint; give it a new --out',
                  file=sys.stderr)
            return 2
        try:
            ckpt = derive_checkpoint(ckpt, args.out, **sampler)
        except (ValueError, FileExistsError) as e:
            print(f'export refused: {e}', file=sys.stderr)
            return 2
    try:
        report = export_checkpoint(ckpt, args.out or ckpt, dataset_dir=args.dataset or None, int8=args.int8,
                                   tolerance=args.tolerance, opset=args.opset)
    except ExportError as e:
        print(f'export refused: {e}', file=sys.stderr)
        return 1
    summary = {part: {'file': f['file'], 'relative_error': f['relative_error']}
               for part, f in report['files'].items()}
    print(json.dumps({'out': str(args.out or ckpt), 'opset': report['opset'], **summary,
                      **({'int8': report['int8']} if 'int8' in report else {})}, indent=2))
    return 0
