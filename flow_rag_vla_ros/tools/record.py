"""`flow-rag-vla record`: record the stack topics to a rosbag2 until Ctrl-C / SIGTERM (or --duration)."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from flow_rag_vla_ros.bag.recorder import STACK_TOPICS, STORAGES, recording

__all__ = ['recording', 'register', 'run']


def register(subparsers) -> None:
    p = subparsers.add_parser('record', help='record the stack topics to a rosbag2 (MCAP by default)')
    p.add_argument('--out', required=True, help='bag directory to create (must not exist)')
    p.add_argument('--storage', choices=sorted(STORAGES), default='mcap')
    p.add_argument('--topics', nargs='+', default=None, metavar='TOPIC',
                   help='topics to record (default: every stack topic); other topics as /name:pkg/msg/Type')
    p.add_argument('--duration', type=float, default=0.0, help='stop after this many seconds (0 = until Ctrl-C)')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.duration < 0:
        raise SystemExit(f'--duration must be >= 0, got {args.duration}')
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    deadline = time.monotonic() + args.duration if args.duration else float('inf')
    try:
        with recording(args.out, args.topics or list(STACK_TOPICS), args.storage) as recorder:
            print(f'recording {len(recorder.counts)} topics to {args.out} ({args.storage}); Ctrl-C to stop',
                  file=sys.stderr)
            while not stop.wait(0.2) and time.monotonic() < deadline:
                pass
    except (ValueError, FileExistsError) as e:
        raise SystemExit(f'record: {e}') from e
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    total = sum(recorder.counts.values())
    print(f'{args.out}: {total} messages ' +
          ', '.join(f'{t} {n}' for t, n in recorder.counts.items() if n), file=sys.stderr)
    return 0
