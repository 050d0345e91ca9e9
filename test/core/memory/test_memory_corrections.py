"""Corrective transforms, correction proposals, and the state embedding."""
import numpy as np
import pytest

from flow_rag_vla_ros.core.memory import FailureCase
from flow_rag_vla_ros.core.memory.corrections import CorrectionConfig, correct_chunk, propose_correction
from flow_rag_vla_ros.core.memory.embedding import EmbeddingConfig, sparse_projection, state_embedding

# row 0 of sparse_projection(20240, 8064, 233, 8): its 8 columns and which are +1/sqrt(8)
GOLDEN_SPARSE_ROW0_COLUMNS = [9, 11, 51, 136, 141, 153, 188, 199]
GOLDEN_SPARSE_ROW0_POSITIVE = [False, False, False, True, True, True, False, False]


def chunk():
    c = np.zeros((8, 4), np.float32)
    c[:, 0], c[:, 2], c[:, 3] = 0.8, -0.5, 1.0
    c[5:, 3] = -0.3  # starts closing at step 5
    return c


def test_grasp_failure_closes_harder_and_earlier_and_approaches_lower():
    out = correct_chunk(chunk(), 'grasp_failure', CorrectionConfig(grasp_close_earlier_steps=2, grasp_dz=-0.2))
    assert np.all(out[3:, 3] == -1.0) and np.all(out[:3, 3] == 1.0)
    assert np.allclose(out[:3, 2], -0.7) and np.allclose(out[3:, 2], -0.5)


def test_other_transforms():
    c = chunk()
    drop = correct_chunk(c, 'drop')
    assert np.all(drop[:, 3] == -1.0) and np.allclose(drop[:, 0], 0.4)
    collision = correct_chunk(c, 'collision')
    assert np.allclose(collision[:, 2], -0.2) and np.allclose(collision[:, 0], 0.48)
    assert np.allclose(correct_chunk(c, 'misalignment')[:, :3], c[:, :3] * 0.5)
    timeout = correct_chunk(c, 'timeout')
    assert np.allclose(timeout[:, 0], 1.0) and np.allclose(timeout[:, 2], -0.75)  # clamped to [-1, 1]
    for t in ('grasp_failure', 'drop', 'collision', 'misalignment', 'timeout'):
        assert np.abs(correct_chunk(c * 3, t)).max() <= 1.0
    with pytest.raises(ValueError):
        correct_chunk(c, 'sneeze')


def _case(cid, ftype='drop', correction=None, confidence=0.5):
    return FailureCase(embedding=np.ones(4), failed_chunk=np.zeros((8, 4)), failure_type=ftype,
                       correction_chunk=correction, confidence=confidence, id=cid)


def test_propose_prefers_stored_correction_weighted_by_confidence():
    good, better = np.full((8, 4), 0.3), np.full((8, 4), -0.2)
    hits = [(_case(1, 'collision'), 0.99), (_case(2, correction=good, confidence=0.4), 0.95),
            (_case(3, correction=better, confidence=0.9), 0.92), (_case(4, correction=good, confidence=0.1), 0.99)]
    p = propose_correction(hits, chunk())
    assert p.source == 'stored' and p.case_id == 3 and np.allclose(p.chunk, better)
    assert p.confidence == pytest.approx(0.9 * 0.92) and p.failure_type == 'drop' and p.similarity == 0.92


def test_propose_falls_back_to_transform_of_the_current_chunk():
    hits = [(_case(1, 'drop'), 0.91), (_case(2, 'collision'), 0.97)]
    p = propose_correction(hits, chunk())
    assert p.source == 'transform' and p.case_id == 2 and p.failure_type == 'collision'
    assert np.allclose(p.chunk, correct_chunk(chunk(), 'collision'))
    assert p.confidence == pytest.approx(0.5 * 0.97)
    assert propose_correction([], chunk()) is None


def test_transform_is_not_proposed_from_cases_whose_episodes_kept_failing():
    distrusted, trusted = _case(1, 'collision', confidence=0.1), _case(2, 'drop', confidence=0.35)
    p = propose_correction([(distrusted, 0.99), (trusted, 0.9)], chunk())
    assert p.case_id == 2 and p.failure_type == 'drop'  # the more similar but distrusted case is skipped
    assert propose_correction([(distrusted, 0.99)], chunk()) is None
    gate_off = CorrectionConfig(min_case_confidence=0.0)
    assert propose_correction([(distrusted, 0.99)], chunk(), gate_off).case_id == 1


def test_transform_escalates_with_each_failure_after_it_was_tried():
    c = chunk()  # x 0.8, z -0.5
    config = CorrectionConfig(escalation_per_failure=1.0, max_escalation=3.0)
    tried = _case(1, 'collision')
    deltas = []
    for failures in range(4):
        tried.corrected_failure = failures
        p = propose_correction([(tried, 0.9995)], c, config)  # a revisit of the case's state
        deltas.append(p.chunk[:, 2] - c[:, 2])  # collision: dz + 0.3 per unit of strength
    assert np.allclose(deltas[0], 0.3) and np.allclose(deltas[1], 0.6) and np.allclose(deltas[2], 0.9)
    assert np.allclose(deltas[3], 0.9)  # capped at max_escalation, and never outside [-1, 1]
    tried.corrected_failure = 1
    off = CorrectionConfig(escalation_per_failure=0.0)
    assert np.allclose(propose_correction([(tried, 0.9995)], c, off).chunk, correct_chunk(c, 'collision'))
    assert np.allclose(propose_correction([(tried, 0.9995)], c, config).chunk[:, 0], 0.8 * 0.6 ** 2)  # xy scale, twice
    for strength in (2.0, 3.0):  # a slow-down applied n times is the scale to the n-th power, never a reversal
        slower = correct_chunk(c, 'misalignment', strength=strength)
        assert np.allclose(slower[:, :3], c[:, :3] * 0.5 ** strength)
    earlier = correct_chunk(c, 'grasp_failure', CorrectionConfig(grasp_close_earlier_steps=2), strength=2.0)
    assert np.all(earlier[1:, 3] == -1.0) and earlier[0, 3] == 1.0 and np.isclose(earlier[0, 2], -0.9)
    with pytest.raises(ValueError):
        CorrectionConfig(max_escalation=0.5)
    with pytest.raises(ValueError):
        CorrectionConfig(escalation_min_similarity=1.5)


def test_transform_escalates_only_in_the_state_where_it_failed():
    c = chunk()
    tried = _case(1, 'collision')
    tried.corrected_failure = 2
    config = CorrectionConfig(escalation_per_failure=1.0, escalation_min_similarity=0.999)
    look_alike = propose_correction([(tried, 0.99)], c, config)  # another situation's state, matched at 0.99
    assert np.allclose(look_alike.chunk, correct_chunk(c, 'collision'))  # strength 1
    revisit = propose_correction([(tried, 0.9995)], c, config)
    assert np.allclose(revisit.chunk, correct_chunk(c, 'collision', strength=3.0))
    ungated = CorrectionConfig(escalation_per_failure=1.0, escalation_min_similarity=0.0)
    assert np.allclose(propose_correction([(tried, 0.99)], c, ungated).chunk, revisit.chunk)


def test_state_embedding_is_deterministic_unit_and_sized():
    rng = np.random.default_rng(0)
    tokens, proprio, lang = rng.standard_normal((9, 320)), rng.standard_normal(7) * 0.1, rng.standard_normal(384)
    e = state_embedding(tokens, proprio, lang)
    assert e.shape == (EmbeddingConfig().dim,) and e.dtype == np.float32
    assert np.linalg.norm(e) == pytest.approx(1.0, abs=1e-5)
    assert np.array_equal(e, state_embedding(tokens.copy(), proprio.copy(), lang.copy()))
    c = EmbeddingConfig(dim=128, language_dim=8)
    assert state_embedding(rng.standard_normal((4, c.visual_dim)), proprio, lang, c).shape == (128,)


def test_sparse_projection_is_fixed_sparse_and_keeps_lengths_and_angles():
    p = sparse_projection(20240, 8064, 233, 8)  # the default encoder's 72 x 112 tokens -> the default visual block
    assert p.shape == (8064, 233) and p.nnz == 8064 * 8
    assert np.all(np.diff(p.indptr) == 8) and np.allclose(np.abs(p.data), 1 / np.sqrt(8))
    assert all(len(set(p.indices[p.indptr[i]:p.indptr[i + 1]])) == 8 for i in range(0, 8064, 97))  # distinct
    # golden: a memory's embeddings depend on this matrix; a change here orphans every stored memory
    assert p.indices[:8].tolist() == GOLDEN_SPARSE_ROW0_COLUMNS
    assert (p.data[:8] > 0).tolist() == GOLDEN_SPARSE_ROW0_POSITIVE
    assert (sparse_projection(20240, 8064, 233, 8) != p).nnz == 0
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 8064)).astype(np.float32)  # (B, n_in)
    y = x + 0.5 * rng.standard_normal(x.shape).astype(np.float32)
    px, py = np.asarray(x @ p), np.asarray(y @ p)  # (B, 233)
    ratio = (px ** 2).sum(1) / (x ** 2).sum(1)
    assert abs(ratio.mean() - 1) < 0.02 and ratio.std() < 0.15  # E|xP|^2 = |x|^2; ~sqrt(2/233) spread
    cos = lambda a, b: (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)  # noqa: E731
    assert np.abs(cos(px, py) - cos(x, y)).mean() < 0.03


def test_both_visual_projections_embed_alike_and_name_themselves():
    rng = np.random.default_rng(4)
    background = rng.standard_normal((72, 112)).astype(np.float32)
    proprio, lang = np.array([0.1, 0, 0.1, 0, 0, 0, 0.04]), rng.standard_normal(384)
    nudged = background.copy()
    nudged[10] += rng.standard_normal(112).astype(np.float32)
    sims = {}
    for kind in ('sparse', 'gaussian'):
        c = EmbeddingConfig(visual_projection=kind)
        sims[kind] = state_embedding(background, proprio, lang, c) @ state_embedding(nudged, proprio, lang, c)
    assert sims['sparse'] == pytest.approx(sims['gaussian'], abs=0.02) and sims['sparse'] < 0.999
    ids = {EmbeddingConfig(**kw).embedding_id for kw in (
        {'visual_projection': 'sparse'}, {'visual_projection': 'gaussian'}, {'visual_pooling': 'mean'},
        {'visual_projection': 'sparse', 'projection_nonzeros': 4})}
    assert len(ids) == 4
    with pytest.raises(ValueError):
        EmbeddingConfig(visual_projection='dense')
    with pytest.raises(ValueError):
        EmbeddingConfig(projection_nonzeros=0)


def test_state_embedding_similarity_tracks_state_changes():
    rng = np.random.default_rng(1)
    tokens, proprio, lang = rng.standard_normal((9, 64)), np.array([0.1, 0, 0.1, 0, 0, 0, 0.04]), rng.standard_normal(384)
    e = state_embedding(tokens, proprio, lang)
    moved_1cm = state_embedding(tokens, proprio + [0.01, 0, 0, 0, 0, 0, 0], lang)
    moved_10cm = state_embedding(tokens, proprio + [0.1, 0, 0, 0, 0, 0, 0], lang)
    other_task = state_embedding(tokens, proprio, rng.standard_normal(384))
    assert e @ moved_1cm > 0.99 > e @ moved_10cm
    assert e @ other_task < 0.98
    with pytest.raises(ValueError):
        state_embedding(tokens, proprio[:6], lang)


def test_spatial_visual_block_sees_where_things_are_mean_pooling_does_not():
    rng = np.random.default_rng(2)
    background = rng.standard_normal((36, 112)).astype(np.float32)
    blob = rng.standard_normal(112).astype(np.float32) * 3
    proprio, lang = np.array([0.1, 0, 0.1, 0, 0, 0, 0.04]), rng.standard_normal(384)

    def frame(*cells):  # the same object seen in other token cells (the same content, moved)
        t = background.copy()
        t[list(cells)] += blob
        return t

    here, moved = frame(3, 4), frame(30, 31)
    for pooling, differs in (('spatial', True), ('mean', False)):
        c = EmbeddingConfig(visual_pooling=pooling)
        a, b = state_embedding(here, proprio, lang, c), state_embedding(moved, proprio, lang, c)
        assert (a @ b < 0.9) == differs
        assert state_embedding(here, proprio, lang, c) @ a == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError):
        EmbeddingConfig(visual_pooling='max')
