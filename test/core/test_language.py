import numpy as np
import pytest

from flow_rag_vla_ros.core.language import EMBEDDING_DIM, InstructionEmbedder
from flow_rag_vla_ros.core.spec import INSTRUCTIONS


def test_minilm_embeddings_cached_and_distinct(tmp_path):
    e = InstructionEmbedder()
    reach, push = e.embed(INSTRUCTIONS['reach']), e.embed(INSTRUCTIONS['push'])
    assert reach.shape == (EMBEDDING_DIM,) and reach.dtype == np.float32
    assert abs(np.linalg.norm(reach) - 1.0) < 1e-4
    assert e.embed(INSTRUCTIONS['reach']) is reach  # cached
    assert float(reach @ push) < 0.99
    e.save(tmp_path)
    loaded = InstructionEmbedder.from_checkpoint(tmp_path)
    assert loaded._model is None
    np.testing.assert_array_equal(loaded.embed(INSTRUCTIONS['push']), push)
    assert loaded._model is None  # known instruction: sentence-transformers never loaded


def test_empty_instruction_rejected():
    with pytest.raises(ValueError):
        InstructionEmbedder().embed('  ')
