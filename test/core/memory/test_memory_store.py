"""FailureMemory behaviour: add / dedup / search threshold / clusters / prune / confidence / export-import / index."""
import threading

import numpy as np
import pytest
from memory_helpers import DIM, case, embedding_for, near, unit

from flow_rag_vla_ros.core.memory import FailureMemory, MemoryConfig


def memory(**kw) -> FailureMemory:
    return FailureMemory(MemoryConfig(**kw))


def test_add_then_search_returns_the_case_with_its_data():
    m = memory()
    ids = [m.add(case(embedding_for(i), seed=i, task='pick_and_place'))[0] for i in range(20)]
    assert len(set(ids)) == 20 and len(m) == 20
    hits = m.search(embedding_for(7))
    assert hits[0][0].id == ids[7] and hits[0][1] == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(hits[0][0].failed_chunk, case(embedding_for(7), seed=7).failed_chunk)
    assert hits[0][0].confidence == MemoryConfig().initial_confidence and hits[0][0].seen == 1


def test_near_duplicate_of_same_type_merges_other_type_does_not():
    m = memory(dedup_threshold=0.98)
    rng = np.random.default_rng(0)
    e = embedding_for(1)
    first, merged = m.add(case(e, 'drop', seed=1))
    assert not merged
    again, merged = m.add(case(near(e, 0.001, rng), 'drop', seed=2))
    assert merged and again == first and len(m) == 1
    merged_case = m.get(first)
    assert merged_case.seen == 2
    expected = (case(e, seed=1).failed_chunk + case(e, seed=2).failed_chunk) / 2
    assert np.allclose(merged_case.failed_chunk, expected, atol=1e-6)
    other, merged = m.add(case(near(e, 0.001, rng), 'collision'))
    assert not merged and other != first and len(m) == 2


def test_merge_keeps_the_stored_correction_unless_the_new_one_is_more_confident():
    m = memory(dedup_threshold=0.98)
    e, rng = embedding_for(1), np.random.default_rng(0)
    first = m.add(case(e, correction_chunk=np.full((8, 4), 0.1), confidence=0.9))[0]
    m.add(case(near(e, 0.001, rng), correction_chunk=np.full((8, 4), 0.2), confidence=0.9))  # not more confident
    assert np.all(m.get(first).correction_chunk == np.float32(0.1)) and m.get(first).confidence == 0.9
    m.add(case(near(e, 0.001, rng), correction_chunk=np.full((8, 4), 0.3), confidence=0.95))
    assert np.all(m.get(first).correction_chunk == np.float32(0.3)) and m.get(first).confidence == 0.95
    m.add(case(near(e, 0.001, rng)))  # a failure without a correction never removes one
    kept = m.get(first)
    assert np.all(kept.correction_chunk == np.float32(0.3)) and kept.seen == 4 and len(m) == 1


def test_add_many_merges_within_the_batch_and_is_durable(tmp_path):
    cfg = MemoryConfig(directory=str(tmp_path), dedup_threshold=0.98)
    m = FailureMemory(cfg)
    rng = np.random.default_rng(0)
    batch = [case(embedding_for(i), seed=i) for i in range(5)] + [case(near(embedding_for(2), 0.001, rng))]
    assert m.add_many(batch) == (5, 1)
    m.close()
    again = FailureMemory(cfg)
    assert len(again) == 5 and again.search(embedding_for(2))[0][0].seen == 2


def test_search_threshold_and_k():
    m = memory(similarity_threshold=0.9, top_k=3)
    a, b = embedding_for(1), embedding_for(2)
    m.add(case(a))
    m.add(case(b))
    halfway = unit(a + b)  # similarity ~0.71 to both
    assert m.search(halfway) == []
    hits = m.search(halfway, threshold=0.5)
    assert len(hits) == 2 and all(0.6 < s < 0.8 for _, s in hits)
    assert len(m.search(halfway, k=1, threshold=0.5)) == 1


def test_l2_metric_similarity_matches_cosine_for_unit_vectors():
    m = memory(metric='l2', similarity_threshold=0.5)
    a, b = embedding_for(1), embedding_for(2)
    m.add(case(a))
    q = unit(a + 0.5 * b)
    (hit, sim), = m.search(q)
    assert sim == pytest.approx(float(q @ a), abs=1e-4)


def _three_clusters(m: FailureMemory, sizes=(5, 3, 2)) -> list[list[int]]:
    rng = np.random.default_rng(5)
    groups = []
    for g, n in enumerate(sizes):
        centre = embedding_for(100 + g)
        groups.append(sorted(m.add(case(near(centre, 0.012, rng), seed=g))[0] for _ in range(n)))
    return groups


def test_clusters_group_similar_cases_per_failure_type():
    m = memory(dedup_threshold=0.999, cluster_threshold=0.9)
    groups = _three_clusters(m)
    assert len(m) == 10
    assert m.clusters('drop') == groups
    lone = m.add(case(embedding_for(100), 'collision'))[0]  # same place, other type: own cluster
    assert [lone] in m.clusters() and m.clusters('collision') == [[lone]]


def test_prune_keeps_the_most_useful_case_of_every_cluster():
    m = memory(dedup_threshold=0.999, cluster_threshold=0.9)
    groups = _three_clusters(m)
    best = [groups[0][2], groups[1][0], groups[2][1]]
    for case_id in best:
        m.update_confidence(case_id, success=True)  # higher confidence and corrected_success -> utility
    removed = m.prune(3)
    assert sorted(c.id for c in m.cases()) == sorted(best)
    assert set(removed) == set(sum(groups, [])) - set(best)


def test_automatic_prune_caps_the_size():
    m = memory(max_size=10, prune_fraction=0.8)
    for i in range(11):
        m.add(case(embedding_for(i)))
    assert len(m) == 8


def test_confidence_updates_are_bounded():
    m = memory(initial_confidence=0.5, confidence_rate=0.3)
    cid = m.add(case(embedding_for(1)))[0]
    assert m.update_confidence(cid, True).confidence == pytest.approx(0.65)
    assert m.update_confidence(cid, False).confidence == pytest.approx(0.455)
    for _ in range(60):
        m.update_confidence(cid, True)
    assert 0.99 < m.get(cid).confidence <= 1.0
    for _ in range(60):
        c = m.update_confidence(cid, False)
    assert 0.0 <= c.confidence < 0.01 and c.corrected_success == 61 and c.corrected_failure == 61
    with pytest.raises(KeyError):
        m.update_confidence(999, True)


def test_set_correction_is_clamped_and_returned_by_search():
    m = memory()
    cid = m.add(case(embedding_for(1)))[0]
    m.set_correction(cid, np.full((8, 4), 3.0), confidence=0.8)
    (hit, _), = m.search(embedding_for(1))
    assert np.all(hit.correction_chunk == 1.0) and hit.confidence == pytest.approx(0.8)
    with pytest.raises(ValueError):
        m.set_correction(cid, np.zeros((5, 4)))


def test_remove_drops_cases_from_search():
    m = memory()
    ids = [m.add(case(embedding_for(i)))[0] for i in range(5)]
    assert m.remove([ids[1], ids[3], 12345]) == 2
    assert len(m) == 3 and m.get(ids[1]) is None
    assert m.search(embedding_for(1)) == [] and m.search(embedding_for(2))[0][0].id == ids[2]


@pytest.mark.parametrize('kind', ['auto', 'hnsw'])
def test_approximate_index_above_threshold_finds_and_removes(kind):
    m = memory(approx_threshold=100, index=kind, dedup_threshold=0.999)
    assert m.index_kind == 'flat' or kind == 'hnsw'
    ids = [m.add(case(embedding_for(i)))[0] for i in range(250)]
    assert m.index_kind == ('ivf' if kind == 'auto' else 'hnsw')
    for i in (0, 99, 180, 249):
        assert m.search(embedding_for(i))[0][0].id == ids[i]
    m.remove([ids[180]])
    assert m.search(embedding_for(180)) == [] and len(m) == 249
    assert m.search(embedding_for(181))[0][0].id == ids[181]


def test_shrinking_below_threshold_switches_back_to_flat():
    m = memory(approx_threshold=50)
    ids = [m.add(case(embedding_for(i)))[0] for i in range(80)]
    assert m.index_kind == 'ivf'
    m.remove(ids[:40])
    assert m.index_kind == 'flat' and m.search(embedding_for(60))[0][0].id == ids[60]


def test_export_import_round_trip(tmp_path):
    src = memory()
    for i in range(6):
        cid = src.add(case(embedding_for(i), 'collision' if i % 2 else 'drop', seed=i, task='push'))[0]
        if i == 2:
            src.set_correction(cid, np.full((8, 4), 0.25))
            src.update_confidence(cid, True)
    assert src.export(str(tmp_path / 'seed.safetensors')) == 6
    dst = memory()
    assert dst.import_(str(tmp_path / 'seed.safetensors')) == (6, 0)
    key = lambda c: (c.failure_type, c.seen)  # noqa: E731
    for a in src.cases():
        (b, sim), = dst.search(a.embedding, k=1)
        assert sim == pytest.approx(1.0, abs=1e-5) and key(a) == key(b) and b.task == 'push'
        assert np.array_equal(a.failed_chunk, b.failed_chunk) and a.confidence == b.confidence
        assert (a.correction_chunk is None) == (b.correction_chunk is None)
        assert a.corrected_success == b.corrected_success
    assert dst.import_(str(tmp_path / 'seed.safetensors')) == (0, 6)  # importing again merges
    assert len(dst) == 6 and all(c.seen == 2 for c in dst.cases())
    with pytest.raises(ValueError):
        FailureMemory(MemoryConfig(dim=DIM // 2)).import_(str(tmp_path / 'seed.safetensors'))


def test_a_memory_refuses_embeddings_made_another_way(tmp_path, caplog):
    made_one_way = FailureMemory(MemoryConfig(directory=str(tmp_path / 'a')), embedding_id='spatial/sparse8')
    made_one_way.add(case(embedding_for(0)))
    made_one_way.snapshot()
    made_one_way.export(str(tmp_path / 'a.safetensors'))
    made_one_way.close()
    other = FailureMemory(MemoryConfig(), embedding_id='spatial/gaussian')
    with pytest.raises(ValueError, match='spatial/sparse8'):
        other.import_(str(tmp_path / 'a.safetensors'))
    assert len(other) == 0
    with pytest.raises(ValueError, match='spatial/gaussian'):
        FailureMemory(MemoryConfig(directory=str(tmp_path / 'a')), embedding_id='spatial/gaussian')
    same = FailureMemory(MemoryConfig(directory=str(tmp_path / 'a')), embedding_id='spatial/sparse8')
    assert len(same) == 1 and same.import_(str(tmp_path / 'a.safetensors')) == (0, 1)
    same.close()
    untagged = memory()  # a file from before the tag (or from a caller that does not say): taken, with a warning
    untagged.add(case(embedding_for(1)))
    untagged.export(str(tmp_path / 'untagged.safetensors'))
    with caplog.at_level('WARNING'):
        assert other.import_(str(tmp_path / 'untagged.safetensors')) == (1, 0)
    assert 'does not say how its embeddings were made' in caplog.text


def test_concurrent_searches_while_adding():
    m = memory(approx_threshold=200)
    errors, stop = [], threading.Event()

    def searcher():
        rng = np.random.default_rng()
        try:
            while not stop.is_set():
                for hit, sim in m.search(embedding_for(int(rng.integers(0, 400))), threshold=0.99):
                    assert sim >= 0.99 and hit.embedding.shape == (DIM,)
        except Exception as e:  # surfaced below
            errors.append(e)
    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    ids = [m.add(case(embedding_for(i)))[0] for i in range(400)]
    stop.set()
    for t in threads:
        t.join()
    assert errors == [] and len(m) == 400 and m.search(embedding_for(399))[0][0].id == ids[-1]


def test_rejects_bad_shapes_and_config():
    with pytest.raises(ValueError):
        memory().add(case(np.ones(DIM + 1)))
    with pytest.raises(ValueError):
        MemoryConfig(metric='dot')
    with pytest.raises(ValueError):
        MemoryConfig(index='lsh')


def test_use_gpu_without_a_faiss_gpu_build_falls_back_to_cpu_with_a_log_line(caplog, monkeypatch):
    import logging

    from flow_rag_vla_ros.core.memory import index as ix
    monkeypatch.setattr(ix, '_gpu_note_logged', False)
    monkeypatch.setattr(ix, 'gpu_available', lambda: False)
    with caplog.at_level(logging.INFO, logger=ix.__name__):
        m = memory(use_gpu=True)
        m.add(case(embedding_for(1)))
        m.add(case(embedding_for(2)))
    notes = [r for r in caplog.records if 'GPU' in r.getMessage()]
    assert len(notes) == 1 and 'CPU' in notes[0].getMessage()
    assert m.search(embedding_for(2))[0][1] == pytest.approx(1.0, abs=1e-5)
