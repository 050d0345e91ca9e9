"""Durability for the failure memory: an append-only, checksummed journal plus atomic snapshots.

Layout of a memory directory:
  journal-00000001.log, journal-00000002.log, ...   journal segments, replayed in order
  snapshot.safetensors                             latest snapshot (tables + faiss index + JSON metadata)
  lock                                             flock'ed by the one process that has the memory open

One writer per directory: a second process (or a second FailureMemory in one process) that opens it gets a
clear error instead of interleaving its records with the first's. The kernel drops the lock when its holder
exits, `kill -9` included, so a crash never leaves the directory locked.

Journal segment = 8-byte header `FRVJ` + u32 version, then records `<u32 length><u32 crc32(payload)><payload>`
where payload is UTF-8 JSON (one state change: a full case `put` or a `remove`). `append` writes the
whole record with one write() and fsyncs before returning, so a returned call is on disk.

Snapshot protocol (no window where an acknowledged record is in neither place):
  1. under the memory's write lock: copy the state and `rotate()` -> new appends go to segment S+1;
     the copied state covers exactly segments <= S;
  2. write the snapshot to a temp file, fsync it, rename it over snapshot.safetensors, fsync the directory;
     its metadata says `segment = S`;
  3. delete segments <= S (`drop_through(S)`).
A crash before 2 completes keeps the old snapshot and every segment; a crash between 2 and 3 leaves
segments <= S, which start-up skips (and deletes) because the snapshot says it covers them.

Start-up (`replay`): records of segments > snapshot segment are yielded in order. A record that is torn
(short) or corrupt (length out of range, CRC mismatch, invalid JSON) is reported with a `logging.warning`
naming the file and byte offset; the segment is truncated to its last good record so later appends stay
readable. Nothing before that record is lost.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save as st_save

log = logging.getLogger(__name__)

MAGIC = b'FRVJ' + struct.pack('<I', 1)
FRAME = struct.Struct('<II')
MAX_RECORD = 64 << 20
SEGMENT_RE = re.compile(r'^journal-(\d{8})\.log$')
SNAPSHOT_NAME = 'snapshot.safetensors'


def fsync_dir(path: str | Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode_record(record: dict[str, Any]) -> bytes:
    payload = json.dumps(record, separators=(',', ':')).encode()
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def scan_segment(path: Path) -> tuple[list[dict], int, str | None]:
    """Valid records of one segment, the byte offset where they end, and why reading stopped early (or None)."""
    data = path.read_bytes()
    if len(data) < len(MAGIC):
        return [], 0, f'torn segment header ({len(data)} bytes)' if data else None
    if data[:len(MAGIC)] != MAGIC:
        return [], 0, 'bad segment header'
    records, off = [], len(MAGIC)
    while off < len(data):
        if len(data) - off < FRAME.size:
            return records, off, f'torn record frame ({len(data) - off} bytes)'
        length, crc = FRAME.unpack_from(data, off)
        if length > MAX_RECORD:
            return records, off, f'record length {length} out of range'
        end = off + FRAME.size + length
        if end > len(data):
            return records, off, f'torn record (needs {length} payload bytes, {len(data) - off - FRAME.size} present)'
        payload = data[off + FRAME.size:end]
        if zlib.crc32(payload) != crc:
            return records, off, 'CRC32 mismatch'
        try:
            records.append(json.loads(payload))
        except ValueError:
            return records, off, 'payload is not valid JSON'
        off = end
    return records, off, None


LOCK_NAME = 'lock'


class DirectoryInUse(RuntimeError):
    """Another process (or another open FailureMemory) holds the memory directory."""


def lock_directory(directory: str | Path) -> int:
    """Take the directory's exclusive writer lock; returns the fd that holds it (close it to release).
    Raises DirectoryInUse, naming the holder's pid, when another open file holds it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(directory / LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors='replace').strip() or 'unknown'
        os.close(fd)
        raise DirectoryInUse(f'failure memory {directory} is open in another process (pid {holder}) or another '
                             f'FailureMemory; one writer per directory') from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
    return fd


class Journal:
    """Append-only segmented journal in `directory` (see module docstring)."""

    def __init__(self, directory: str | Path, fsync: bool = True):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._fd: int | None = None
        self.segment = 0
        self.records_in_segment = 0

    def segments(self) -> list[int]:
        found = (SEGMENT_RE.match(p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def path(self, segment: int) -> Path:
        return self.directory / f'journal-{segment:08d}.log'

    def replay(self, after_segment: int = 0) -> Iterator[dict]:
        """Yield records of segments > after_segment; repair torn tails; then open the last one for appends."""
        self.drop_through(after_segment)
        segments = self.segments()
        for seg in segments:
            path = self.path(seg)
            records, good_end, problem = scan_segment(path)
            if problem is not None:
                size = path.stat().st_size
                log.warning('failure memory journal %s: %s at byte offset %d; skipping %d trailing byte(s) and '
                            'truncating the file to its last good record (%d records kept)',
                            path, problem, good_end, size - good_end, len(records))
                self._truncate(path, good_end)
            yield from records
            if seg == segments[-1]:
                self.records_in_segment = len(records)
        self._open(segments[-1] if segments else max(after_segment, 0) + 1)

    def _truncate(self, path: Path, size: int) -> None:
        with open(path, 'r+b') as f:
            if size < len(MAGIC):  # even the header is damaged: start the segment afresh
                f.seek(0)
                f.write(MAGIC)
                size = len(MAGIC)
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())

    def _open(self, segment: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
        path = self.path(segment)
        new = not path.exists()
        self._fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if new:
            os.write(self._fd, MAGIC)
            os.fsync(self._fd)
            fsync_dir(self.directory)
            self.records_in_segment = 0
        self.segment = segment

    def append(self, record: dict[str, Any]) -> None:
        """Write one record; returns only after it is fsynced (or handed to the OS when fsync=False)."""
        if self._fd is None:
            raise RuntimeError('journal is not open: call replay() first')
        data = encode_record(record)
        written = os.write(self._fd, data)
        while written < len(data):  # os.write may be partial for very large records
            written += os.write(self._fd, data[written:])
        if self.fsync:
            os.fsync(self._fd)
        self.records_in_segment += 1

    def rotate(self) -> int:
        """Start a new segment; returns the last segment that a snapshot taken now will cover."""
        closed = self.segment
        self._open(closed + 1)
        return closed

    def drop_through(self, segment: int) -> None:
        removed = False
        for seg in self.segments():
            if seg <= segment and seg != self.segment:
                self.path(seg).unlink(missing_ok=True)
                removed = True
        if removed:
            fsync_dir(self.directory)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def write_tables(path: str | Path, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Atomically write arrays + JSON metadata as one safetensors file (temp + fsync + rename + dir fsync)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                   metadata={'json': json.dumps(meta, separators=(',', ':'))})
    tmp = path.with_name(path.name + '.tmp')
    with open(tmp, 'wb') as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_tables(path: str | Path, meta_only: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and JSON metadata of a file write_tables wrote; `meta_only` reads the header alone."""
    with safe_open(str(path), framework='np') as f:
        meta = json.loads((f.metadata() or {}).get('json', '{}'))
        tensors = {} if meta_only else {k: f.get_tensor(k) for k in f.keys()}
    return tensors, meta


def read_snapshot(directory: str | Path,
                  meta_only: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    path = Path(directory) / SNAPSHOT_NAME
    return read_tables(path, meta_only) if path.exists() else None


def write_snapshot(directory: str | Path, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    write_tables(Path(directory) / SNAPSHOT_NAME, tensors, meta)
