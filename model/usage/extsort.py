"""External merge sort of text lines in byte order, in bounded memory.

Lines (``bytes``, each ending in ``\\n``) are collected until ``memory_bytes`` is reached, sorted in
memory and written to a temporary run file; at the end the runs are merged with a heap
(``heapq.merge``), at most ``fan_in`` at a time (more runs are merged in several passes, so the
number of open files stays bounded too).  Comparison is Python's ``bytes`` order, which is the
unsigned byte order ``LC_ALL=C sort`` uses: never a locale's collation, whose order depends on the
machine and would let lines of one key land apart.

Memory: one chunk (``memory_bytes``, counted with Python's per-object overhead) plus one read buffer
per merged run; it does not depend on the number of lines or keys.
"""

from __future__ import annotations

import heapq
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO

DEFAULT_MEMORY_BYTES = 64 * 1024 * 1024
DEFAULT_FAN_IN = 64
#: What a ``bytes`` object and its list slot cost beyond their content (CPython 3.11, 64-bit).
LINE_OVERHEAD_BYTES = 33 + 8
RUN_BUFFER_BYTES = 256 * 1024


class ExternalSort:
    """``with ExternalSort(tmp_dir) as s: s.add(line) ...; for line in s.sorted(): ...``"""

    def __init__(
        self,
        tmp_dir: str | os.PathLike[str] | None = None,
        *,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
        fan_in: int = DEFAULT_FAN_IN,
    ) -> None:
        if fan_in < 2:
            raise ValueError("fan_in must be at least 2")
        self.memory_bytes = memory_bytes
        self.fan_in = fan_in
        self._parent = tmp_dir
        self._dir: pathlib.Path | None = None
        self._chunk: list[bytes] = []
        self._chunk_bytes = 0
        self._runs: list[pathlib.Path] = []
        self._open: list[IO[bytes]] = []
        self.lines = 0
        self.runs_written = 0

    def __enter__(self) -> ExternalSort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for f in self._open:
            f.close()
        self._open.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def add(self, line: bytes) -> None:
        self._chunk.append(line)
        self._chunk_bytes += len(line) + LINE_OVERHEAD_BYTES
        self.lines += 1
        if self._chunk_bytes >= self.memory_bytes:
            self._spill()

    def extend(self, lines: Iterable[bytes]) -> None:
        for line in lines:
            self.add(line)

    def _new_run(self) -> tuple[pathlib.Path, IO[bytes]]:
        if self._dir is None:
            self._dir = pathlib.Path(tempfile.mkdtemp(prefix="ferryman-sort-", dir=self._parent))
        path = self._dir / f"run-{self.runs_written:06d}"
        self.runs_written += 1
        return path, open(path, "wb", buffering=RUN_BUFFER_BYTES)

    def _spill(self) -> None:
        if not self._chunk:
            return
        self._chunk.sort()
        path, f = self._new_run()
        with f:
            f.writelines(self._chunk)
        self._runs.append(path)
        self._chunk = []
        self._chunk_bytes = 0

    def _read(self, path: pathlib.Path) -> Iterator[bytes]:
        f = open(path, "rb", buffering=RUN_BUFFER_BYTES)
        self._open.append(f)
        yield from f
        f.close()
        self._open.remove(f)
        path.unlink(missing_ok=True)

    def sorted(self) -> Iterator[bytes]:
        """Every line added, in byte order (lines that are equal come out together)."""
        if not self._runs:
            self._chunk.sort()
            chunk, self._chunk = self._chunk, []
            self._chunk_bytes = 0
            yield from chunk
            return
        self._spill()
        runs = self._runs
        self._runs = []
        while len(runs) > self.fan_in:
            merged: list[pathlib.Path] = []
            for i in range(0, len(runs), self.fan_in):
                group = runs[i : i + self.fan_in]
                if len(group) == 1:
                    merged.append(group[0])
                    continue
                path, f = self._new_run()
                with f:
                    f.writelines(heapq.merge(*(self._read(p) for p in group)))
                merged.append(path)
            runs = merged
        yield from heapq.merge(*(self._read(p) for p in runs))
