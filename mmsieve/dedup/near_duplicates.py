"""Near-duplicate image removal in three stages, following datatrove's multi-stage dedup contract.

1. `NearDuplicateSignature` (every task): embeds each sample's images and appends the vectors to a
   per-task shard (`{rank:05d}.vectors.f32`, raw float32, streamed: memory stays flat) with a row table
   (`{rank:05d}.rows.parquet`: sample id, vector count, quality score, decode error).
2. `cluster_near_duplicates` (one task; `NearDuplicateClusterStep` runs it under an executor): loads all
   shards of all datasets in a fixed order, finds every pair of images at or above `threshold` with faiss,
   forms clusters of samples (union-find) and picks one keeper per cluster: the highest quality score when
   the rows carry one, else the smallest id (first dataset, then row order). Writes `{dataset}.parquet`
   (one row per clustered sample) and `summary.json`.
3. `NearDuplicateFilter` (every task): drops the non-keepers with reason `near_duplicate`, and adds
   `dup_of` (the keeper's id), `dup_cluster` and `dup_similarity` to clustered rows (None elsewhere).

Samples are keyed by their id (the source row number), so the three stages must read the same source in
the same order; the number of tasks may differ between stages. Across datasets, ids are
`<dataset>:<row>`. A sample without a decodable image is never a duplicate (hygiene drops it).

Threshold: FineVision removed pairs at SSCD cosine >= 0.95 (near-exact copies only); SSCD's own
operating point for `sscd_disc_mixup` is 0.75 (a copy at about 90% precision on DISC2021), which also
catches crops and heavy edits.

Example:
    >>> from mmsieve.dedup import deduplicate
    >>> ds = deduplicate(ds, "sscd:sscd_disc_mixup.torchscript.pt")  # doctest: +SKIP
    >>> kept = ds.filter(lambda keep: keep, input_columns="keep")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep

from mmsieve.dedup.clustering import DuplicateClusters, find_near_duplicates
from mmsieve.dedup.embedders import ImageEmbedder
from mmsieve.dedup.sample_vectors import ImageEmbeddingScorer, embed_samples
from mmsieve.reasons import NEAR_DUPLICATE
from mmsieve.sample import KEEP_COLUMN, Sample
from mmsieve.schemas import Schema
from mmsieve.steps import Columns, SampleFilter, stream_columns


DEFAULT_DATASET = "data"
ROWS_SCHEMA = {"id": "string", "n_vectors": "int32", "quality": "float64", "error": "string"}


def _quality(sample: Sample, column: str | None) -> float:
    value = sample.meta.get(column) if column else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


class NearDuplicateSignature(ImageEmbeddingScorer):
    """Stage 1: embed every sample's images into per-task shards under `output_folder` (a terminal step).

    Args:
        output_folder: where the shards go (local or any fsspec/datatrove path); one folder per dataset.
        embedder: an `ImageEmbedder` or a `parse_embedder` spec (`sscd:PATH`, `clip:ID`, `phash`, ...).
        quality_column: a score column the rows carry (e.g. `unifilter_score`); the best-scored sample of a
            cluster is kept. None: the smallest id is kept.
        batch_size: samples per batch; workers: decoding threads.

    Example:
        >>> pipeline = [SampleReader("org/captions"), NearDuplicateSignature("work/emb", "phash")]  # doctest: +SKIP
    """

    name = "🧬 near-duplicate signatures"
    type = "🫂 - DEDUP"

    def __init__(
        self,
        output_folder: Any,
        embedder: str | ImageEmbedder,
        *,
        quality_column: str | None = None,
        batch_size: int = 64,
        workers: int | None = None,
    ):
        super().__init__(embedder, batch_size=batch_size, workers=workers)
        self.output_folder = get_datafolder(str(output_folder))
        self.quality_column = quality_column

    def compute(self, samples: list[Sample], prepared: Any = None) -> Columns:
        batch = embed_samples(samples, self.embedder, self.pool, prepared)
        return {"image_embeddings": [batch.of(i) for i in range(len(samples))], "image_embedding_error": batch.errors}

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.rank = rank
        schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in ROWS_SCHEMA.items()])
        n_rows = n_vectors = 0
        with (
            self.output_folder.open(f"{rank:05d}.vectors.f32", "wb") as vectors_file,
            self.output_folder.open(f"{rank:05d}.rows.parquet", "wb") as rows_file,
            pq.ParquetWriter(rows_file, schema) as rows_writer,
        ):
            for _, samples, columns in stream_columns(self, data):
                valid = [i for i, s in enumerate(samples) if s.reason is None]
                blocks = [columns["image_embeddings"][i] for i in valid]
                for block in blocks:
                    vectors_file.write(np.ascontiguousarray(block, dtype="<f4").tobytes())
                rows = {
                    "id": [samples[i].id for i in valid],
                    "n_vectors": [len(block) for block in blocks],
                    "quality": [_quality(samples[i], self.quality_column) for i in valid],
                    "error": [columns["image_embedding_error"][i] for i in valid],
                }
                rows_writer.write_table(pa.table(rows, schema=schema))
                images = sum(rows["n_vectors"])
                n_rows += len(valid)
                n_vectors += images
                self.stat_update("samples", value=len(valid))
                self.stat_update("images", value=images)
        done = {"rows": n_rows, "vectors": n_vectors, "dim": int(self.embedder.dim), "embedder": self.embedder_name()}
        with self.output_folder.open(f"{rank:05d}.done.json", "w") as f:
            json.dump(done, f)
        return
        yield  # a terminal step: a generator that yields nothing


def _read_shards(folder: Any) -> tuple[list[np.ndarray], list[Any], int | None, str | None]:
    """(vector blocks, row tables, dim, embedder) of every task's shard in a signature folder, in rank order."""
    import pyarrow.parquet as pq

    df = get_datafolder(str(folder))
    vectors, tables, dim, embedder = [], [], None, None
    for name in sorted(f for f in df.list_files() if f.endswith(".done.json")):
        rank = name[: -len(".done.json")]
        with df.open(name) as f:
            done = json.load(f)
        if dim is not None and done["dim"] != dim:
            raise ValueError(f"{folder}: task {rank} has {done['dim']}-d vectors, others {dim}-d")
        dim, embedder = done["dim"], done["embedder"]
        with df.open(f"{rank}.vectors.f32", "rb") as f:
            block = np.frombuffer(f.read(), dtype="<f4")
        vectors.append(block.reshape(-1, dim))
        with df.open(f"{rank}.rows.parquet", "rb") as f:
            tables.append(pq.read_table(f))
    return vectors, tables, dim, embedder


def cluster_entries(clusters: DuplicateClusters, labels: Sequence[str]) -> dict[int, dict[str, Any]]:
    """Owner index -> its stage-3 columns, for every owner in a cluster of two or more.

    `dup_cluster` numbers the clusters 0, 1, ... in keeper order; `dup_of` (the keeper's label) and
    `dup_similarity` are set on the removed owners only.

    Example:
        >>> clusters = find_near_duplicates(np.eye(2, dtype=np.float32)[[0, 0, 1]], np.arange(3), 0.95)
        >>> cluster_entries(clusters, ["a", "b", "c"])[1]
        {'keep': False, 'dup_of': 'a', 'dup_cluster': 0, 'dup_similarity': 1.0}
    """
    sizes = np.bincount(clusters.cluster, minlength=len(clusters.cluster))
    number = {int(c): n for n, c in enumerate(np.flatnonzero(sizes > 1))}
    return {
        int(k): {
            KEEP_COLUMN: bool(clusters.keeper[k]),
            "dup_of": None if clusters.keeper[k] else labels[clusters.cluster[k]],
            "dup_cluster": number[int(clusters.cluster[k])],
            "dup_similarity": None if clusters.keeper[k] else float(clusters.similarity[k]),
        }
        for k in np.flatnonzero(sizes[clusters.cluster] > 1)
    }


def cluster_near_duplicates(
    signatures: Mapping[str, Any],
    output_folder: Any,
    threshold: float,
    **search_options: Any,
) -> dict[str, Any]:
    """Stage 2: cluster the samples of every signature folder; write `{dataset}.parquet` and `summary.json`.

    Args:
        signatures: dataset name -> its stage-1 folder, in priority order (the first dataset's samples are
            kept on ties, so list the dataset you trust most first).
        output_folder: where the cluster tables go (read by `NearDuplicateFilter`).
        threshold: cosine similarity at or above which two images are near-duplicates.
        search_options: passed to `mmsieve.dedup.clustering.similar_pairs` (`method`, `nprobe`, ...).

    Returns:
        the summary: samples, images, clusters, duplicates per dataset, threshold, seconds.

    Example:
        >>> cluster_near_duplicates({"data": "work/emb"}, "work/clusters", threshold=0.95)  # doctest: +SKIP
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.perf_counter()
    blocks, ids, quality, datasets_of, dims, embedders = [], [], [], [], set(), set()
    owner_counts = []
    for number, folder in enumerate(signatures.values()):
        vectors, tables, dim, embedder = _read_shards(folder)
        if dim is None:
            continue
        dims.add(dim)
        embedders.add(embedder)
        blocks.extend(vectors)
        for table in tables:
            ids.extend(table.column("id").to_pylist())
            quality.append(table.column("quality").to_numpy(zero_copy_only=False))
            owner_counts.append(table.column("n_vectors").to_numpy(zero_copy_only=False))
            datasets_of.extend([number] * table.num_rows)
    if len(dims) > 1 or len(embedders) > 1:
        raise ValueError(f"the signature folders mix embedders {sorted(embedders)}: cluster one embedder at a time")
    names = list(signatures)
    dim = dims.pop() if dims else 1
    vectors = np.concatenate(blocks) if blocks else np.zeros((0, dim), np.float32)
    counts = np.concatenate(owner_counts) if owner_counts else np.zeros(0, np.int32)
    owners = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    scores = np.concatenate(quality) if quality else np.zeros(0)
    clusters = find_near_duplicates(
        vectors,
        owners,
        threshold,
        quality=scores if np.isfinite(scores).any() else None,
        n_owners=len(counts),
        **search_options,
    )
    label = [f"{names[d]}:{i}" for d, i in zip(datasets_of, ids)] if len(names) > 1 else list(ids)
    entries = cluster_entries(clusters, label)
    out = get_datafolder(str(output_folder))
    summary: dict[str, Any] = {
        "embedder": embedders.pop() if embedders else None,
        "threshold": threshold,
        "samples": len(counts),
        "images": len(vectors),
        "clusters": sum(1 for entry in entries.values() if entry[KEEP_COLUMN]),
        "duplicates": int(clusters.n_duplicates),
        "by_dataset": {},
    }
    schema = pa.schema(
        [("id", pa.string()), (KEEP_COLUMN, pa.bool_()), ("dup_of", pa.string()), ("dup_cluster", pa.int64()),
         ("dup_similarity", pa.float64())]
    )  # fmt: skip
    datasets_arr = np.asarray(datasets_of, np.int64)
    for number, dataset in enumerate(names):
        rows = [{"id": ids[k], **entry} for k, entry in entries.items() if datasets_arr[k] == number]
        with out.open(f"{dataset}.parquet", "wb") as f:
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), f)
        removed = sum(1 for row in rows if not row[KEEP_COLUMN])
        summary["by_dataset"][dataset] = {"samples": int((datasets_arr == number).sum()), "removed": removed}
    summary["seconds"] = round(time.perf_counter() - started, 3)
    with out.open("summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    return summary


class NearDuplicateClusterStep(PipelineStep):
    """Stage 2 as a datatrove step (run it with `tasks=1`); see `cluster_near_duplicates`.

    Example:
        >>> SlurmPipelineExecutor([NearDuplicateClusterStep({"data": "emb"}, "clusters", 0.95)], tasks=1, ...)  # doctest: +SKIP
    """

    name = "🫂 near-duplicate clusters"
    type = "🫂 - DEDUP"

    def __init__(self, signatures: Mapping[str, Any], output_folder: Any, threshold: float, **search_options: Any):
        super().__init__()
        self.signatures, self.output_folder = dict(signatures), output_folder
        self.threshold, self.search_options = threshold, search_options

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if world_size != 1:
            raise ValueError("near-duplicate clustering is global: run it with tasks=1")
        summary = cluster_near_duplicates(self.signatures, self.output_folder, self.threshold, **self.search_options)
        self.stat_update("clusters", value=summary["clusters"])
        self.stat_update("duplicates", value=summary["duplicates"])
        return
        yield


class NearDuplicateFilter(SampleFilter):
    """Stage 3: drop every clustered sample but its keeper (reason `near_duplicate`).

    Args:
        clusters: stage 2's output folder, or an in-memory table {id: {"keep", "dup_of", "dup_cluster",
            "dup_similarity"}} (what `deduplicate` builds for `Dataset.map`).
        dataset: which dataset's table to use (the name given to stage 2; `data` for a single source).
        batch_size / schema / exclusion_writer: as every `SampleFilter`.

    Example:
        >>> step = NearDuplicateFilter("work/clusters")  # doctest: +SKIP
    """

    name = "🫂 near-duplicate filter"

    def __init__(
        self,
        clusters: Any,
        dataset: str = DEFAULT_DATASET,
        *,
        batch_size: int = 256,
        schema: Schema | None = None,
        exclusion_writer: Any = None,
    ):
        super().__init__(batch_size=batch_size, schema=schema, exclusion_writer=exclusion_writer)
        self.clusters, self.dataset = clusters, dataset
        self._table: dict[str, dict[str, Any]] | None = None

    @property
    def table(self) -> dict[str, dict[str, Any]]:
        if self._table is None:
            if isinstance(self.clusters, Mapping):
                self._table = dict(self.clusters)
            else:
                import pyarrow.parquet as pq

                with get_datafolder(str(self.clusters)).open(f"{self.dataset}.parquet", "rb") as f:
                    rows = pq.read_table(f).to_pylist()
                self._table = {row.pop("id"): row for row in rows}
        return self._table

    def compute(self, samples: list[Sample], prepared: Any = None) -> Columns:
        out: Columns = {name: [] for name in ("keep", "mmsieve_reason", "mmsieve_detail", *self.output_features())}
        for sample in samples:
            entry = self.table.get(sample.id) or {}
            keep = entry.get(KEEP_COLUMN, True)
            out["keep"].append(bool(keep))
            out["mmsieve_reason"].append(None if keep else NEAR_DUPLICATE)
            detail = None
            if not keep:
                detail = (
                    f"cosine {entry['dup_similarity']:.4f}: cluster {entry['dup_cluster']} keeps {entry['dup_of']}"
                )
            out["mmsieve_detail"].append(detail)
            for name in self.output_features():
                out[name].append(entry.get(name))
        return out

    def output_features(self) -> dict[str, Any]:
        from datasets import Value

        return {"dup_of": Value("string"), "dup_cluster": Value("int64"), "dup_similarity": Value("float32")}

    def parameters(self) -> dict[str, Any]:
        where = "in memory" if isinstance(self.clusters, Mapping) else str(self.clusters)
        return {"clusters": where, "dataset": self.dataset}

    def _transient_attributes(self) -> tuple[str, ...]:
        return ("_table",)


def deduplicate(
    dataset: Any,
    embedder: str | ImageEmbedder,
    *,
    threshold: float | None = None,
    quality_column: str | None = None,
    batch_size: int = 64,
    **search_options: Any,
) -> Any:
    """The `Dataset.map` surface: the dataset with `keep`, `mmsieve_reason`, `dup_of`, `dup_cluster`, `dup_similarity`.

    Embeds with `ImageEmbeddingScorer` through `Dataset.map`, clusters in memory, then marks the rows with
    `NearDuplicateFilter` through `Dataset.map` (row ids are the dataset's indices). `threshold` defaults to
    the embedder's own default (0.95 for SSCD, as FineVision).

    Example:
        >>> ds = deduplicate(ds, "phash", quality_column="unifilter_score")  # doctest: +SKIP
        >>> ds = ds.filter(lambda keep: keep, input_columns="keep")  # doctest: +SKIP
    """
    scorer = ImageEmbeddingScorer(embedder, batch_size=batch_size)
    embedded = dataset.map(scorer, batched=True, batch_size=batch_size, with_indices=True)
    per_sample = embedded["image_embeddings"]
    counts = np.asarray([len(v or []) for v in per_sample], np.int64)
    dim = scorer.embedder.dim
    vectors = np.asarray([vec for v in per_sample for vec in (v or [])], np.float32).reshape(-1, dim)
    owners = np.repeat(np.arange(len(counts)), counts)
    quality = None
    if quality_column is not None:
        quality = np.asarray([math.nan if q is None else float(q) for q in dataset[quality_column]], np.float64)
    if threshold is None:
        threshold = scorer.embedder.default_threshold
    clusters = find_near_duplicates(
        vectors, owners, threshold, quality=quality, n_owners=len(counts), **search_options
    )
    ids = [str(k) for k in range(len(counts))]
    table = {ids[k]: entry for k, entry in cluster_entries(clusters, ids).items()}
    return dataset.map(NearDuplicateFilter(table), batched=True, batch_size=256, with_indices=True)


__all__ = [
    "NearDuplicateClusterStep",
    "NearDuplicateFilter",
    "NearDuplicateSignature",
    "cluster_entries",
    "cluster_near_duplicates",
    "deduplicate",
]
