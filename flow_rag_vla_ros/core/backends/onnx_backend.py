"""ONNX Runtime backend (`onnxruntime`, `onnxruntime-int8`): runs the verified exports in the checkpoint.

No torch import on this path (a node on ORT stays ~100 MB instead of ~300 MB), unless the ONNX files are
missing or stale (model weights changed since the export) and `auto_export=True` (default): then the
checkpoint is exported and verified on the fly (that imports torch once); if that is impossible the
load fails and the loader falls back to `torch`. Files whose sha256 differs from `export.json` (edited
after verification) are refused. Shapes (image size, horizon) are read from the graphs themselves.
CPUExecutionProvider with `threads` intra-op threads (1 is fastest at batch 1 on these CPUs);
CUDAExecutionProvider when `device='cuda'` and it is installed.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from flow_rag_vla_ros.core.backends.base import (PARTS, BackendUnavailable, PolicyBackend, Preprocess, as_batch,
                                                 load_preprocess)
from flow_rag_vla_ros.core.backends.engine_cache import sha256_file

log = logging.getLogger(__name__)
VISION_FILE, POLICY_FILE, REPORT_FILE = 'vision.onnx', 'policy.onnx', 'export.json'
FILES = {'vision': VISION_FILE, 'policy': POLICY_FILE}


def make_session(path: str | Path, threads: int = 1, device: str = 'cpu'):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    providers = ['CPUExecutionProvider']
    if device.startswith('cuda'):
        if 'CUDAExecutionProvider' not in ort.get_available_providers():
            raise BackendUnavailable('onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)')
        providers.insert(0, 'CUDAExecutionProvider')
    return ort.InferenceSession(str(path), so, providers=providers)


class OnnxRuntimeBackend(PolicyBackend):
    name = 'onnxruntime'

    def __init__(self, vision_path: Path | None, policy_path: Path | None, preprocess: Preprocess | None,
                 threads: int = 1, device: str = 'cpu', name: str = 'onnxruntime'):
        self.name, self.device = name, 'cuda' if device.startswith('cuda') else 'cpu'
        self.parts = tuple(p for p, f in (('vision', vision_path), ('policy', policy_path)) if f is not None)
        self.preprocess = preprocess
        self.vision = make_session(vision_path, threads, device) if vision_path else None
        self.expert = make_session(policy_path, threads, device) if policy_path else None
        if self.vision is not None:
            shape = self.vision.get_inputs()[0].shape  # [1, 3, H, W]
            self.image_shape = (int(shape[2]), int(shape[3]))
            self._vision_in = self.vision.get_inputs()[0].name
        if self.expert is not None:
            inputs = {i.name: i for i in self.expert.get_inputs()}
            self.horizon = int(inputs['noise'].shape[1])
            self._expert_in = [i.name for i in self.expert.get_inputs()]

    def encode(self, image: np.ndarray) -> np.ndarray:
        self._need('vision')
        x = as_batch(self.preprocess(image), 4)
        return self.vision.run(None, {self._vision_in: x})[0][0]

    def act(self, tokens, proprio, language, noise) -> np.ndarray:
        self._need('policy')
        feeds = {'tokens': as_batch(tokens, 3), 'proprio': as_batch(proprio, 2),
                 'language': as_batch(language, 2), 'noise': as_batch(noise, 3)}
        return self.expert.run(None, {k: feeds[k] for k in self._expert_in})[0][0]


def stale_reason(checkpoint_dir: Path, parts: Sequence[str]) -> str | None:
    """Why the exported files cannot be used as they are (missing, edited, older than the weights), or None."""
    missing = [FILES[p] for p in parts if not (checkpoint_dir / FILES[p]).exists()]
    if missing:
        return f'{", ".join(missing)} missing in {checkpoint_dir}'
    report_path = checkpoint_dir / REPORT_FILE
    if not report_path.exists():
        return f'{REPORT_FILE} missing (unverified export)'
    report = json.loads(report_path.read_text())
    for p in parts:
        if report.get('files', {}).get(p, {}).get('sha256') != sha256_file(checkpoint_dir / FILES[p]):
            return f'{FILES[p]} differs from the verified export recorded in {REPORT_FILE}'
    for fname, digest in report.get('source', {}).items():
        if (checkpoint_dir / fname).exists() and sha256_file(checkpoint_dir / fname) != digest:
            return f'{fname} changed since the export'
    return None


def ensure_exported(checkpoint_dir: Path, parts: Sequence[str], auto_export: bool = True) -> None:
    reason = stale_reason(checkpoint_dir, parts)
    if reason is None:
        return
    if not auto_export:
        raise BackendUnavailable(f'{reason}; run `flow-rag-vla export --checkpoint {checkpoint_dir}`')
    log.info('%s: exporting %s to ONNX (verified)', reason, checkpoint_dir)
    try:
        from flow_rag_vla_ros.core.export import export_checkpoint
        export_checkpoint(checkpoint_dir, checkpoint_dir)
    except Exception as e:
        raise BackendUnavailable(f'{reason} and exporting failed: {e}') from e


def load(checkpoint_dir: Path, parts: Sequence[str] = PARTS, device: str = 'cpu', threads: int = 1,
         auto_export: bool = True, int8: bool = False, preprocess: Preprocess | None = None,
         **_) -> OnnxRuntimeBackend:
    import onnxruntime  # noqa: F401  (fail fast, before any export work, when ORT is absent)
    checkpoint_dir = Path(checkpoint_dir)
    ensure_exported(checkpoint_dir, parts, auto_export)
    policy_path = checkpoint_dir / POLICY_FILE if 'policy' in parts else None
    if int8 and policy_path is not None:
        from flow_rag_vla_ros.core.backends.quantize import quantize_expert
        policy_path = quantize_expert(policy_path)
    vision_path = checkpoint_dir / VISION_FILE if 'vision' in parts else None
    if vision_path is not None and preprocess is None:
        preprocess = load_preprocess(checkpoint_dir)
    return OnnxRuntimeBackend(vision_path, policy_path, preprocess, threads, device,
                              name='onnxruntime-int8' if int8 else 'onnxruntime')


def load_int8(checkpoint_dir: Path, **opts) -> OnnxRuntimeBackend:
    """Dynamic int8 expert (`policy.int8.onnx`, cached next to the fp32 file); the vision trunk stays fp32."""
    opts.pop('int8', None)
    return load(checkpoint_dir, int8=True, **opts)
