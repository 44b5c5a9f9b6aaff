"""`run_dedup`: the three near-duplicate stages over one or more sources, as `mmsieve dedup` runs them.

Output layout (one source):

    OUTPUT/kept/  OUTPUT/removed/  OUTPUT/stats.json      as every mmsieve run (stats gain a `dedup` summary)
    OUTPUT/dedup/signatures/<dataset>/                     stage 1: per-task vector shards
    OUTPUT/dedup/clusters/<dataset>.parquet, summary.json  stage 2: clustered rows
    OUTPUT/dedup/logs/                                     datatrove task logs of stage 1

With several sources (deduplicated across each other), each gets `OUTPUT/<dataset>/kept|removed|stats.json`;
on ties the earlier source keeps its sample.

Example:
    >>> stats = run_dedup(["data/captions.parquet"], "out", "phash")  # doctest: +SKIP
    >>> stats["removed_by_reason"]  # doctest: +SKIP
    {'near_duplicate': 12}
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmsieve.dedup.embedders import parse_embedder
from mmsieve.dedup.near_duplicates import (
    DEFAULT_DATASET,
    NearDuplicateFilter,
    NearDuplicateSignature,
    cluster_near_duplicates,
)
from mmsieve.readers import SampleReader
from mmsieve.runner import execute, prepare_output, run_steps


QUALITY_COLUMNS = ("unifilter_score", "clip_score")  # what `--quality-column auto` looks for, in this order


def dataset_names(sources: Sequence[str]) -> list[str]:
    """One short, unique folder-safe name per source (`data` for a single source).

    Example:
        >>> dataset_names(["org/coco", "local/coco", "x/web.parquet"])
        ['coco', 'coco-2', 'web']
    """
    if len(sources) == 1:
        return [DEFAULT_DATASET]
    names: list[str] = []
    for source in sources:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(source.rstrip("/")).stem) or "data"
        name, number = base, 2
        while name in names:
            name, number = f"{base}-{number}", number + 1
        names.append(name)
    return names


def run_dedup(
    sources: Sequence[str],
    output: str | Path,
    embedder: str,
    *,
    threshold: float | None = None,
    quality_column: str | None = "auto",
    kind: str = "auto",
    columns: Mapping[str, str] | None = None,
    split: str | None = None,
    config: str | None = None,
    limit: int | None = None,
    streaming: bool = False,
    tasks: int = 1,
    workers: int = 1,
    batch_size: int = 64,
    overwrite: bool = False,
    verbose: bool = False,
    progress: bool = False,
    **search_options: Any,
) -> dict[str, Any]:
    """Remove near-duplicate images within and across `sources`; return the stats (one source) or
    `{dataset: stats}` (several).

    Args:
        sources: Hub ids or local datasets; listed first = preferred on ties.
        output: the output folder (see the module docstring for the layout).
        embedder: `sscd:PATH_OR_URL_OR_ID`, `clip:ID`, `siglip:ID`, `phash` or `dhash`.
        threshold: cosine similarity for a near-duplicate (default: the embedder's; 0.95 for SSCD).
        quality_column: a score column; the best-scored sample of a cluster is kept. "auto" uses
            `unifilter_score` or `clip_score` when the source has one; None keeps the smallest id.
        kind / columns / split / config / limit / streaming: how to read the sources (as `mmsieve filter`).
        tasks / workers: datatrove tasks and worker processes for stages 1 and 3.
        batch_size: samples per embedding batch.
        overwrite: replace an existing output folder.
        verbose / progress: datatrove's console log; progress bars.
        search_options: for `mmsieve.dedup.clustering.similar_pairs` (`method`, `nprobe`, ...).

    Example:
        >>> run_dedup(["org/a", "org/b"], "out", "sscd:sscd_disc_mixup.torchscript.pt", tasks=8)  # doctest: +SKIP
    """
    out = prepare_output(output, overwrite)
    work = out / "dedup"
    spec = parse_embedder(embedder)  # fails early on a bad spec; loads nothing
    threshold = spec.default_threshold if threshold is None else threshold
    names = dataset_names(sources)
    read = {"kind": kind, "columns": columns, "split": split, "config": config, "limit": limit, "streaming": streaming}
    signatures = {}
    for name, source in zip(names, sources):
        reader = SampleReader(source, **read)
        dataset, _ = reader.open()
        quality = quality_column
        if quality == "auto":
            quality = next((c for c in QUALITY_COLUMNS if c in dataset.column_names), None)
        signatures[name] = work / "signatures" / name
        step = NearDuplicateSignature(signatures[name], embedder, quality_column=quality, batch_size=batch_size)
        reader.progress = progress
        execute(
            [reader, step],
            work / "logs" / name,
            tasks=reader.task_count(tasks),
            workers=workers,
            verbose=verbose,
        )
    summary = cluster_near_duplicates(signatures, work / "clusters", threshold, **search_options)
    results = {}
    for name, source in zip(names, sources):
        target = out if len(sources) == 1 else out / name
        stats = run_steps(
            source,
            target,
            [NearDuplicateFilter(str(work / "clusters"), name)],
            tasks=tasks,
            workers=workers,
            progress=progress,
            verbose=verbose,
            work_dirs=("dedup",),
            **read,
        )
        stats["dedup"] = {**summary, "embedder": embedder}
        (target / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        results[name] = stats
    return results[DEFAULT_DATASET] if len(sources) == 1 else results
