"""Session-state partition store: ``session -> partition -> key -> value`` with a version per partition.

``MemoryStore`` keeps everything in this process; ``DurableStore`` adds local append-only segments and
snapshots (docs/store.md).  Both implement ``PartitionStore`` (base.py).
"""

from replay.store.base import (
    InvalidData,
    InvalidName,
    PartitionState,
    PartitionStore,
    StaleVersion,
    StoreClosed,
    StoreCorrupted,
    StoreError,
    StoreIOError,
    StoreLimitExceeded,
    StoreLimits,
    StoreLocked,
    StoreStatistics,
    VersionConflict,
    VersionGap,
)
from replay.store.durable import DurableStore, FsyncMode, RecoveryReport
from replay.store.memory import MemoryStore

__all__ = [
    "DurableStore",
    "FsyncMode",
    "InvalidData",
    "InvalidName",
    "MemoryStore",
    "PartitionState",
    "PartitionStore",
    "RecoveryReport",
    "StaleVersion",
    "StoreClosed",
    "StoreCorrupted",
    "StoreError",
    "StoreIOError",
    "StoreLimitExceeded",
    "StoreLimits",
    "StoreLocked",
    "StoreStatistics",
    "VersionConflict",
    "VersionGap",
]
