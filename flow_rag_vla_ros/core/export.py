"""ONNX export of the flow policy with numeric verification; a bad export is refused and never written.

Two graphs go into the checkpoint directory:
- `vision.onnx`: float preprocessed image `images (1, 3, H, W)` -> `tokens (1, N, C)`.
- `policy.onnx`: the whole unrolled K-step sampler `tokens (1, N, C), proprio (1, 7), language (1, 384),
  noise (1, H, 4)` -> `actions (1, H, 4)` (raw actions; normalisation buffers are inside the graph).
- `export.json`: opset, sha256 and size of each file, input/output shapes, verification errors.

Design choice: unrolled K-step sampler, not one denoising step with the context K/V as inputs.
Measured with ONNX Runtime 1.32, CPUExecutionProvider, 1 intra-op thread, batch 1, on this machine (AMD
EPYC, 2 cores shared with other jobs), a pi0-style expert d=128, 3 layers, 4 heads, 18 context tokens,
H=8, K=10 Euler steps, 500 iterations after 50 warm-up, three runs
(`core.backends.bench.compare_export_modes`, stand-in model of test/core/backends/standin.py):
    (a) context graph once + step graph called 10x from Python:  p50 1.73 / 1.81 / 1.82 ms, p99 2.1-2.8 ms
    (b) whole unrolled sampler, one session call:                 p50 1.89 / 1.69 / 1.83 ms, p99 2.1-2.6 ms
Equal within noise on CPU (ORT's per-call overhead is ~20 us, so 11 calls cost ~0.2 ms at most and the
arithmetic dominates). (b) wins on everything else: one call per frame from every runtime, and
TensorRT / CUDA EP see the whole loop as one graph (no host round trip between steps, where on a GPU the
per-launch overhead is what dominates), static shapes, nothing to keep consistent between two graphs.
The K/V context is still computed once per call (the trace records it before the loop). (a) is what
run-time guidance between steps needs: RTC guided sampling (core/rtc.py) calls `velocity_fn(x, t)` per
step, so a node running RTC on ONNX Runtime needs the context + step pair (the graphs
`compare_export_modes` builds) in addition to `policy.onnx`; unguided frames keep the one-call sampler.
K is fixed per checkpoint: re-export when it changes.

Verification: every graph is exported to a temporary file, checked with `onnx.checker`, run with ONNX
Runtime on random inputs and on real ones (dataset frames, their vision tokens and the checkpoint's cached
instruction embeddings when given) and compared with PyTorch. Relative error = max|ort - torch| /
max(max|torch|, 1e-6); above the tolerance (1e-4 in fp32) the export raises `ExportError` and the
temporary file is deleted, so no bad `.onnx` ever lands in the checkpoint.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

OPSET = 17
TOLERANCE = 1e-4
VISION_FILE, POLICY_FILE, REPORT_FILE = 'vision.onnx', 'policy.onnx', 'export.json'
VISION_INPUTS, VISION_OUTPUTS = ('images',), ('tokens',)
POLICY_INPUTS, POLICY_OUTPUTS = ('tokens', 'proprio', 'language', 'noise'), ('actions',)
PROPRIO_DIM, LANGUAGE_DIM, ACTION_DIM = 7, 384, 4


class ExportError(RuntimeError):
    """The exported graph does not reproduce PyTorch (or cannot be exported); nothing was written."""


def relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    if out.shape != ref.shape:
        return float('inf')
    if not np.isfinite(out).all():
        return float('inf')
    return float(np.max(np.abs(out - ref)) / max(float(np.max(np.abs(ref))), 1e-6))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ort_session(path_or_bytes, threads: int = 1):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    src = str(path_or_bytes) if isinstance(path_or_bytes, (str, os.PathLike)) else path_or_bytes
    return ort.InferenceSession(src, so, providers=['CPUExecutionProvider'])


def verify_onnx(onnx_model, reference: Callable[..., np.ndarray], input_names: Sequence[str],
                input_sets: dict[str, list[tuple[np.ndarray, ...]]], tolerance: float = TOLERANCE) -> dict[str, float]:
    """Max relative error per input-set name; raises ExportError when any exceeds the tolerance."""
    try:
        sess = ort_session(onnx_model)
    except Exception as e:  # invalid / corrupted graph
        raise ExportError(f'ONNX Runtime cannot load the exported graph: {e}') from e
    errors: dict[str, float] = {}
    for set_name, samples in input_sets.items():
        worst = 0.0
        for inputs in samples:
            feeds = {n: np.ascontiguousarray(x, dtype=np.float32) for n, x in zip(input_names, inputs)}
            worst = max(worst, relative_error(sess.run(None, feeds)[0], reference(*inputs)))
        errors[set_name] = worst
    bad = {k: v for k, v in errors.items() if not v <= tolerance}
    if bad:
        raise ExportError(f'export disagrees with PyTorch: relative error {bad} > {tolerance:g}')
    return errors


def _torch_export(module, example: tuple, input_names, output_names, opset: int) -> bytes:
    import torch
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')  # legacy-exporter deprecation and tracer warnings
        torch.onnx.export(module, tuple(torch.from_numpy(np.asarray(x, np.float32)) for x in example), buf,
                          dynamo=False, opset_version=opset, input_names=list(input_names),
                          output_names=list(output_names), do_constant_folding=True)
    return drop_empty_trailing_inputs(buf.getvalue())


def drop_empty_trailing_inputs(model_bytes: bytes) -> bytes:
    """Remove omitted optional inputs ('') at the end of each node's input list (same semantics).

    Why: torch exports F.pad as `Pad(x, pads, '')`; ONNX Runtime's PadFusion will not fold such a Pad into
    the following Conv (it reads the empty name as a non-constant constant_value), so each TF-'same'
    padded EfficientNet conv kept a Pad plus two layout reorders around it. Without the '' all 12 fold:
    vision.onnx went from 2.1x to 2.9-3.1x faster than torch on this CPU (docs/results/LATENCY_HISTORY.md),
    same output.
    """
    import onnx
    model = onnx.load_from_string(model_bytes)
    changed = False
    for node in model.graph.node:
        while len(node.input) and node.input[-1] == '':
            node.input.pop()
            changed = True
    return model.SerializeToString() if changed else model_bytes


def export_verified(module, path: str | os.PathLike, input_names: Sequence[str], output_names: Sequence[str],
                    input_sets: dict[str, list[tuple[np.ndarray, ...]]], opset: int = OPSET,
                    tolerance: float = TOLERANCE) -> dict:
    """Export `module` (traced on the first sample), verify on every sample, then atomically write `path`."""
    import onnx
    import torch
    path = Path(path)
    module.eval()

    def reference(*xs):
        with torch.no_grad():
            return module(*(torch.from_numpy(np.asarray(x, np.float32)) for x in xs)).numpy()

    example = next(iter(input_sets.values()))[0]
    try:
        data = _torch_export(module, example, input_names, output_names, opset)
        onnx.checker.check_model(onnx.load_from_string(data))
    except Exception as e:
        raise ExportError(f'exporting {path.name} failed: {e}') from e
    errors = verify_onnx(data, reference, input_names, input_sets, tolerance)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + '.', suffix='.tmp')
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it owner-only; a model file is installed and read by other users
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return {'file': path.name, 'sha256': sha256_bytes(data), 'bytes': len(data), 'relative_error': errors,
            'inputs': {n: list(np.shape(x)) for n, x in zip(input_names, example)},
            'outputs': {output_names[0]: list(np.shape(reference(*example)))}}


@dataclass
class Samples:
    """Real inputs for verification: raw camera frames (uint8 HWC), proprio (7,), language (384,)."""
    images: list[np.ndarray] = field(default_factory=list)
    proprio: list[np.ndarray] = field(default_factory=list)
    language: list[np.ndarray] = field(default_factory=list)


def _modules(policy):
    import torch

    class Vision(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.policy = policy

        def forward(self, images):
            return self.policy.vision(images)

    class Sampler(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.policy = policy

        def forward(self, tokens, proprio, language, noise):
            return self.policy.sample_actions(tokens, proprio, language, noise)

    return Vision().eval(), Sampler().eval()


def build_input_sets(policy, image_shape: tuple[int, int], horizon: int, preprocess: Callable | None,
                     samples: Samples | None, n_random: int = 2, seed: int = 0):
    import torch
    vision, _ = _modules(policy)
    rng = np.random.default_rng(seed)
    h, w = image_shape

    def tokens_of(img):
        with torch.no_grad():
            return vision(torch.from_numpy(img)).numpy()

    rand_images = [rng.standard_normal((1, 3, h, w)).astype(np.float32) for _ in range(n_random)]
    vis_sets = {'random': [(x,) for x in rand_images]}
    tok_shape = tokens_of(rand_images[0]).shape
    pol_sets = {'random': [(rng.standard_normal(tok_shape).astype(np.float32),
                            rng.standard_normal((1, PROPRIO_DIM)).astype(np.float32),
                            rng.standard_normal((1, LANGUAGE_DIM)).astype(np.float32) / np.sqrt(LANGUAGE_DIM),
                            rng.standard_normal((1, horizon, ACTION_DIM)).astype(np.float32))
                           for _ in range(n_random)]}
    if samples and samples.images:
        if preprocess is None:
            raise ValueError('real image samples need a preprocess function')
        real = [np.asarray(preprocess(im), np.float32).reshape(1, 3, h, w) for im in samples.images]
        vis_sets['real'] = [(x,) for x in real]
        langs = samples.language or [rng.standard_normal(LANGUAGE_DIM).astype(np.float32)]
        props = samples.proprio or [np.zeros(PROPRIO_DIM, np.float32)]
        pol_sets['real'] = [(tokens_of(x), np.asarray(props[i % len(props)], np.float32).reshape(1, PROPRIO_DIM),
                             np.asarray(langs[i % len(langs)], np.float32).reshape(1, LANGUAGE_DIM),
                             rng.standard_normal((1, horizon, ACTION_DIM)).astype(np.float32))
                            for i, x in enumerate(real)]
    elif samples and samples.language:  # real instruction embeddings (e.g. the checkpoint cache) only
        pol_sets['real'] = [(rng.standard_normal(tok_shape).astype(np.float32),
                             np.asarray(samples.proprio[i % len(samples.proprio)] if samples.proprio
                                        else np.zeros(PROPRIO_DIM), np.float32).reshape(1, PROPRIO_DIM),
                             np.asarray(lang, np.float32).reshape(1, LANGUAGE_DIM),
                             rng.standard_normal((1, horizon, ACTION_DIM)).astype(np.float32))
                            for i, lang in enumerate(samples.language)]
    return vis_sets, pol_sets


def export_policy(policy, out_dir: str | os.PathLike, image_shape: tuple[int, int], horizon: int,
                  preprocess: Callable | None = None, samples: Samples | None = None, opset: int = OPSET,
                  tolerance: float = TOLERANCE, parts: Sequence[str] = ('vision', 'policy'),
                  extra: dict | None = None) -> dict:
    """Export + verify `vision.onnx` and `policy.onnx` into `out_dir`; returns (and writes) export.json."""
    import onnxruntime
    import torch
    if opset < 17:
        raise ValueError('opset must be >= 17')
    out_dir = Path(out_dir)
    policy.eval()
    vision, sampler = _modules(policy)
    vis_sets, pol_sets = build_input_sets(policy, image_shape, horizon, preprocess, samples)
    report = {'opset': opset, 'tolerance': tolerance, 'export_mode': 'unrolled_sampler', 'horizon': horizon,
              'image_shape': list(image_shape), 'torch': torch.__version__, 'onnxruntime': onnxruntime.__version__,
              'created_unix': time.time(), **(extra or {}), 'files': {}}
    old = out_dir / REPORT_FILE
    if old.exists():
        with contextlib.suppress(ValueError, OSError):
            report['files'].update(json.loads(old.read_text()).get('files', {}))
    if 'vision' in parts:
        report['files']['vision'] = export_verified(vision, out_dir / VISION_FILE, VISION_INPUTS, VISION_OUTPUTS,
                                                    vis_sets, opset, tolerance)
    if 'policy' in parts:
        report['files']['policy'] = export_verified(sampler, out_dir / POLICY_FILE, POLICY_INPUTS, POLICY_OUTPUTS,
                                                    pol_sets, opset, tolerance)
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2))
    return report


def load_samples(checkpoint_dir: Path, dataset_dir: str | os.PathLike | None = None, max_frames: int = 4) -> Samples:
    """Real verification inputs: dataset frames + proprio (when a dataset is given) and the checkpoint's
    cached instruction embeddings (`instructions.safetensors`)."""
    samples = Samples()
    cache = Path(checkpoint_dir) / 'instructions.safetensors'
    if cache.exists():
        from safetensors.numpy import load_file
        samples.language = [np.asarray(v, np.float32).reshape(-1) for v in load_file(str(cache)).values()]
    if dataset_dir:
        episodes = sorted(Path(dataset_dir).glob('*/episode_*.npz'))
        for ep in episodes:
            with np.load(ep, allow_pickle=False) as d:
                idx = np.linspace(0, len(d['images']) - 1, num=min(2, len(d['images']))).astype(int)
                samples.images += [d['images'][i] for i in idx]
                samples.proprio += [d['proprio'][i] for i in idx]
            if len(samples.images) >= max_frames:
                break
        if not samples.images:
            raise FileNotFoundError(f'no episodes under {dataset_dir} (expected <task>/episode_*.npz)')
    return samples


def export_checkpoint(checkpoint_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                      dataset_dir: str | os.PathLike | None = None, int8: bool = False,
                      tolerance: float = TOLERANCE, opset: int = OPSET) -> dict:
    """Load the checkpoint's FlowPolicy, export + verify both graphs into `out_dir` (default: the checkpoint)."""
    from flow_rag_vla_ros.core.backends.base import load_preprocess
    from flow_rag_vla_ros.core.backends.engine_cache import sha256_file
    from flow_rag_vla_ros.core.backends.torch_backend import load_model, model_shapes
    checkpoint_dir = Path(checkpoint_dir)
    out_dir = Path(out_dir) if out_dir else checkpoint_dir
    policy = load_model(checkpoint_dir, 'cpu')
    image_shape, horizon = model_shapes(policy)
    samples = load_samples(checkpoint_dir, dataset_dir)
    preprocess = load_preprocess(checkpoint_dir) if samples.images else None
    source = {f: sha256_file(checkpoint_dir / f) for f in ('model.safetensors', 'config.json')
              if (checkpoint_dir / f).exists()}
    report = export_policy(policy, out_dir, image_shape, horizon, preprocess, samples, opset, tolerance,
                           extra={'source': source, 'verified_on': {'dataset': str(dataset_dir or ''),
                                                                     'frames': len(samples.images),
                                                                     'instructions': len(samples.language)}})
    if int8:
        from flow_rag_vla_ros.core.backends.quantize import quantize_expert
        report['int8'] = str(quantize_expert(out_dir / POLICY_FILE).name)
        (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2))
    return report
