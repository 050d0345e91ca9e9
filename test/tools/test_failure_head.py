"""failure-head: which (before, after) pairs of a rollout are failures, and the CLI's run names."""
import numpy as np
import pytest

from flow_rag_vla_ros.core.memory.detector import FailureHead
from flow_rag_vla_ros.tools.failure_head import chunk_pairs, dataset


def test_the_last_horizon_of_a_failed_episode_is_labelled_a_failure():
    e = np.arange(5, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)  # (T=5, D=3), row t = t
    before, after, label = chunk_pairs(e, failed=True, horizon=2)
    np.testing.assert_array_equal(before[:, 0], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(after[:, 0], [2, 3, 4, 4, 4])  # H steps later, clipped to the last step
    np.testing.assert_array_equal(label, [0, 0, 1, 1, 1])  # the failure ends the episode within H steps
    assert chunk_pairs(e, failed=False, horizon=2)[2].sum() == 0


def test_a_head_trained_on_rollout_pairs_separates_failing_from_succeeding_episodes():
    rng = np.random.default_rng(0)

    def episode(failed):  # a failing episode drifts towards another region of the embedding space at its end
        t = 12
        e = rng.normal(size=(t, 8)).astype(np.float32) * 0.1
        if failed:
            e[-4:, 0] += 3.0
        return {'embeddings': list(e), 'success': not failed}

    train = dataset([episode(i % 2 == 0) for i in range(40)], horizon=3)
    test = dataset([episode(i % 2 == 0) for i in range(20)], horizon=3)
    head = FailureHead(8).fit(*train)
    scores = head.precision_recall(*test)
    assert scores['precision'] > 0.8 and scores['recall'] > 0.8


def test_cli_refuses_a_run_that_is_not_task_and_scenario():
    from flow_rag_vla_ros.cli import main
    with pytest.raises(SystemExit, match='not task:scenario'):
        main(['failure-head', '--runs', 'push:no_such_scenario', '--episodes', '1'])
    with pytest.raises(SystemExit, match='not task:scenario'):
        main(['failure-head', '--runs', 'push', '--episodes', '1'])
    with pytest.raises(SystemExit, match='needs 5 or more training episodes'):
        main(['failure-head', '--runs', 'push:heavy_cube', '--episodes', '2'])
