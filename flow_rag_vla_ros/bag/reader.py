"""Read a rosbag2 (MCAP or sqlite3) with `rosbags`; messages come back as real rclpy messages.

Deserialisation uses `rclpy.serialization.deserialize_message`, so the results work with
`flow_rag_vla_ros.nodes.conversions` (images -> (H, W, 3) uint8 and so on). Every way a bag can be broken
(missing metadata.yaml, truncated or garbage storage file, a message that does not decode, fewer messages
than the metadata promises) raises `BagError` naming the file and the problem.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader, ReaderError

from flow_rag_vla_ros.bag.recorder import message_class
from flow_rag_vla_ros.nodes.conversions import stamp_to_ns

# what rosbags says -> what it means for the user
_EXPLANATIONS = {
    'File end magic is invalid': 'the MCAP file is truncated (no footer): the recorder was probably killed '
                                 'before it closed the bag',
    'File magic is invalid': 'the storage file is not an MCAP file (garbage or another format)',
    'Some database files are missing': 'a storage file listed in metadata.yaml is missing',
    'Could not load YAML': 'metadata.yaml is not valid YAML',
    'file is not a database': 'the sqlite3 storage file is corrupt or not a database',
    'database disk image is malformed': 'the sqlite3 storage file is corrupt (truncated?)',
}


class BagError(Exception):
    """A bag that cannot be read as a rosbag2; the message names the file and the problem."""


@dataclass(frozen=True)
class TopicInfo:
    msgtype: str
    count: int  # messages according to metadata.yaml


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    log_time_ns: int  # receive time at the recorder
    msg: Any  # rclpy message

    @property
    def stamp_ns(self) -> int:
        """header.stamp in ns (the camera frame stamp on stack topics); -1 for messages without a header."""
        header = getattr(self.msg, 'header', None)
        return stamp_to_ns(header.stamp) if header is not None else -1


def _explain(path: Path, error: Exception) -> BagError:
    """A BagError naming the storage file(s) (the bag directory when there are none) and the problem."""
    files = sorted(p for p in path.iterdir() if p.suffix in ('.mcap', '.db3')) if path.is_dir() else [path]
    where = ', '.join(str(p) for p in files) or str(path)
    text = str(error) or type(error).__name__
    why = next((v for k, v in _EXPLANATIONS.items() if k in text), None)
    return BagError(f'{where}: {why} ({text})' if why else f'{where}: cannot read bag: {text}')


class BagReader:
    """Open + validate a rosbag2 directory; iterate its messages. Use as a context manager."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f'{self.path}: no such bag (file or directory)')
        if self.path.is_dir() and not (self.path / 'metadata.yaml').is_file():
            raise BagError(f'{self.path}: metadata.yaml is missing: not a rosbag2 directory, or the recorder '
                           f'was killed before it closed the bag')
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except (ReaderError, OSError, KeyError, ValueError) as e:
            raise _explain(self.path, e) from e
        self.topics = {name: TopicInfo(info.msgtype or '', info.msgcount)
                       for name, info in self._reader.topics.items()}
        self._classes: dict[str, Any] = {}

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()

    @property
    def storage_file(self) -> str:
        return ', '.join(str(p) for p in self._reader.paths)

    def _class(self, msgtype: str):
        if msgtype not in self._classes:
            try:
                self._classes[msgtype] = message_class(msgtype)
            except ValueError as e:
                raise BagError(f'{self.path}: {e}') from e
        return self._classes[msgtype]

    def raw_messages(self, topics: Iterable[str] | None = None) -> Iterator[tuple[str, str, int, bytes]]:
        """(topic, msgtype, log_time_ns, CDR bytes) in log-time order; checks counts against metadata."""
        wanted = set(self.topics) if topics is None else set(topics)
        unknown = sorted(wanted - set(self.topics))
        if unknown:
            raise BagError(f'{self.path}: no topic(s) {unknown} in the bag (it has {sorted(self.topics)})')
        connections = [c for c in self._reader.connections if c.topic in wanted]
        seen = dict.fromkeys(wanted, 0)
        try:
            for connection, log_time_ns, data in self._reader.messages(connections=connections):
                seen[connection.topic] += 1
                yield connection.topic, connection.msgtype, log_time_ns, data
        except Exception as e:  # ReaderError, sqlite3.DatabaseError, struct.error from a corrupt chunk, ...
            raise _explain(self.path, e) from e
        short = {t: (n, self.topics[t].count) for t, n in seen.items() if n != self.topics[t].count}
        if short:
            detail = ', '.join(f'{t}: {n} of {m}' for t, (n, m) in sorted(short.items()))
            raise BagError(f'{self.storage_file}: message counts differ from metadata.yaml ({detail}): '
                           f'the storage file is truncated or was modified')

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
        """Deserialised messages (rclpy message objects) in log-time order."""
        for topic, msgtype, log_time_ns, data in self.raw_messages(topics):
            try:
                msg = deserialize_message(data, self._class(msgtype))
            except BagError:
                raise
            except Exception as e:
                raise BagError(f'{self.storage_file}: a {msgtype} message on {topic} at log time {log_time_ns} '
                               f'does not deserialise: {e}') from e
            yield BagMessage(topic, msgtype, log_time_ns, msg)


def read_messages(path: str | Path, topics: Iterable[str] | None = None) -> list[BagMessage]:
    """Every message of `topics` (all when None) from the bag at `path`."""
    with BagReader(path) as reader:
        return list(reader.messages(topics))
