"""One core, two surfaces: the base classes every mmsieve capability is built on.

A capability implements one pure batch function, `compute(samples) -> columns`, over valid
`Sample`s. The base classes turn it into:

- a datatrove step: `SampleFilter` is a `BaseFilter` (stats, `exclusion_writer`, `batch_size`),
  `SampleScorer` a `PipelineStep` that annotates every document and drops none;
- a `Dataset.map` function: `ds.map(step, batched=True)` adds the step's columns (and `keep`,
  `mmsieve_reason`, `mmsieve_detail` for filters) to a Hugging Face dataset in any supported schema.

Both surfaces call the same `process()`, so they give the same numbers. Samples whose source row was
unusable (`Sample.reason` set) never reach `compute`: filters drop them with that reason and scorers
give them None.

Example:
    >>> from mmsieve.filters import HygieneFilter
    >>> step = HygieneFilter(min_side=64)
    >>> ds = ds.map(step, batched=True, batch_size=256)  # doctest: +SKIP
    >>> kept = ds.filter(lambda keep: keep, input_columns="keep")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import itertools
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter, get_filter_result
from datatrove.utils.batching import batched
from datatrove.utils.typeshelper import StatHints

from mmsieve.documents import document_to_sample, refresh_document
from mmsieve.images import DecodePool
from mmsieve.sample import DETAIL_COLUMN, KEEP_COLUMN, REASON_COLUMN, Sample
from mmsieve.schemas import Schema, detect_schema, rows_to_samples, samples_to_rows


Columns = dict[str, list[Any]]


class SampleStep:
    """The shared half of both surfaces: the pure batch function and the `Dataset.map` adapter.

    Subclasses implement `compute` and declare `output_features()` for the columns it returns.
    Model steps split their work: `prepare` (decoding, tokenizing: CPU work that runs in a background
    thread for the next batch while the model computes the current one) and `compute` (the model).
    Nothing heavy may be created in `__init__`: steps are pickled to datatrove workers and hashed by
    `Dataset.map`; load models lazily and list them in `_transient_attributes()`.
    """

    is_filter: ClassVar[bool] = False
    rewrites_content: ClassVar[bool] = False  # True: `compute` edits the samples' text in place (a rewriter)

    def __init__(self, batch_size: int = 64, schema: Schema | None = None):
        self.batch_size = batch_size
        self.schema = schema
        self.rank: int | None = None  # the datatrove task or Dataset.map process rank: picks the GPU
        self._map_schemas: dict[str, Schema] = {}  # by the batch's column names (str keys: datatrove JSON-dumps steps)
        self._map_counter = itertools.count()

    # -- the core ---------------------------------------------------------------------------------
    def prepare(self, samples: list[Sample]) -> Any:
        """CPU-side preparation of a batch of valid samples (decode, tokenize); thread-safe; None by default."""
        return None

    @abstractmethod
    def compute(self, samples: list[Sample], prepared: Any = None) -> Columns:
        """The pure batch function over valid samples: returns one list per output column.

        `prepared` is what `prepare(samples)` returned (computed here when None). Filters must
        include `keep` (bool) and may include `mmsieve_reason` / `mmsieve_detail`.
        """

    def output_features(self) -> dict[str, Any]:
        """The `datasets` features of the columns this step adds (used to write typed parquet)."""
        return {}

    def process(self, samples: list[Sample], prepared: Any = None) -> Columns:
        """Run `compute` on the valid samples and give every sample a value in every column.

        Invalid samples (`Sample.reason` set) are not computed: they get None in the step's columns
        and, for filters, `keep=False` with their own reason. `prepared` is `prepare()` of the valid ones.
        """
        valid = [i for i, s in enumerate(samples) if s.reason is None]
        computed = self.compute([samples[i] for i in valid], prepared) if valid else {}
        names = list(computed) or list(self.output_features())
        if self.is_filter:
            names = list(dict.fromkeys([KEEP_COLUMN, REASON_COLUMN, DETAIL_COLUMN, *names]))
        out: Columns = {name: [None] * len(samples) for name in names}
        for name, values in computed.items():
            if len(values) != len(valid):
                raise RuntimeError(
                    f"{type(self).__name__}.compute returned {len(values)} values for {name!r}, expected {len(valid)}"
                )
            for i, value in zip(valid, values):
                out[name][i] = value
        if self.is_filter:
            for i, sample in enumerate(samples):
                if sample.reason is not None:
                    out[KEEP_COLUMN][i] = False
                    out[REASON_COLUMN][i] = sample.reason
                    out[DETAIL_COLUMN][i] = sample.detail
                elif out[KEEP_COLUMN][i] is None:
                    raise RuntimeError(f"{type(self).__name__}.compute gave no 'keep' for sample {sample.id!r}")
        return out

    def process_stream(self, batches: Iterable[list[Sample]]) -> Iterator[tuple[list[Sample], Columns]]:
        """`process` over a stream of batches; when the step has a `prepare`, the next batch is prepared
        in a background thread while the current one is computed (the decoder never starves the model)."""
        if type(self).prepare is SampleStep.prepare:
            for samples in batches:
                yield samples, self._timed_process(samples)
            return

        def prepare_valid(samples: list[Sample]) -> Any:
            valid = [s for s in samples if s.reason is None]
            return self.prepare(valid) if valid else None

        with DecodePool(workers=1) as pool:
            for samples, prepared in pool.prefetch(batches, prepare_valid, depth=1):
                yield samples, self._timed_process(samples, prepared)

    def _timed_process(self, samples: list[Sample], prepared: Any = None) -> Columns:
        """`process`, its time added to the datatrove step's time stats (the step's rows/s in `stats.json`)."""
        track_time = getattr(self, "track_time", None)  # a datatrove step; plain `SampleStep`s have none
        with track_time("batch") if track_time is not None else contextlib.nullcontext():
            return self.process(samples, prepared)

    # -- the Dataset.map surface ------------------------------------------------------------------
    def map_batch(
        self, batch: Mapping[str, list[Any]], indices: list[int] | None = None, rank: int | None = None
    ) -> Any:
        """`Dataset.map(batched=True)` entry point: a batch of columns in, the batch with the step's columns out.

        The schema is `self.schema` or detected from the batch's columns. Filters combine with an
        earlier filter's `keep`/`mmsieve_reason` columns: a row stays dropped with its first reason.
        """
        if rank is not None:
            self.rank = rank
        schema = self._schema_for(batch)
        n = len(next(iter(batch.values()))) if batch else 0
        if indices is None:
            indices = [next(self._map_counter) for _ in range(n)]
        samples = rows_to_samples(batch, schema, [str(i) for i in indices])
        out = self.process(samples)
        if self.rewrites_content:  # the edited text goes back into the row's own text column(s)
            rows = samples_to_rows(samples, schema)
            for role, column in schema.columns.items():
                if role not in ("image", "images"):
                    out[column] = rows[column]
        if self.is_filter and KEEP_COLUMN in batch:
            for i, (was_kept, old_reason, old_detail) in enumerate(
                zip(batch[KEEP_COLUMN], batch.get(REASON_COLUMN, [None] * n), batch.get(DETAIL_COLUMN, [None] * n))
            ):
                if was_kept is False:
                    out[KEEP_COLUMN][i] = False
                    out[REASON_COLUMN][i] = old_reason
                    out[DETAIL_COLUMN][i] = old_detail
        return self._typed(out, batch)

    def _typed(self, columns: Columns, batch: Mapping[str, list[Any]]) -> Any:
        """The batch's own Arrow table with the step's columns appended (or replaced) as typed arrays.

        `datasets` infers a column's type from the first batch it writes, so a batch where nothing was
        dropped or scored would fix a column as `null` for the whole file. Returning the input table
        (`LazyBatch.pa_table`) plus typed columns keeps every input feature (e.g. `Image`) and gives
        ours their declared types. A plain dict batch (not from `Dataset.map`) gets plain lists back.
        """
        table = getattr(batch, "pa_table", None)
        if table is None:
            return columns
        import pyarrow as pa
        from datasets import Features, Value

        declared = {KEEP_COLUMN: Value("bool"), REASON_COLUMN: Value("string"), DETAIL_COLUMN: Value("string")}
        schema = Features({**declared, **self.output_features()}).arrow_schema
        for name, values in columns.items():
            if name in schema.names:
                array = pa.array(values, type=schema.field(name).type)
            elif name in table.column_names:  # a rewritten content column keeps its input type
                array = pa.array(values, type=table.schema.field(name).type)
            else:
                array = pa.array(values)
            if name in table.column_names:
                table = table.set_column(table.column_names.index(name), name, array)
            else:
                table = table.append_column(name, array)
        return table

    def _schema_for(self, batch: Mapping[str, list[Any]]) -> Schema:
        if self.schema is not None:
            return self.schema
        key = "\x1f".join(batch.keys())
        if key not in self._map_schemas:
            example = {k: v[0] for k, v in batch.items() if v} if batch else None
            ignored = {KEEP_COLUMN, REASON_COLUMN, DETAIL_COLUMN}
            names = [k for k in batch.keys() if k not in ignored]
            self._map_schemas[key] = detect_schema(names, example_row=example)
        return self._map_schemas[key]

    def __call__(self, data: Any = None, *args: Any, **kwargs: Any) -> Any:
        """A batch of columns (from `Dataset.map`) goes to `map_batch`; anything else is a datatrove run.

        `Dataset.map` passes `indices` (a list, with `with_indices=True`) and `rank` (an int, with
        `with_rank=True`) positionally after the batch.
        """
        if isinstance(data, Mapping):
            indices = next((a for a in args if isinstance(a, list)), None)
            rank = next((a for a in args if isinstance(a, int) and not isinstance(a, bool)), None)
            return self.map_batch(data, indices, rank)
        return self.run(data, *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_map_counter", None)
        for name in self._transient_attributes():
            state[name] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._map_counter = itertools.count()

    def _transient_attributes(self) -> tuple[str, ...]:
        """Attributes (loaded models, thread pools) that are rebuilt lazily after unpickling."""
        return ()


def _annotate(doc: Document, columns: Columns, index: int) -> None:
    for name, values in columns.items():
        if name != KEEP_COLUMN:
            doc.metadata[name] = values[index]


class SampleFilter(SampleStep, BaseFilter):
    """A datatrove `BaseFilter` whose decisions come from `process()` over a batch of samples.

    Kept documents gain the step's columns in `metadata`; dropped ones also carry `mmsieve_reason`
    and `mmsieve_detail`, are counted as `dropped_{reason}` and go to `exclusion_writer`.
    """

    is_filter = True
    type = "🔻 - FILTER"

    def __init__(self, batch_size: int = 64, schema: Schema | None = None, exclusion_writer: Any = None):
        BaseFilter.__init__(self, exclusion_writer=exclusion_writer, batch_size=batch_size)
        SampleStep.__init__(self, batch_size=batch_size, schema=schema)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        return self._verdicts(batch, self.process([document_to_sample(doc) for doc in batch]))

    def _verdicts(self, batch: list[Document], columns: Columns) -> list[bool | tuple[bool, str]]:
        results: list[bool | tuple[bool, str]] = []
        for i, doc in enumerate(batch):
            _annotate(doc, columns, i)
            if columns[KEEP_COLUMN][i]:
                doc.metadata.pop(REASON_COLUMN, None)
                doc.metadata.pop(DETAIL_COLUMN, None)
                results.append(True)
            else:
                results.append((False, columns[REASON_COLUMN][i] or "filtered"))
        return results

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        """BaseFilter's loop (stats, exclusion writer) over prefetched batches."""
        self.rank = rank
        with self.exclusion_writer if self.exclusion_writer else contextlib.nullcontext() as writer:
            for docs, _, columns in stream_columns(self, data):
                self.stat_update("batches")
                for doc, verdict in zip(docs, self._verdicts(docs, columns)):
                    self.stat_update(StatHints.total)
                    keep, reason = get_filter_result(verdict)
                    if keep:
                        self.stat_update(StatHints.forwarded)
                        self.update_doc_stats(doc)
                        yield doc
                        continue
                    self.stat_update(StatHints.dropped, f"dropped_{reason}")
                    if self.exclusion_writer:
                        doc.metadata["filter_reason"] = reason
                        writer.write(doc, rank)


def stream_columns(
    step: SampleStep, data: DocumentsPipeline
) -> Iterator[tuple[list[Document], list[Sample], Columns]]:
    """Batches of documents with their samples and columns, prepared ahead through `process_stream`."""
    pending: list[list[Document]] = []

    def sample_batches() -> Iterator[list[Sample]]:
        for docs in batched(data or (), step.batch_size):
            pending.append(docs)
            yield [document_to_sample(doc) for doc in docs]

    for samples, columns in step.process_stream(sample_batches()):
        yield pending.pop(0), samples, columns


class SampleScorer(SampleStep, PipelineStep):
    """A datatrove `PipelineStep` that adds the step's columns to every document and drops none."""

    type = "📊 - SCORER"

    def __init__(self, batch_size: int = 64, schema: Schema | None = None):
        PipelineStep.__init__(self)
        SampleStep.__init__(self, batch_size=batch_size, schema=schema)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self.rank = rank
        for docs, samples, columns in stream_columns(self, data):
            self.stat_update("batches")
            for i, doc in enumerate(docs):
                if self.rewrites_content and samples[i].reason is None:
                    refresh_document(doc, samples[i])
                _annotate(doc, columns, i)
                self.stat_update("total")
                for name, values in columns.items():
                    if isinstance(values[i], (int, float)) and not isinstance(values[i], bool):
                        self.stat_update(name, value=values[i])
                yield doc


__all__ = ["Columns", "SampleFilter", "SampleScorer", "SampleStep", "stream_columns"]
