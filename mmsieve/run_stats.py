"""A run's `stats.json`: rows in, kept, removed by reason, every step's parameters and throughput, versions.

datatrove saves each task's statistics in `LOGGING_DIR/stats/NNNNN.json` when the task completes. A run's
`stats.json` is built from all of them, whichever process, machine or executor ran the task and however many
times the run was resumed: `collect_stats` merges the saved files, `run_stats` turns the merged statistics into
the report the CLI prints and the dataset card shows.

Example:
    >>> stats = collect_stats(SampleReader("org/captions"), "/shared/out", [HygieneFilter()])  # doctest: +SKIP
    >>> stats["rows_in"] == stats["kept"] + stats["removed"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import platform
from collections import Counter
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any


__all__ = ["RunNotFinishedError", "collect_stats", "default_logging_dir", "join_path", "run_stats"]


class RunNotFinishedError(RuntimeError):
    """Some tasks of the run have not written their stats yet (still queued or running, or failed)."""


def join_path(base: str | Path, name: str) -> str:
    """`base/name` for local paths and URLs alike (`s3://bucket/out` + `kept`).

    Example:
        >>> join_path("s3://bucket/out/", "kept"), join_path(Path("out"), "kept")
        ('s3://bucket/out/kept', 'out/kept')
    """
    return f"{str(base).rstrip('/')}/{name}"


def default_logging_dir(output: str | Path) -> str:
    """Where datatrove's logs, task stats and completion markers go unless told: `OUTPUT/datatrove`.

    Example:
        >>> default_logging_dir("s3://bucket/out/")
        's3://bucket/out/datatrove'
    """
    return join_path(output, "datatrove")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("mmsieve", "datatrove", "datasets", "huggingface_hub", "transformers", "torch", "pillow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def _step_stats(pipeline_stats: Any, step: Any) -> Any:
    """The merged `Stats` of `step` (matched by name), or None."""
    return next((stats for stats in pipeline_stats.stats if stats.name == str(step)), None)


def _counts(stats: Any) -> dict[str, float]:
    return {name: metric.total for name, metric in stats.stats.items()} if stats is not None else {}


def _throughput(stats: Any, rows: float) -> dict[str, Any]:
    """The time a step spent on its batches, summed over tasks, and the rows per second that gives."""
    seconds = float(stats.time_stats.total) if stats is not None else 0.0
    return {"seconds": round(seconds, 3), "rows_per_second": round(rows / seconds, 1) if seconds > 0 else None}


def run_stats(
    reader: Any,
    steps: Sequence[Any],
    pipeline_stats: Any,
    *,
    output: str | Path,
    tasks: int,
    seconds: float,
) -> dict[str, Any]:
    """The `stats.json` of a finished run from datatrove's merged `PipelineStats` of `[reader, *steps, writer]`.

    Rows in, kept, removed by reason, each step with its parameters, removals, time and rows per second (and its
    report, e.g. the per-benchmark contamination table), the run's throughput and library versions.

    Raises:
        RuntimeError: rows in != kept + removed (a step lost rows).

    Example:
        >>> stats = run_stats(reader, steps, merged_stats, output="out", tasks=4, seconds=12.5)  # doctest: +SKIP
        >>> stats["steps"][0]["rows_per_second"]  # doctest: +SKIP
        812.4
    """
    schema = reader.schema if reader.schema is not None else reader.open()[1]
    removed: Counter[str] = Counter()
    step_reports = []
    for step in steps:
        step_stats = _step_stats(pipeline_stats, step)
        counts = _counts(step_stats)
        dropped = {k[len("dropped_") :]: int(v) for k, v in counts.items() if k.startswith("dropped_")}
        removed.update(dropped)
        parameters = step.parameters() if hasattr(step, "parameters") else {}
        extra = step.report(counts) if hasattr(step, "report") else {}  # e.g. the per-benchmark contamination table
        report = {"step": type(step).__name__, "parameters": parameters, "removed": dropped}
        step_reports.append({**report, **_throughput(step_stats, counts.get("total", 0)), **extra})
    rows_in = int(_counts(_step_stats(pipeline_stats, reader)).get("documents", 0))
    kept_writer = pipeline_stats.stats[-1].stats  # the pipeline's last step is the kept writer
    kept = int(kept_writer["total"].total) if "total" in kept_writer else 0
    stats = {
        "source": reader.source,
        "split": reader.split,
        "config": reader.config,
        **({"streaming": True} if reader.streaming else {}),
        "kind": schema.kind,
        "format": schema.format,
        "columns": dict(schema.columns),
        "rows_in": rows_in,
        "kept": kept,
        "removed": sum(removed.values()),
        "removed_by_reason": dict(sorted(removed.items(), key=lambda kv: (-kv[1], kv[0]))),
        "steps": step_reports,
        "tasks": tasks,
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows_in / seconds, 2) if seconds > 0 else None,
        "versions": _versions(),
        "outputs": {"kept": join_path(output, "kept"), "removed": join_path(output, "removed")},
    }
    for report in step_reports:
        if "contamination" in report:  # the dataset card's per-benchmark table
            stats["contamination"] = report["contamination"]
    if rows_in != kept + stats["removed"]:
        raise RuntimeError(f"row accounting broke: {rows_in} in != {kept} kept + {stats['removed']} removed")
    return stats


def task_stats(logging_dir: str | Path, tasks: int | None = None) -> tuple[Any, int, float]:
    """Every task's saved statistics merged, the number of tasks, and the longest task's time.

    Raises:
        RunNotFinishedError: a task has no saved statistics (queued, running, failed or killed).

    Example:
        >>> merged, tasks, longest = task_stats("out/datatrove")  # doctest: +SKIP
    """
    from datatrove.io import get_datafolder
    from datatrove.utils.stats import PipelineStats

    folder = get_datafolder(str(logging_dir))
    files = sorted(f for f in folder.list_files("stats") if f.endswith(".json")) if folder.isdir("stats") else []
    if tasks is None:
        tasks = _planned_tasks(folder) or len(files)
    wanted = {f"stats/{rank:05d}.json" for rank in range(tasks)}
    missing = sorted(wanted - set(files))
    if not tasks or missing:
        raise RunNotFinishedError(
            f"{len(missing) or 'no'} of {tasks or '?'} tasks have not finished "
            f"(no stats in {join_path(logging_dir, 'stats')}): wait for the jobs, or rerun with --resume"
        )
    merged, longest = PipelineStats(), 0.0
    for name in sorted(wanted):
        with folder.open(name, "r") as f:
            stats = _pipeline_stats(json.load(f))
        longest = max(longest, stats.total_time)
        merged += stats
    return merged, tasks, longest


def _pipeline_stats(data: list[dict[str, Any]]) -> Any:
    """One task's saved `PipelineStats`, metrics included (datatrove's `from_json` leaves them as plain numbers)."""
    from datatrove.utils.stats import MetricStatsDict, PipelineStats, Stats, TimingStats

    steps = []
    for entry in data:
        step = Stats(entry["name"])
        step.time_stats = TimingStats.from_dict(entry["time_stats"])
        step.stats = MetricStatsDict.from_dict(entry["stats"])
        steps.append(step)
    return PipelineStats(steps)


def _planned_tasks(folder: Any) -> int | None:
    """The task count the executor recorded in `executor.json`."""
    if not folder.isfile("executor.json"):
        return None
    with folder.open("executor.json", "r") as f:
        return int(json.load(f).get("tasks") or 0) or None


def collect_stats(
    reader: Any,
    output: str | Path,
    steps: Sequence[Any],
    *,
    tasks: int | None = None,
    logging_dir: str | Path | None = None,
    seconds: float | None = None,
) -> dict[str, Any]:
    """Merge the task statistics datatrove saved in `logging_dir/stats/` into `output/stats.json`; return it.

    `reader` and `steps` are the ones the pipeline was built with (or equal ones: steps are matched by name).
    `seconds` defaults to the longest task's time (the wall time of a run whose tasks all ran at once).

    Raises:
        RunNotFinishedError: some tasks have not finished (their stats are missing).
        RuntimeError: the row accounting does not add up.

    Example:
        >>> # after `sbatch` ran the pipeline that run_pipeline(..., executor="slurm") submitted:
        >>> stats = collect_stats(SampleReader("org/captions"), "/shared/out", [HygieneFilter()])  # doctest: +SKIP
    """
    from datatrove.io import get_datafolder

    logs = str(logging_dir) if logging_dir else default_logging_dir(output)
    merged, tasks, longest = task_stats(logs, tasks)
    stats = run_stats(
        reader, steps, merged, output=output, tasks=tasks, seconds=longest if seconds is None else seconds
    )
    with get_datafolder(str(output)).open("stats.json", "w") as f:
        f.write(json.dumps(stats, indent=2) + "\n")
    return stats
