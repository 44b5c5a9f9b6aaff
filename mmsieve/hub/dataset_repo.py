"""A run folder (`kept/`, `removed/`, `stats.json`) as a complete Hugging Face dataset repo folder, offline.

The layout is what `push_to_hub` writes, plus the card's figures:

    README.md                                   the dataset card (YAML `configs`, pipeline, counts, plots, citations)
    data/train-00000-of-00002.parquet           the kept rows, shards of bounded size, `Image` bytes embedded
    data/removed-00000-of-00001.parquet         with `include_removed`: the dropped rows with `mmsieve_reason`
    plots/<score column>.png                    a histogram per score column of the kept rows
    plots/mmsieve_reason.png                    removed rows by reason

Same input, same bytes: rows keep the order of the run's files, shards are cut at fixed sizes, parquet and PNG
files carry no timestamps, so re-publishing an unchanged run uploads nothing.

Example:
    >>> build_dataset_repo("curated/", "repo/", include_removed=True, license="cc-by-4.0")  # doctest: +SKIP
    PosixPath('repo')
    >>> datasets.load_dataset("repo/")  # doctest: +SKIP
    DatasetDict({train: Dataset(...), removed: Dataset(...)})
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmsieve.hub.dataset_card import REASON_PLOT, render_dataset_card
from mmsieve.hub.lineage import earlier_runs, source_license
from mmsieve.hub.plots import reason_chart, score_histograms
from mmsieve.sample import DETAIL_COLUMN, REASON_COLUMN


KEPT_SPLIT, REMOVED_SPLIT = "train", "removed"
ROW_GROUP_ROWS = 100  # rows per parquet row group when images are present (fast random access in the viewer)
SCORE_NAME = re.compile(r"(_score|_min|_similarity)$")
SAMPLE_ROWS, SAMPLE_CHARS = 3, 160
CDC_OPTIONS = {"min_chunk_size": 256 * 1024, "max_chunk_size": 1024 * 1024, "norm_level": 0}  # as `datasets`
_cdc_supported: bool | None = None

__all__ = ["KEPT_SPLIT", "REMOVED_SPLIT", "build_dataset_repo", "score_columns"]


def build_dataset_repo(
    run_dir: str | Path,
    repo_dir: str | Path,
    *,
    include_removed: bool = False,
    max_shard_bytes: int = 256 * 2**20,
    license: str | None = None,
    source_datasets: list[str] | None = None,
    pretty_name: str | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write the Hub dataset repo of a run folder into `repo_dir` and return it.

    Args:
        run_dir: an mmsieve output folder with `stats.json`, `kept/` and `removed/` parquet files.
        repo_dir: the repo folder; its `README.md`, `data/` and `plots/` are replaced, other files left alone.
        include_removed: also publish the dropped rows as the `removed` split (both splits then share one schema:
            `train` gets empty `mmsieve_reason` / `mmsieve_detail` columns). A split without rows gets no files
            (`datasets` cannot load an empty split), unless no split has rows: then `train` is one empty file.
        max_shard_bytes: upper bound of a parquet file's size (a single larger row gets a shard of its own).
        license: the card's license; by default the original source's (`mmsieve.hub.lineage.source_license`),
            else `unknown`.
        source_datasets / pretty_name / repo_id: card metadata (see `render_dataset_card`). Earlier mmsieve runs
            whose output this run read are found from `stats.json` and shown too (`earlier_runs`).

    Raises:
        FileNotFoundError: `run_dir` has no `stats.json`.
        ValueError: a kept image cannot be embedded (its file is gone).

    Example:
        >>> folder = build_dataset_repo("curated/", "repo/", max_shard_bytes=64 * 2**20)  # doctest: +SKIP
        >>> sorted(p.name for p in (folder / "data").iterdir())  # doctest: +SKIP
        ['train-00000-of-00002.parquet', 'train-00001-of-00002.parquet']
    """
    from datasets import Features

    run, repo = Path(run_dir), Path(repo_dir)
    stats = json.loads((run / "stats.json").read_text())
    earlier = earlier_runs(stats)
    for run_stats in (*earlier, stats):
        _describe_indexes(run_stats)
    license = license or stats.get("license") or source_license(str((earlier or [stats])[0].get("source") or ""))
    kept_files, removed_files = _parquet_files(run / "kept"), _parquet_files(run / "removed")
    kept_features, removed_features = _merged_features(kept_files), _merged_features(removed_files)
    if include_removed:
        features = _union(kept_features, removed_features)
    else:
        features = kept_features or _union(None, _without_reasons(removed_features))
    repo.mkdir(parents=True, exist_ok=True)
    for name in ("data", "plots", "README.md"):
        path = repo / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    sources = {KEPT_SPLIT: kept_files, **({REMOVED_SPLIT: removed_files} if include_removed else {})}
    splits = {split: {"rows": _num_rows(files), "files": 0} for split, files in sources.items()}
    # `datasets` cannot load an empty split: empty splits get no files, unless no split has rows (then `train`
    # gets one empty parquet file, so the schema is still published and streaming reads 0 rows)
    to_write = [split for split in sources if splits[split]["rows"]] or [KEPT_SPLIT]
    written: dict[str, list[Path]] = {}
    if features is not None:
        schema_features = Features(features)
        for split in to_write:
            written[split] = _write_split(
                sources[split], schema_features, repo / "data", split, max_shard_bytes, split == KEPT_SPLIT
            )
            splits[split]["files"] = len(written[split])
    kept_shards = written.get(KEPT_SPLIT, [])
    plots = score_histograms(kept_shards, score_columns(features or {}, stats), repo / "plots")
    if stats.get("removed_by_reason"):
        plots[REASON_PLOT] = reason_chart(stats["removed_by_reason"], repo / "plots" / f"{REASON_PLOT}.png")
    card = render_dataset_card(
        stats,
        columns={name: _type_name(feature) for name, feature in (features or {}).items()},
        sample_rows=_sample_rows(kept_shards, features or {}),
        plots=plots,
        license=license,
        source_datasets=source_datasets,
        pretty_name=pretty_name,
        repo_id=repo_id,
        splits=splits,
        earlier=earlier,
    )
    (repo / "README.md").write_text(card, encoding="utf-8")
    return repo


# -- reading the run ---------------------------------------------------------------------------------------------
def _parquet_files(folder: Path) -> list[Path]:
    """The folder's parquet files in name order (the order `load_dataset("parquet", data_dir=...)` reads them)."""
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def _num_rows(files: Sequence[Path]) -> int:
    return sum(pq.ParquetFile(file).metadata.num_rows for file in files)


def _merged_features(files: Sequence[Path]) -> dict[str, Any] | None:
    """The union of the files' `datasets` features, columns in first-seen order (None without files)."""
    from datasets import Features

    merged: dict[str, Any] | None = None
    for file in files:
        merged = _union(merged, dict(Features.from_arrow_schema(pq.read_schema(file))))
    return merged


def _union(first: Mapping[str, Any] | None, second: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if first is None and second is None:
        return None
    out = dict(first or {})
    for name, feature in (second or {}).items():
        out.setdefault(name, feature)
    return out


def _without_reasons(features: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if features is None:
        return None
    return {k: v for k, v in features.items() if k not in (REASON_COLUMN, DETAIL_COLUMN)}


def _describe_indexes(stats: dict[str, Any]) -> None:
    """Name the embedder and benchmarks of a decontamination index in the step's parameters, when it is readable."""
    for step in stats.get("steps") or []:
        parameters = step.get("parameters") or {}
        index = parameters.get("index")
        if step.get("step") != "DecontaminationFilter" or not isinstance(index, str):
            continue
        try:
            info = json.loads((Path(index) / "index.json").read_text())
        except (OSError, ValueError):
            continue
        parameters.setdefault("embedder", info.get("embedder"))
        parameters.setdefault("benchmarks", [b.get("name") for b in info.get("benchmarks", []) if isinstance(b, dict)])


# -- writing shards ----------------------------------------------------------------------------------------------
def _has_images(features: Mapping[str, Any]) -> bool:
    from datasets.features.features import require_storage_embed

    return any(require_storage_embed(feature) for feature in features.values())


def _batches(files: Sequence[Path], features: Any, strict: bool) -> Iterator[pa.Table]:
    """The rows of `files` in order, conformed to `features` (missing columns as nulls) with image bytes embedded."""
    from datasets.table import table_cast

    schema = features.arrow_schema
    for file in files:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=ROW_GROUP_ROWS):
            table = pa.Table.from_batches([batch])
            arrays = [
                table[name] if name in table.column_names else pa.nulls(len(table), schema.field(name).type)
                for name in schema.names
            ]
            yield _embed(table_cast(pa.table(arrays, names=schema.names), schema), features, strict)


def _embed(table: pa.Table, features: Any, strict: bool) -> pa.Table:
    """Image bytes read into the table and paths reduced to file names, as `push_to_hub` does."""
    from datasets.table import embed_table_storage

    try:
        return embed_table_storage(table)
    except (OSError, ValueError) as err:
        if strict:
            raise ValueError(f"cannot embed a kept image: {type(err).__name__}: {err}") from None
    # removed rows may point at files that are gone: keep what is there, with file names only
    return _strip_paths(table, features)


def _strip_paths(table: pa.Table, features: Any) -> pa.Table:
    from datasets import Image

    for name, feature in features.items():
        inner = getattr(feature, "feature", None)
        if not isinstance(feature, Image) and not isinstance(inner, Image):
            continue
        rows = table[name].to_pylist()
        for row in rows:
            for cell in (row or []) if isinstance(inner, Image) else [row]:
                if isinstance(cell, dict) and cell.get("path"):
                    cell["path"] = Path(cell["path"]).name
        table = table.set_column(table.column_names.index(name), name, pa.array(rows, table.schema.field(name).type))
    return table


def _parquet_bytes(table: pa.Table, features: Any) -> bytes:
    """`table` as parquet with the options `datasets` uses (images uncompressed, PLAIN; the rest snappy)."""
    global _cdc_supported
    from datasets.features.features import require_storage_embed

    compression, dictionary, encoding = {}, [], {}
    for field in table.schema:
        embed = require_storage_embed(features[field.name])
        for leaf in _leaves(field.name, field.type):
            compression[leaf] = "none" if embed else "snappy"
            encoding.update({leaf: "PLAIN"} if embed else {})
            dictionary += [] if embed else [leaf]
    options: dict[str, Any] = {
        "row_group_size": ROW_GROUP_ROWS if _has_images(features) else 10_000,
        "compression": compression,
        "use_dictionary": dictionary,
        "column_encoding": encoding,
        "write_page_index": True,
    }
    if _cdc_supported is not False:
        try:
            data = _write_parquet(table, {**options, "use_content_defined_chunking": CDC_OPTIONS})
            _cdc_supported = True
            return data
        except TypeError:  # pyarrow < 21: no content-defined chunking
            _cdc_supported = False
    return _write_parquet(table, options)


def _write_parquet(table: pa.Table, options: dict[str, Any]) -> bytes:
    """Parquet bytes of `table`; an empty table gives a file without row groups (what `datasets` reads as 0 rows)."""
    sink = pa.BufferOutputStream()
    options = dict(options)
    row_group_size = options.pop("row_group_size")
    with pq.ParquetWriter(sink, table.schema, **options) as writer:
        if table.num_rows:
            writer.write_table(table, row_group_size=row_group_size)
    return sink.getvalue().to_pybytes()


def _leaves(path: str, pa_type: pa.DataType) -> list[str]:
    if pa.types.is_struct(pa_type):
        return [leaf for field in pa_type for leaf in _leaves(f"{path}.{field.name}", field.type)]
    if pa.types.is_list(pa_type) or pa.types.is_large_list(pa_type) or pa.types.is_fixed_size_list(pa_type):
        return _leaves(f"{path}.list.element", pa_type.value_type)
    return [path]


def _row_sizes(table: pa.Table) -> np.ndarray:
    return np.array([table.slice(i, 1).nbytes for i in range(len(table))], dtype=np.int64)


def _write_split(
    files: Sequence[Path], features: Any, folder: Path, split: str, max_bytes: int, strict: bool
) -> list[Path]:
    """Cut the rows of `files` into parquet shards of at most `max_bytes` each; an empty split gets one empty file."""
    folder.mkdir(parents=True, exist_ok=True)
    empty = features.arrow_schema.empty_table()
    budget = max(1, max_bytes - len(_parquet_bytes(empty, features)))  # what the footer leaves for rows
    shards: list[bytes] = []
    pending, sizes = empty, np.zeros(0, dtype=np.int64)

    def flush(rows: int) -> None:
        nonlocal pending, sizes
        data = _parquet_bytes(pending.slice(0, rows), features)
        while len(data) > max_bytes and rows > 1:  # encoding overhead: move rows to the next shard
            rows = max(1, min(rows - 1, math.floor(rows * max_bytes / len(data))))
            data = _parquet_bytes(pending.slice(0, rows), features)
        shards.append(data)
        pending, sizes = pending.slice(rows), sizes[rows:]

    def fitting() -> int:
        return max(1, int(np.searchsorted(np.cumsum(sizes), budget, side="right")))

    for table in _batches(files, features, strict):
        pending = pa.concat_tables([pending, table])
        sizes = np.concatenate([sizes, _row_sizes(table)])
        while sizes.sum() > budget:
            flush(fitting())
    while len(sizes):
        flush(fitting())
    if not shards:
        shards.append(_parquet_bytes(empty, features))
    paths = []
    for number, data in enumerate(shards):
        path = folder / f"{split}-{number:05d}-of-{len(shards):05d}.parquet"
        path.write_bytes(data)
        paths.append(path)
    return paths


# -- plots -------------------------------------------------------------------------------------------------------
def score_columns(features: Mapping[str, Any], stats: Mapping[str, Any]) -> list[str]:
    """The numeric score columns of a run: those its steps name, or named `*_score`, `*_min`, `*_similarity`.

    Example:
        >>> from datasets import Value
        >>> score_columns({"label": Value("int64"), "clip_score": Value("float32")}, {"steps": []})
        ['clip_score']
    """
    from datasets import Value

    named: set[str] = set()
    for step in stats.get("steps") or []:
        parameters = step.get("parameters") or {}
        named.update(v for k, v in parameters.items() if k in ("column", "score_column") and isinstance(v, str))
        named.update(parameters.get("min_ratings") or {})
    numeric = ("int", "uint", "float", "double")
    return [
        name
        for name, feature in features.items()
        if isinstance(feature, Value)
        and feature.dtype.startswith(numeric)
        and name not in (REASON_COLUMN, DETAIL_COLUMN)
        and (name in named or SCORE_NAME.search(name))
    ]


# -- card inputs -------------------------------------------------------------------------------------------------
def _type_name(feature: Any) -> str:
    from datasets import Image, Value

    if isinstance(feature, Image):
        return "Image"
    if isinstance(feature, Value):
        return feature.dtype
    if isinstance(feature, dict):
        return "{" + ", ".join(f"{k}: {_type_name(v)}" for k, v in feature.items()) + "}"
    inner = getattr(feature, "feature", None)
    if inner is not None:
        return f"List({_type_name(inner)})"
    return type(feature).__name__


def _is_text(feature: Any) -> bool:
    from datasets import Value

    if isinstance(feature, Value):
        return feature.dtype in ("string", "large_string")
    if isinstance(feature, dict):
        return all(_is_text(v) for v in feature.values())
    inner = getattr(feature, "feature", None)
    return inner is not None and _is_text(inner)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return " ".join(f"{k}: {_as_text(v)}" for k, v in value.items() if v is not None)
    if isinstance(value, list):
        return " / ".join(_as_text(v) for v in value if v is not None)
    return " ".join(str(value).split())


def _sample_rows(shards: Sequence[Path], features: Mapping[str, Any]) -> list[dict[str, str]]:
    """The first kept rows' text columns, each cut to `SAMPLE_CHARS` characters."""
    # not the run's verdict columns, nor webdataset's `__key__` / `__url__` (local shard paths)
    columns = [
        n for n, f in features.items() if _is_text(f) and n not in (REASON_COLUMN, DETAIL_COLUMN) and n[:2] != "__"
    ]
    if not shards or not columns:
        return []
    first = pq.ParquetFile(shards[0])
    rows = first.read_row_group(0, columns=columns).slice(0, SAMPLE_ROWS).to_pylist() if first.num_row_groups else []
    out = []
    for row in rows:
        texts = {column: _as_text(row[column]) for column in columns}
        out.append({k: v if len(v) <= SAMPLE_CHARS else v[: SAMPLE_CHARS - 1] + "…" for k, v in texts.items()})
    filled = [column for column in columns if any(row[column] for row in out)]  # no all-empty columns
    return [{column: row[column] for column in filled} for row in out]
