"""`flow-rag-vla memory info / export`: a monitor's memory directory summarised and exported with its tag."""
import json
from pathlib import Path

import numpy as np
import pytest

from flow_rag_vla_ros.cli import main
from flow_rag_vla_ros.core.memory import FailureCase, FailureMemory, MemoryConfig


def case(i: int, failure_type: str) -> FailureCase:
    rng = np.random.default_rng(i)
    embedding = rng.standard_normal(256).astype(np.float32)  # distinct random states: nearly orthogonal
    return FailureCase(embedding=embedding / np.linalg.norm(embedding), failure_type=failure_type, task='push',
                       failed_chunk=rng.uniform(-1, 1, (8, 4)).astype(np.float32))


def robot_memory(directory: Path, tag: str = 'spatial/gaussian/test') -> None:
    m = FailureMemory.open(MemoryConfig(directory=str(directory)), embedding_id=tag)
    for i in range(5):
        cid = m.add(case(i, 'drop' if i < 3 else 'collision'))[0]
        if i == 0:
            m.set_correction(cid, np.full((8, 4), 0.1))
    m.close()


def test_info_summarises_the_directory(tmp_path, capsys):
    robot_memory(tmp_path / 'mem')
    assert main(['memory', 'info', str(tmp_path / 'mem'), '--json', str(tmp_path / 'info.json')]) == 0
    info = json.loads((tmp_path / 'info.json').read_text())
    assert info['cases'] == 5 and info['failure_types'] == {'drop': 3, 'collision': 2}
    assert info['tasks'] == {'push': 5} and info['with_correction'] == 1
    assert info['embedding'] == 'spatial/gaussian/test' and info['dim'] == 256
    assert 'collision' in capsys.readouterr().out


def test_export_seeds_another_robot_and_carries_the_embedding_tag(tmp_path):
    robot_memory(tmp_path / 'old_robot')
    assert main(['memory', 'export', str(tmp_path / 'old_robot'), str(tmp_path / 'seed.safetensors')]) == 0
    same = FailureMemory(MemoryConfig(), embedding_id='spatial/gaussian/test')
    assert same.import_(str(tmp_path / 'seed.safetensors')) == (5, 0)
    other = FailureMemory(MemoryConfig(), embedding_id='spatial/sparse8/test')
    with pytest.raises(ValueError, match='spatial/gaussian/test'):
        other.import_(str(tmp_path / 'seed.safetensors'))


def test_a_directory_in_use_or_missing_is_a_clear_error(tmp_path):
    robot_memory(tmp_path / 'mem')
    live = FailureMemory.open(MemoryConfig(directory=str(tmp_path / 'mem')))
    with pytest.raises(SystemExit, match='open in another process'):
        main(['memory', 'info', str(tmp_path / 'mem')])
    live.close()
    with pytest.raises(SystemExit, match='no memory directory'):
        main(['memory', 'export', str(tmp_path / 'nothing'), str(tmp_path / 'x.safetensors')])
