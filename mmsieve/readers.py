"""`SampleReader`: a datatrove reader that turns any supported source into Sample-carrying Documents.

Each task opens the source itself (nothing heavy is pickled), takes a contiguous shard of the rows
(`datasets.Dataset.shard(contiguous=True)`, so order is deterministic and ids are global row
numbers) and yields one Document per row. A row that cannot be converted still becomes a Document,
marked with its reason, so rows in always equal kept + removed.

Example:
    >>> from datatrove.executor import LocalPipelineExecutor  # doctest: +SKIP
    >>> from mmsieve.filters import HygieneFilter  # doctest: +SKIP
    >>> LocalPipelineExecutor([SampleReader("captions/"), HygieneFilter(), writer], tasks=4).run()  # doctest: +SKIP
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from typing import Any

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from mmsieve.documents import sample_to_document
from mmsieve.hub.sources import open_source
from mmsieve.sample import DETAIL_COLUMN, KEEP_COLUMN, REASON_COLUMN
from mmsieve.schemas import Schema, detect_schema, rows_to_samples


RUN_COLUMNS = (KEEP_COLUMN, REASON_COLUMN, DETAIL_COLUMN)


def shard_bounds(n_rows: int, world_size: int, rank: int) -> tuple[int, int]:
    """[start, stop) of `rank`'s contiguous shard, exactly as `Dataset.shard(contiguous=True)` splits.

    Example:
        >>> [shard_bounds(10, 3, r) for r in range(3)]
        [(0, 4), (4, 7), (7, 10)]
    """
    div, mod = divmod(n_rows, world_size)
    start = div * rank + min(rank, mod)
    return start, start + div + (1 if rank < mod else 0)


class SampleReader(PipelineStep):
    """Reads a Hub dataset, `hf://` files, local parquet/jsonl/webdataset shards or a `save_to_disk` folder as
    Sample Documents.

    Tasks split the rows without reading each other's: a prepared dataset by contiguous row ranges (ids are the
    global row numbers, `"0"`, `"1"`, ...); a stream (`streaming=True`) by its files, each task reading a contiguous
    range of them (ids are `"FILE:ROW"`, e.g. `"3:17"` for row 17 of the fourth file). Ids never depend on the
    task count, so a later stage may use another one. A stream with fewer files than tasks, or with a `limit`
    (its first rows, in file order), is split row by row instead: every task reads those files and keeps every
    `world_size`-th row.

    Args:
        source: anything `mmsieve.hub.open_source` accepts.
        schema: the row schema; detected from the source's features when None.
        kind: `auto`, `caption`, `interleaved`, `conversation` or a format name (when detecting).
        columns: role -> column overrides (when detecting), e.g. `{"image": "jpg", "text": "alt"}`.
        split: the split to read; config: the Hub configuration.
        limit: read at most this many rows in total (the first `limit` rows, split across tasks).
        batch_size: rows converted at a time.
        progress: show a progress bar per task.
        streaming: read the source as a stream (nothing is downloaded or prepared up front; each task fetches
            only its own files). For Hub datasets larger than a task's disk.

    Example:
        >>> reader = SampleReader("HuggingFaceM4/FineVision", config="ai2d_merged", streaming=True)  # doctest: +SKIP
        >>> docs = list(reader.run(rank=0, world_size=64))  # doctest: +SKIP
    """

    name = "📖 mmsieve reader"
    type = "📖 - READER"

    def __init__(
        self,
        source: str,
        schema: Schema | None = None,
        kind: str = "auto",
        columns: Mapping[str, str] | None = None,
        split: str | None = None,
        config: str | None = None,
        limit: int | None = None,
        batch_size: int = 256,
        progress: bool = False,
        streaming: bool = False,
    ):
        super().__init__()
        self.source, self.split, self.config = source, split, config
        self.schema, self.kind, self.columns = schema, kind, dict(columns or {})
        self.limit, self.batch_size, self.progress = limit, batch_size, progress
        self.streaming = streaming
        self.num_rows: int | None = None  # known once `open()` has run, unless streaming

    def open(self) -> tuple[Any, Schema]:
        """Open the source (limited to `limit` rows unless streaming) and resolve the schema."""
        ds = open_source(self.source, split=self.split, config=self.config, streaming=self.streaming)
        stale = [c for c in RUN_COLUMNS if c in ds.column_names]
        if stale:  # a previous run's verdict (e.g. re-filtering removed/): this run decides afresh
            ds = ds.remove_columns(stale)
        if self.limit is not None and not self.streaming:
            ds = ds.select(range(min(self.limit, len(ds))))
        schema = self.schema or detect_schema(ds.features, kind=self.kind, columns=self.columns or None)
        self.num_rows = None if self.streaming else len(ds)
        return ds, schema

    def task_count(self, tasks: int) -> int:
        """`tasks`, or fewer when the source has fewer rows (call after `open()`; streams are never capped)."""
        return max(1, tasks if self.num_rows is None else min(tasks, self.num_rows))

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        ds, schema = self.open()
        from tqdm.auto import tqdm

        if self.streaming:
            total, batches = None, self._stream(ds, rank, world_size)
        else:
            start, stop = shard_bounds(len(ds), world_size, rank)
            total, batches = stop - start, self._rows(ds, start, stop)
        bar = tqdm(
            total=total,
            desc=f"task {rank}",
            unit="rows",
            disable=not self.progress,
            position=rank,
            leave=False,
            file=sys.__stderr__,  # the console, even when the executor silences the task's log output
        )
        for ids, batch in batches:
            for sample in rows_to_samples(batch, schema, ids):
                self.stat_update("documents")
                if sample.reason is not None:
                    self.stat_update(f"invalid_{sample.reason}")
                yield sample_to_document(sample)
            bar.update(len(ids))
        bar.close()

    def _rows(self, ds: Any, start: int, stop: int) -> Iterator[tuple[list[str], dict[str, list]]]:
        """Rows [start, stop) of a prepared dataset, in batches; ids are global row numbers."""
        index = start
        for batch in ds.select(range(start, stop)).iter(batch_size=self.batch_size):
            n = len(next(iter(batch.values())))
            yield [str(i) for i in range(index, index + n)], batch
            index += n

    def _stream(self, ds: Any, rank: int, world_size: int) -> Iterator[tuple[list[str], dict[str, list]]]:
        """This task's rows of a stream, in batches: its own files, or every `world_size`-th row (see the class)."""
        files = ds.n_shards
        by_file = self.limit is None and files >= world_size
        mine = range(*shard_bounds(files, world_size, rank)) if by_file else range(files)
        ids: list[str] = []
        rows: list[dict[str, Any]] = []
        for seen, (file, row, example) in enumerate(self._file_rows(ds, mine)):
            if self.limit is not None and seen >= self.limit:
                break
            if by_file or seen % world_size == rank:
                ids.append(f"{file}:{row}")
                rows.append(example)
            if len(rows) == self.batch_size:
                yield ids, _columns(rows)
                ids, rows = [], []
        if rows:
            yield ids, _columns(rows)

    @staticmethod
    def _file_rows(ds: Any, files: range) -> Iterator[tuple[int, int, dict[str, Any]]]:
        """(file, row in that file, row) of a stream's `files`, in order; a file is fetched only when reached."""
        for file in files:
            part = ds.shard(num_shards=ds.n_shards, index=file, contiguous=True) if ds.n_shards > 1 else ds
            for row, example in enumerate(part):
                yield file, row, example


def _columns(rows: list[dict[str, Any]]) -> dict[str, list]:
    """Row dicts as one batch of columns (the shape `Dataset.iter` yields)."""
    return {name: [row.get(name) for row in rows] for name in rows[0]}
