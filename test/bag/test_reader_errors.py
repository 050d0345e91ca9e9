"""Broken bags raise BagError naming the file and the problem, never a bare library exception."""
import os
import shutil

import pytest
from bag_helpers import sim_like_run, write_bag

from flow_rag_vla_ros.bag.reader import BagError, BagReader, read_messages


@pytest.fixture(scope='module')
def good_bags(tmp_path_factory):
    root = tmp_path_factory.mktemp('bags')
    items, _ = sim_like_run()
    write_bag(root / 'mcap', items, 'mcap')
    write_bag(root / 'sqlite', items, 'sqlite3')
    return root


def copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def storage_file(bag):
    (f,) = [p for p in bag.iterdir() if p.suffix in ('.mcap', '.db3')]
    return f


def test_good_bags_read_completely(good_bags):
    items, _ = sim_like_run()
    for name in ('mcap', 'sqlite'):
        messages = read_messages(good_bags / name)
        assert [(m.topic, m.log_time_ns) for m in messages] == [(t, log) for t, log, _ in items]


@pytest.mark.parametrize('keep', [0.3, 0.9, 0.999])
def test_truncated_mcap(good_bags, tmp_path, keep):
    bag = copy(good_bags / 'mcap', tmp_path / 'cut')
    f = storage_file(bag)
    data = f.read_bytes()
    f.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(BagError, match='truncated') as e:
        read_messages(bag)
    assert str(f) in str(e.value)


def test_garbage_storage_file(good_bags, tmp_path):
    bag = copy(good_bags / 'mcap', tmp_path / 'garbage')
    f = storage_file(bag)
    f.write_bytes(os.urandom(4096))
    with pytest.raises(BagError, match='not an MCAP file') as e:
        read_messages(bag)
    assert str(f) in str(e.value)


def test_garbage_sqlite_file(good_bags, tmp_path):
    bag = copy(good_bags / 'sqlite', tmp_path / 'garbage_db')
    f = storage_file(bag)
    f.write_bytes(b'\x00garbage' * 500)
    with pytest.raises(BagError) as e:
        read_messages(bag)
    assert str(f) in str(e.value) and 'sqlite3' in str(e.value)


def test_truncated_sqlite_file(good_bags, tmp_path):
    bag = copy(good_bags / 'sqlite', tmp_path / 'cut_db')
    f = storage_file(bag)
    data = f.read_bytes()
    f.write_bytes(data[:len(data) // 2])
    with pytest.raises(BagError) as e:
        read_messages(bag)
    assert str(f) in str(e.value)


def test_missing_metadata(good_bags, tmp_path):
    bag = copy(good_bags / 'mcap', tmp_path / 'nometa')
    (bag / 'metadata.yaml').unlink()
    with pytest.raises(BagError, match='metadata.yaml is missing') as e:
        BagReader(bag)
    assert str(bag) in str(e.value)


def test_broken_metadata_and_missing_storage_file(good_bags, tmp_path):
    bag = copy(good_bags / 'mcap', tmp_path / 'badmeta')
    (bag / 'metadata.yaml').write_text('rosbag2_bagfile_information: [1,')
    with pytest.raises(BagError, match='metadata.yaml is not valid YAML'):
        BagReader(bag)
    bag = copy(good_bags / 'mcap', tmp_path / 'nofile')
    storage_file(bag).unlink()
    with pytest.raises(BagError, match='missing'):
        BagReader(bag)
    with pytest.raises(BagError, match='no such bag'):
        BagReader(tmp_path / 'does_not_exist')


def test_unknown_topic_is_named(good_bags):
    with BagReader(good_bags / 'mcap') as reader:
        with pytest.raises(BagError, match='/no/such/topic'):
            list(reader.messages(['/no/such/topic']))
