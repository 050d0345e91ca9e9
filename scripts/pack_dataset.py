"""Pack an episode dataset (sim/dataset.py format) smaller for moving it to a training machine, and unpack it.

    .venv/bin/python scripts/pack_dataset.py pack data/demos_2cam_base /tmp/packed [--tasks push reach]
    python3 scripts/pack_dataset.py unpack /tmp/packed data/demos_2cam_base

Frames are stored as lossless WebP (OpenCV): 58 % of the episode files' size on Push (np.savez_compressed is
zlib over raw pixels). Unpacking decodes every frame, checks it against the CRC-32 stored at packing time,
and writes the same episode files with sim/dataset.py, so training reads exactly what was collected.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import zlib
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flow_rag_vla_ros.sim.dataset import (Episode, episode_arrays, episode_from_arrays, read_episode,  # noqa: E402
                                          write_episode)

LOSSLESS = [cv2.IMWRITE_WEBP_QUALITY, 101]  # quality above 100 selects WebP's lossless mode


def pack_episode(ep: Episode, path: Path) -> None:
    blobs = []
    for frame in ep.images:
        ok, buf = cv2.imencode('.webp', frame, LOSSLESS)
        if not ok:
            raise RuntimeError(f'{path}: WebP encoding failed')
        blobs.append(buf.ravel())
    with open(path, 'wb') as f:
        np.savez(f, frames=np.concatenate(blobs), offsets=np.cumsum([0] + [len(b) for b in blobs]),
                 crc=np.array([zlib.crc32(frame.tobytes()) for frame in ep.images], np.uint32),
                 shape=np.array(ep.images.shape[1:]), **episode_arrays(ep))


def unpack_episode(path: Path) -> Episode:
    with np.load(path, allow_pickle=False) as z:
        frames, offsets = z['frames'], z['offsets']
        images = np.stack([cv2.imdecode(frames[a:b], cv2.IMREAD_UNCHANGED) for a, b in zip(offsets[:-1], offsets[1:])])
        if images.shape[1:] != tuple(z['shape']) or [zlib.crc32(f.tobytes()) for f in images] != z['crc'].tolist():
            raise ValueError(f'{path}: decoded frames differ from the packed ones')
        return episode_from_arrays(z, images)


def convert(mode: str, dst: Path, f: Path) -> None:
    if mode == 'pack':
        pack_episode(read_episode(f), dst / f.parent.name / f.name)
    else:
        write_episode(dst, unpack_episode(f), int(f.stem.split('_')[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('mode', choices=('pack', 'unpack'))
    p.add_argument('src')
    p.add_argument('dst')
    p.add_argument('--tasks', nargs='*', help='pack: only these tasks (default: all)')
    p.add_argument('--workers', type=int, default=0, help='processes (default: one per CPU)')
    a = p.parse_args(argv)
    src, dst = Path(a.src), Path(a.dst)
    meta = json.loads((src / 'meta.json').read_text())
    tasks = [t for t in meta['tasks'] if not a.tasks or t in a.tasks]
    files = [f for task in tasks for f in sorted((src / task).glob('episode_*.npz'))]
    for task in tasks:
        (dst / task).mkdir(parents=True, exist_ok=True)
    work = partial(convert, a.mode, dst)
    workers = a.workers or os.cpu_count() or 1
    if workers == 1:
        count = sum(1 for _ in map(work, files))
    else:
        with ProcessPoolExecutor(workers) as pool:
            count = sum(1 for _ in pool.map(work, files, chunksize=16))
    if a.mode == 'pack' and a.tasks:
        meta['tasks'] = {t: v for t, v in meta['tasks'].items() if t in tasks}
    (dst / 'meta.json').write_text(json.dumps(meta, indent=2, sort_keys=True))
    print(json.dumps({'mode': a.mode, 'episodes': count, 'tasks': tasks,
                      'bytes': sum(f.stat().st_size for f in dst.rglob('*') if f.is_file())}))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
