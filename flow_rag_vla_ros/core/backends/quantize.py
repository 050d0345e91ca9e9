"""Dynamic int8 quantisation of the exported action expert (`policy.onnx` -> `policy.int8.onnx`).

`onnxruntime.quantization.quantize_dynamic`: weights of MatMul/Gemm are stored as int8 once (per output
channel), activations are quantised per call. The graph is first run through ORT's `quant_pre_process`
(shape inference + graph optimisation), which fuses LayerNorm/GELU and lets more MatMuls be quantised. Only the expert is quantised; the conv vision trunk stays fp32 (dynamic
quantisation of convolutions is slower than fp32 in ONNX Runtime on CPU). The result is cached next to
the fp32 file with a JSON sidecar holding the source file's sha256; a changed `policy.onnx` (re-export)
re-quantises. Loading a cached int8 model imports no torch; quantising does (ORT's `quant_pre_process`
imports `onnxruntime.tools`, which imports torch), so `flow-rag-vla export --int8` quantises ahead of time.

Which MatMuls stay fp32 (`KEEP_FP32`, node-name patterns): measured on 84 recorded Reach states
(reach_v2, max |action - fp32| per state, median): everything int8 0.21; the noisy-action input projection
alone causes most of it (its input has 4 features, so a per-tensor uint8 activation scale over the noise's
range is coarse, and the error re-enters at every one of the K Euler steps); keeping it and the context
path (projector, context blocks, the per-block context K/V, all run once per call) in fp32 leaves 0.05.
The kept MatMuls are a small share of the FLOPs (the action blocks run K times). On an idle AVX2 CPU the
int8 policy step is only a little faster than fp32 (10.9 vs 11.7 ms p50, `bench`).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from flow_rag_vla_ros.core.backends.engine_cache import sha256_file

QUANT_OPS = ('MatMul', 'Gemm')
KEEP_FP32 = ('action_in_proj', 'context_projector', 'context_blocks', 'ctx_[kv]')  # see the module docstring
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
    if stored.get('keep_fp32') != list(KEEP_FP32):  # made with another recipe
        return None
    return out


def quantize_expert(fp32_path: str | os.PathLike, per_channel: bool = True) -> Path:
    """Quantise (or reuse the cached) int8 expert; returns its path. Written atomically."""
    fp32_path = Path(fp32_path)
    cached = cached_int8(fp32_path)
    if cached is not None:
        return cached
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process
    out = int8_path(fp32_path)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix='.quantize-') as work:
        source, pre, tmp = str(fp32_path), os.path.join(work, 'pre.onnx'), os.path.join(work, 'int8.onnx')
        try:
            quant_pre_process(source, pre)
            source = pre
        except Exception as e:  # pre-processing is an optimisation; quantise the plain graph instead
            log.info('quant_pre_process failed on %s (%s); quantising without it', fp32_path.name, e)
        keep = kept_fp32_nodes(source)
        # the quantiser first rewrites every Gemm as a MatMul named `<gemm name>_MatMul` and checks the
        # exclusion list against the new name: list each node under both names
        quantize_dynamic(source, tmp, weight_type=QuantType.QInt8, per_channel=per_channel,
                         op_types_to_quantize=list(QUANT_OPS),
                         nodes_to_exclude=[alias for name in keep for alias in (name, name + '_MatMul')])
        os.replace(tmp, out)
    meta = {'source': fp32_path.name, 'source_sha256': sha256_file(fp32_path), 'sha256': sha256_file(out),
            'preprocessed': source != str(fp32_path),
            'weight_type': 'QInt8', 'per_channel': per_channel, 'op_types': list(QUANT_OPS),
            'keep_fp32': list(KEEP_FP32), 'kept_fp32_nodes': len(keep)}
    _sidecar(out).write_text(json.dumps(meta, indent=2))
    return out


def kept_fp32_nodes(onnx_path: str | os.PathLike, patterns: tuple[str, ...] = KEEP_FP32) -> list[str]:
    """Names of the MatMul/Gemm nodes whose name matches one of `patterns`."""
    import re

    import onnx
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in QUANT_OPS and any(re.search(p, n.name) for p in patterns)]
