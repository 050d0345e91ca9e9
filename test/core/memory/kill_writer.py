"""Subprocess for the SIGKILL test: adds cases as fast as it can and prints `i case_id` after each add returns."""
import sys

from flow_rag_vla_ros.core.memory import FailureMemory, MemoryConfig

sys.path.insert(0, sys.argv[3])
from memory_helpers import case, embedding_for  # noqa: E402

directory, start = sys.argv[1], int(sys.argv[2])
memory = FailureMemory.open(MemoryConfig(directory=directory, snapshot_every=15, approx_threshold=60))
i = start
while True:
    case_id, merged = memory.add(case(embedding_for(i), seed=i))
    sys.stdout.write(f'{i} {case_id} {int(merged)}\n')
    sys.stdout.flush()
    i += 1
