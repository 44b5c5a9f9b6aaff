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
from collections.abc import Mapping
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
    """Reads a Hub dataset, local parquet/jsonl shards or a `save_to_disk` folder as Sample Documents.

    Args:
        source: anything `mmsieve.hub.open_source` accepts.
        schema: the row schema; detected from the source's features when None.
        kind: `auto`, `caption`, `interleaved`, `conversation` or a format name (when detecting).
        columns: role -> column overrides (when detecting), e.g. `{"image": "jpg", "text": "alt"}`.
        split: the split to read; config: the Hub configuration.
        limit: read at most this many rows in total (the first `limit` rows, split across tasks).
        batch_size: rows converted at a time.
        progress: show a progress bar per task.
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
    ):
        super().__init__()
        self.source, self.split, self.config = source, split, config
        self.schema, self.kind, self.columns = schema, kind, dict(columns or {})
        self.limit, self.batch_size, self.progress = limit, batch_size, progress
        self.num_rows: int | None = None  # known once `open()` has run

    def open(self) -> tuple[Any, Schema]:
        """Open the source (limited to `limit` rows) and resolve the schema."""
        ds = open_source(self.source, split=self.split, config=self.config)
        stale = [c for c in RUN_COLUMNS if c in ds.column_names]
        if stale:  # a previous run's verdict (e.g. re-filtering removed/): this run decides afresh
            ds = ds.remove_columns(stale)
        if self.limit is not None:
            ds = ds.select(range(min(self.limit, len(ds))))
        schema = self.schema or detect_schema(ds.features, kind=self.kind, columns=self.columns or None)
        self.num_rows = len(ds)
        return ds, schema

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        ds, schema = self.open()
        start, stop = shard_bounds(len(ds), world_size, rank)
        shard = ds.select(range(start, stop))
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(shard),
            desc=f"task {rank}",
            unit="rows",
            disable=not self.progress,
            position=rank,
            leave=False,
            file=sys.__stderr__,  # the console, even when the executor silences the task's log output
        )
        index = start
        for batch in shard.iter(batch_size=self.batch_size):
            n = len(next(iter(batch.values())))
            ids = [str(i) for i in range(index, index + n)]
            index += n
            for sample in rows_to_samples(batch, schema, ids):
                self.stat_update("documents")
                if sample.reason is not None:
                    self.stat_update(f"invalid_{sample.reason}")
                yield sample_to_document(sample)
            bar.update(n)
        bar.close()
