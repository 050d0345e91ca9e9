"""On-disk cache of compiled engines (TensorRT plans, torch2trt modules), keyed by what makes them valid.

An engine is only valid for the exact ONNX bytes, TensorRT version, GPU model and precision it was built
for. The key is the sha256 of those four together; the cache keeps one engine per ONNX stem
(`<stem>.<precision>.plan`) plus a JSON sidecar holding the key and its parts. On lookup, a missing
engine or a sidecar whose key differs (any part changed) means: build, then atomically replace.
No TensorRT import here: the builder is a callable handed in, so the logic is testable anywhere.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class EngineKey:
    source_sha256: str  # sha256 of the ONNX bytes (TensorRT) or of the model weights (torch2trt)
    trt_version: str
    gpu_name: str
    precision: str  # 'fp16' | 'fp32' | 'int8' | 'bf16'

    @property
    def digest(self) -> str:
        payload = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()


def engine_key(source_path: str | os.PathLike, trt_version: str, gpu_name: str, precision: str) -> EngineKey:
    return EngineKey(sha256_file(source_path), str(trt_version), str(gpu_name), str(precision))


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + '.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EngineCache:
    """`get_or_build(onnx_path, key, build)` -> (engine bytes, built: bool)."""

    def __init__(self, cache_dir: str | os.PathLike, suffix: str = '.plan'):
        self.cache_dir = Path(cache_dir)
        self.suffix = suffix

    def paths(self, onnx_path: str | os.PathLike, key: EngineKey) -> tuple[Path, Path]:
        stem = Path(onnx_path).stem
        engine = self.cache_dir / f'{stem}.{key.precision}{self.suffix}'
        return engine, engine.with_name(engine.name + '.json')

    def lookup(self, onnx_path: str | os.PathLike, key: EngineKey) -> bytes | None:
        engine, meta = self.paths(onnx_path, key)
        if not (engine.exists() and meta.exists()):
            return None
        try:
            stored = json.loads(meta.read_text())
        except (OSError, ValueError):
            return None
        if stored.get('digest') != key.digest:
            return None
        data = engine.read_bytes()
        if hashlib.sha256(data).hexdigest() != stored.get('engine_sha256'):
            return None  # truncated / tampered plan file
        return data

    def store(self, onnx_path: str | os.PathLike, key: EngineKey, data: bytes) -> Path:
        engine, meta = self.paths(onnx_path, key)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(engine, data)
        record = {'digest': key.digest, 'engine_sha256': hashlib.sha256(data).hexdigest(), **asdict(key)}
        _atomic_write(meta, json.dumps(record, indent=2).encode())
        return engine

    def get_or_build(self, onnx_path: str | os.PathLike, key: EngineKey,
                     build: Callable[[Path], bytes]) -> tuple[bytes, bool]:
        cached = self.lookup(onnx_path, key)
        if cached is not None:
            return cached, False
        data = build(Path(onnx_path))
        if not data:
            raise RuntimeError(f'engine build for {onnx_path} produced no bytes')
        self.store(onnx_path, key, bytes(data))
        return bytes(data), True
