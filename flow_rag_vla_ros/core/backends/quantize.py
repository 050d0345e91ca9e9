"""Dynamic int8 quantisation of the exported action expert (`policy.onnx` -> `policy.int8.onnx`).

`onnxruntime.quantization.quantize_dynamic`: weights of MatMul/Gemm are stored as int8 once (per output
channel), activations are quantised per call. The graph is first run through ORT's `quant_pre_process`
(shape inference + graph optimisation), which fuses LayerNorm/GELU and lets more MatMuls be quantised. Only the expert is quantised; the conv vision trunk stays fp32 (dynamic
quantisation of convolutions is slower than fp32 in ONNX Runtime on CPU). The result is cached next to
the fp32 file with a JSON sidecar holding the source file's sha256; a changed `policy.onnx` (re-export)
re-quantises. Loading a cached int8 model imports no torch; quantising does (ORT's `quant_pre_process`
imports `onnxruntime.tools`, which imports torch), so `flow-rag-vla export --int8` quantises ahead of time.

Which MatMuls are int8 (`QUANTIZE`, node-name patterns): only the action blocks' MLP down-projections,
whose input is a GELU output. Measured on 90 recorded Push states (vla_v5, max |action - fp32| per state,
median; each group quantised alone: `group_errors`, run by `flow-rag-vla export --checkpoint models/vla_v5
--dataset data/demos_2cam_v5 --int8-errors OUT.json`; docs/results/int8_recipe/group_errors_vla_v5_push.json):
    down-projections (mlp.2) 0.004 | up-projections (mlp.0) 0.032 | q/k/v 0.039 | attention out 0.039 |
    action_out_proj 0.063 | all of the action blocks and the output projection (the earlier recipe) 0.086.
Dynamic quantisation gives every activation tensor one uint8 scale per call; LayerNorm outputs (the
inputs of q/k/v, mlp.0, the output projection) carry a few large channels, so that scale is coarse for the
rest, and the error re-enters at each of the K Euler steps. The earlier recipe cost Push 10 points (0.53 vs
0.43 over 200 episodes, seeds 7000-7199). The down-projections keep most of what int8 saved in time here
(the expert 7-13 % faster than fp32, `bench --sections backends`; the earlier recipe 11 %), and on this
AVX2 CPU int8 saves little anyway.
A model with no matching MatMul (the MLP baseline) cannot be quantised with this recipe: `ValueError`.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from flow_rag_vla_ros.core.backends.engine_cache import sha256_file

QUANT_OPS = ('MatMul', 'Gemm')
QUANTIZE = (r'/blocks\.\d+/mlp/mlp\.2(_\d+)?/',)  # see the module docstring
log = logging.getLogger(__name__)


def int8_path(fp32_path: str | os.PathLike) -> Path:
    p = Path(fp32_path)
    return p.with_name(p.stem + '.int8.onnx')


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + '.json')


def cached_int8(fp32_path: str | os.PathLike) -> Path | None:
    """The cached int8 model if it was made from exactly this fp32 file, else None."""
    out = int8_path(fp32_path)
    meta = _sidecar(out)
    if not (out.exists() and meta.exists()):
        return None
    try:
        stored = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    if stored.get('source_sha256') != sha256_file(fp32_path) or stored.get('sha256') != sha256_file(out):
        return None
    if stored.get('quantize') != list(QUANTIZE):  # made with another recipe
        return None
    return out


def quantize_expert(fp32_path: str | os.PathLike, per_channel: bool = True) -> Path:
    """Quantise (or reuse the cached) int8 expert; returns its path. Written atomically."""
    fp32_path = Path(fp32_path)
    cached = cached_int8(fp32_path)
    if cached is not None:
        return cached
    out = int8_path(fp32_path)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix='.quantize-') as work:
        tmp, source = os.path.join(work, 'int8.onnx'), preprocessed_graph(fp32_path, work)
        preprocessed = source != str(fp32_path)
        chosen = quantize_graph(source, tmp, QUANTIZE, per_channel)
        if not chosen:
            raise ValueError(f'{fp32_path.name}: no MatMul matches the int8 recipe {QUANTIZE} (an action expert '
                             'with transformer blocks is expected)')
        os.replace(tmp, out)
    meta = {'source': fp32_path.name, 'source_sha256': sha256_file(fp32_path), 'sha256': sha256_file(out),
            'preprocessed': preprocessed,
            'weight_type': 'QInt8', 'per_channel': per_channel, 'op_types': list(QUANT_OPS),
            'quantize': list(QUANTIZE), 'int8_nodes': len(chosen)}
    _sidecar(out).write_text(json.dumps(meta, indent=2))
    return out


def preprocessed_graph(fp32_path: str | os.PathLike, work_dir: str | os.PathLike) -> str:
    """ORT's quantisation pre-processing of `fp32_path`, written into `work_dir`; its path, or `fp32_path`'s
    own when pre-processing fails (it is an optimisation: the plain graph quantises too)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    pre = os.path.join(work_dir, 'pre.onnx')
    try:
        quant_pre_process(str(fp32_path), pre)
        return pre
    except Exception as e:
        log.info('quant_pre_process failed on %s (%s); quantising without it', Path(fp32_path).name, e)
        return str(fp32_path)


def quantize_graph(source: str | os.PathLike, out_path: str | os.PathLike, patterns: tuple[str, ...],
                   per_channel: bool = True) -> list[str]:
    """Write `source` (see `preprocessed_graph`) with the MatMuls matching `patterns` dynamically quantised to
    `out_path`. Returns the quantised node names; nothing is written if none match."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    chosen = int8_nodes(source, patterns)
    if chosen:
        # the quantiser first rewrites every Gemm as a MatMul named `<gemm name>_MatMul` and checks the
        # node list against the new name: list each node under both names
        quantize_dynamic(str(source), str(out_path), weight_type=QuantType.QInt8, per_channel=per_channel,
                         op_types_to_quantize=list(QUANT_OPS),
                         nodes_to_quantize=[alias for name in chosen for alias in (name, name + '_MatMul')])
    return chosen


# groups of the expert's MatMuls (every unrolled Euler step's copy) for `group_errors`
INT8_GROUPS = {'mlp_down': QUANTIZE, 'mlp_up': (r'/blocks\.\d+/mlp/mlp\.0(_\d+)?/',),
               'qkv': (r'/blocks\.\d+/[qkv](_\d+)?/',), 'attention_out': (r'/blocks\.\d+/o(_\d+)?/',),
               'action_out_proj': (r'/action_out_proj(_\d+)?/',),
               # everything but the input projection and the context path (the recipe before this one)
               'earlier_recipe': (r'^(?!.*(action_in_proj|context_projector|context_blocks|ctx_[kv]))',)}


def group_errors(fp32_path: str | os.PathLike, feeds: list[dict], groups: dict = INT8_GROUPS) -> dict:
    """For each group quantised alone: max |action - fp32| per input, summarised over the inputs
    ({'median', 'p90', 'nodes'}). `feeds`: expert inputs (tokens, proprio, language, noise) as batches of 1."""
    import numpy as np

    from flow_rag_vla_ros.core.backends.onnx_backend import make_session
    fp32 = make_session(fp32_path)
    reference = [fp32.run(None, f)[0] for f in feeds]
    out = {}
    with tempfile.TemporaryDirectory(prefix='int8-groups-') as work:
        source = preprocessed_graph(fp32_path, work)  # once for every group
        for name, patterns in groups.items():
            path = os.path.join(work, f'{name}.onnx')
            chosen = quantize_graph(source, path, patterns)
            if not chosen:
                out[name] = {'nodes': 0}
                continue
            session = make_session(path)
            errors = [float(np.abs(session.run(None, f)[0] - r).max()) for f, r in zip(feeds, reference)]
            out[name] = {'median': float(np.median(errors)), 'p90': float(np.percentile(errors, 90)),
                         'nodes': len(chosen)}
    return out


def int8_nodes(onnx_path: str | os.PathLike, patterns: tuple[str, ...] = QUANTIZE) -> list[str]:
    """Names of the MatMul/Gemm nodes whose name matches one of `patterns`."""
    import re

    import onnx
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in QUANT_OPS and any(re.search(p, n.name) for p in patterns)]
