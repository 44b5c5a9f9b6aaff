"""`run_dedup`: the three near-duplicate stages over one or more sources, as `mmsieve dedup` runs them.

Output layout (one source):

    OUTPUT/kept/  OUTPUT/removed/  OUTPUT/stats.json      as every mmsieve run (stats gain a `dedup` summary)
    OUTPUT/dedup/signatures/<dataset>/                     stage 1: per-task vector shards
    OUTPUT/dedup/clusters/<dataset>.parquet, summary.json  stage 2: clustered rows
    OUTPUT/dedup/logs/<dataset>/, logs/clusters/           datatrove task logs of stages 1 and 2

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
    NearDuplicateClusterStep,
    NearDuplicateFilter,
    NearDuplicateSignature,
)
from mmsieve.readers import SampleReader
from mmsieve.runner import prepare_output, run_pipeline


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
    resume: bool = False,
    finalize: bool = False,
    verbose: bool = False,
    progress: bool = False,
    executor: str = "local",
    gpus_per_task: int = 0,
    cpus_per_task: int = 1,
    partition: str | None = None,
    time: str | None = None,
    ray_address: str | None = None,
    env_command: str | None = None,
    logging_dir: str | Path | None = None,
    **search_options: Any,
) -> dict[str, Any] | None:
    """Remove near-duplicate images within and across `sources`; return the stats (one source) or
    `{dataset: stats}` (several), or None when Slurm jobs were submitted.

    The three stages run on `executor`: locally and on Ray one after the other; on Slurm as chained jobs
    (each stage starts when the one before succeeded), after which `finalize=True` writes the stats.

    Args:
        sources: Hub ids or local datasets; listed first = preferred on ties.
        output: the output folder (see the module docstring for the layout).
        embedder: `sscd:PATH_OR_URL_OR_ID`, `clip:ID`, `siglip:ID`, `phash` or `dhash`.
        threshold: cosine similarity for a near-duplicate (default: the embedder's; 0.95 for SSCD).
        quality_column: a score column; the best-scored sample of a cluster is kept. "auto" uses
            `unifilter_score` or `clip_score` when the source has one; None keeps the smallest id.
        kind / columns / split / config / limit / streaming: how to read the sources (as `mmsieve filter`).
        tasks / workers: datatrove tasks and tasks at once for stages 1 and 3 (stage 2 is one task).
        batch_size: samples per embedding batch.
        overwrite: replace an existing output folder; resume: keep it and skip every completed task and stage.
        finalize: run nothing; write the stats of a finished run (after the Slurm jobs).
        verbose / progress: datatrove's console log; progress bars.
        executor / gpus_per_task / cpus_per_task / partition / time / ray_address / env_command: where to run
            (`mmsieve.executors.make_executor`).
        logging_dir: where the stages' datatrove logs go (`embed-<dataset>/`, `clusters/`, `filter-<dataset>/`);
            default `OUTPUT/dedup/logs/` for stages 1-2 and each target's `datatrove/` for stage 3.
        search_options: for `mmsieve.dedup.clustering.similar_pairs` (`method`, `nprobe`, ...).

    Example:
        >>> run_dedup(["org/a", "org/b"], "out", "sscd:sscd_disc_mixup.torchscript.pt", tasks=8)  # doctest: +SKIP
    """
    from mmsieve.executors import check_executor, make_executor, run_executor
    from mmsieve.run_stats import collect_stats

    resources = {
        "gpus_per_task": gpus_per_task,
        "cpus_per_task": cpus_per_task,
        "partition": partition,
        "time": time,
        "ray_address": ray_address,
        "env_command": env_command,
    }
    check_executor(executor, tasks=tasks, **resources)
    out = Path(output) if resume or finalize else prepare_output(output, overwrite)
    work = out / "dedup"
    spec = parse_embedder(embedder)  # fails early on a bad spec; loads nothing
    threshold = spec.default_threshold if threshold is None else threshold
    names = dataset_names(sources)
    read = {"kind": kind, "columns": columns, "split": split, "config": config, "limit": limit, "streaming": streaming}
    targets = {name: out if len(sources) == 1 else out / name for name in names}
    logs = Path(logging_dir) if logging_dir else work / "logs"
    filter_logs = {name: str(logs / f"filter-{name}") if logging_dir else None for name in names}
    stage3 = {name: [NearDuplicateFilter(str(work / "clusters"), name)] for name in names}
    readers = {name: SampleReader(source, progress=progress, **read) for name, source in zip(names, sources)}
    filtered: dict[str, dict[str, Any] | None] = {}  # stage 3's stats, when this call ran it to the end
    if not finalize:
        options = {"workers": workers, "skip_completed": resume, "verbose": verbose, **resources}
        signatures, previous = {}, None
        for name, reader in readers.items():  # stage 1: every task embeds its rows
            dataset, _ = reader.open()
            quality = quality_column
            if quality == "auto":
                quality = next((c for c in QUALITY_COLUMNS if c in dataset.column_names), None)
            signatures[name] = work / "signatures" / name
            step = NearDuplicateSignature(signatures[name], embedder, quality_column=quality, batch_size=batch_size)
            stage = make_executor(
                executor,
                [reader, step],
                tasks=reader.task_count(tasks),
                logging_dir=logs / (f"embed-{name}" if logging_dir else name),
                job_name=f"dedup-embed-{name}",
                depends=previous,
                **options,
            )
            if executor == "slurm":  # queued after the previous dataset's: stage 2 waits for the last one
                previous = stage
            else:
                run_executor(stage)
        clustering = make_executor(  # stage 2: one task clusters everything
            executor,
            [NearDuplicateClusterStep(signatures, work / "clusters", threshold, **search_options)],
            tasks=1,
            logging_dir=logs / "clusters",
            job_name="dedup-cluster",
            depends=previous,
            **{**options, "workers": 1},
        )
        if executor != "slurm":
            run_executor(clustering)
        for name, reader in readers.items():  # stage 3: every task drops its rows that are not keepers
            filtered[name] = run_pipeline(
                reader,
                targets[name],
                stage3[name],
                executor=executor,
                tasks=tasks,
                workers=workers,
                resume=resume,
                overwrite=True,  # the folder was prepared above (and holds stage 1 and 2's work)
                verbose=verbose,
                job_name=f"dedup-filter-{name}",
                work_dirs=("dedup",),
                logging_dir=filter_logs[name],
                depends=clustering if executor == "slurm" else None,
                **resources,
            )
        if executor == "slurm":  # the jobs are queued: finalize=True once they have finished
            return None
    summary = json.loads((work / "clusters" / "summary.json").read_text())
    results = {}
    for name, reader in readers.items():
        stats = filtered.get(name) or collect_stats(reader, targets[name], stage3[name], logging_dir=filter_logs[name])
        stats["dedup"] = {**summary, "embedder": embedder}
        (targets[name] / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        results[name] = stats
    return results[DEFAULT_DATASET] if len(sources) == 1 else results
