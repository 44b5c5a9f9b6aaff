"""Run steps over a source with datatrove and write `kept/`, `removed/` and `stats.json`.

This is what `mmsieve filter` (and later `score`, `dedup`, ...) runs: a plain datatrove pipeline,
`[SampleReader, *steps, SampleWriter(kept)]`, where every filter step gets its own exclusion writer
into `removed/`. The stats of all tasks are merged into one `stats.json`: rows in, kept, removed by
reason, the steps with their parameters, and throughput. Rows in always equal kept + removed.

Example:
    >>> from mmsieve.filters import HygieneFilter
    >>> stats = run_steps("captions/", "out/", [HygieneFilter(min_side=64)], tasks=2, workers=2)  # doctest: +SKIP
    >>> stats["rows_in"] == stats["kept"] + stats["removed"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import io
import json
import platform
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from mmsieve.readers import SampleReader
from mmsieve.steps import SampleStep
from mmsieve.writers import SampleWriter, output_features


class _Discard(io.TextIOBase):
    """A stderr stand-in that drops everything (never closed, so loguru handlers bound to it stay valid)."""

    def write(self, text: str) -> int:
        return len(text)


@contextlib.contextmanager
def _silent_console() -> Any:
    """Silence datatrove's console logging in this process; restore a plain stderr handler afterwards."""
    from loguru import logger

    logger.remove()
    try:
        with contextlib.redirect_stderr(_Discard()):
            yield
    finally:
        logger.remove()
        logger.add(sys.stderr, level="WARNING")


def _quiet_executor_class() -> type:
    from datatrove.executor import LocalPipelineExecutor

    class QuietLocalExecutor(LocalPipelineExecutor):
        """datatrove's local executor with its per-task console log silenced (the task log files keep it all)."""

        def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1) -> Any:
            with contextlib.redirect_stderr(_Discard()):
                return super()._run_for_rank(rank, local_rank, node_rank)

    return QuietLocalExecutor


def execute(
    pipeline: list[Any], logging_dir: str | Path, *, tasks: int = 1, workers: int = 1, verbose: bool = False
) -> Any:
    """Run a datatrove pipeline with the local executor; its console log is silenced unless `verbose`.

    Returns datatrove's merged `PipelineStats`. Finished tasks are not skipped: a rerun recomputes.

    Example:
        >>> execute([SampleReader("data.parquet"), NearDuplicateSignature("emb", "phash")], "logs", tasks=2)  # doctest: +SKIP
    """
    from datatrove.executor import LocalPipelineExecutor

    executor_class = LocalPipelineExecutor if verbose else _quiet_executor_class()
    executor = executor_class(
        pipeline=pipeline,
        tasks=tasks,
        workers=max(1, min(workers, tasks)),
        logging_dir=str(logging_dir),
        skip_completed=False,
    )
    with contextlib.nullcontext() if verbose else _silent_console():
        return executor.run()


class OutputExistsError(FileExistsError):
    """The output folder already holds results; pass `overwrite=True` (`--overwrite`) to replace them."""


def prepare_output(output: str | Path, overwrite: bool, work_dirs: Sequence[str] = ()) -> Path:
    """The output folder, refused when it already holds results unless `overwrite` (which clears it).

    `work_dirs` (sub-folders an earlier stage of the same run wrote) are neither results nor cleared.

    Example:
        >>> prepare_output("out", overwrite=True)  # doctest: +SKIP
        PosixPath('out')
    """
    out = Path(output)
    if out.exists() and any(p.name not in work_dirs for p in out.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{out} is not empty; pass --overwrite to replace it")
        for path in out.iterdir():
            if path.name not in work_dirs:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    return out


def _slug(step: Any) -> str:
    return re.sub(r"[^a-z0-9]+", "_", type(step).__name__.lower()).strip("_")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("mmsieve", "datatrove", "datasets", "huggingface_hub", "transformers", "torch", "pillow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def _step_stats(pipeline_stats: Any, step: Any) -> dict[str, float]:
    for stats in pipeline_stats.stats:
        if stats.name == str(step):
            return {name: metric.total for name, metric in stats.stats.items()}
    return {}


def build_pipeline(reader: SampleReader, output: str | Path, steps: Sequence[SampleStep]) -> list[Any]:
    """The datatrove pipeline `[reader, *steps, kept writer]`, each filter writing its drops to `removed/`.

    Opens the source once (in this process) to resolve the schema and the output columns, so a bad
    source fails here with a clear message. The list runs unchanged under any datatrove executor.

    Example:
        >>> from datatrove.executor import SlurmPipelineExecutor  # doctest: +SKIP
        >>> pipeline = build_pipeline(SampleReader("org/captions"), "s3://bucket/out", [HygieneFilter()])  # doctest: +SKIP
        >>> SlurmPipelineExecutor(pipeline, tasks=64, time="2:00:00", partition="cpu", logging_dir="logs").run()  # doctest: +SKIP
    """
    out = output if isinstance(output, str) and "://" in output else Path(output)
    dataset, schema = reader.open()
    reader.schema = schema
    step_features: dict[str, Any] = {}
    for step in steps:
        step_features.update(step.output_features())
    for position, step in enumerate(steps):
        if step.is_filter:
            step.exclusion_writer = SampleWriter(
                _join(out, "removed"),
                schema,
                output_features(dataset.features, schema, step_features, with_reason=True),
                with_reason=True,
                output_filename=f"{position:02d}_{_slug(step)}_${{rank}}.parquet",
            )
    kept = SampleWriter(_join(out, "kept"), schema, output_features(dataset.features, schema, step_features, False))
    return [reader, *steps, kept]


def _join(base: str | Path, name: str) -> str:
    return f"{base.rstrip('/')}/{name}" if isinstance(base, str) else str(Path(base) / name)


def run_stats(
    reader: SampleReader,
    steps: Sequence[Any],
    pipeline_stats: Any,
    *,
    output: str | Path,
    tasks: int,
    seconds: float,
) -> dict[str, Any]:
    """The `stats.json` of a finished run from datatrove's merged `PipelineStats` of `[reader, *steps, writer]`.

    Rows in, kept, removed by reason, each step with its parameters (and report, e.g. the per-benchmark
    contamination table), throughput and library versions: what the CLI prints and the dataset card shows.

    Raises:
        RuntimeError: rows in != kept + removed (a step lost rows).

    Example:
        >>> stats = run_stats(reader, steps, executor.run(), output="out", tasks=4, seconds=12.5)  # doctest: +SKIP
        >>> stats["rows_in"] == stats["kept"] + stats["removed"]  # doctest: +SKIP
        True
    """
    schema = reader.schema if reader.schema is not None else reader.open()[1]
    removed: Counter[str] = Counter()
    step_reports = []
    for step in steps:
        counts = _step_stats(pipeline_stats, step)
        dropped = {k[len("dropped_") :]: int(v) for k, v in counts.items() if k.startswith("dropped_")}
        removed.update(dropped)
        parameters = step.parameters() if hasattr(step, "parameters") else {}
        extra = step.report(counts) if hasattr(step, "report") else {}  # e.g. the per-benchmark contamination table
        step_reports.append({"step": type(step).__name__, "parameters": parameters, "removed": dropped, **extra})
    rows_in = int(_step_stats(pipeline_stats, reader).get("documents", 0))
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
        "outputs": {"kept": _join(output, "kept"), "removed": _join(output, "removed")},
    }
    for report in step_reports:
        if "contamination" in report:  # the dataset card's per-benchmark table
            stats["contamination"] = report["contamination"]
    if rows_in != kept + stats["removed"]:
        raise RuntimeError(f"row accounting broke: {rows_in} in != {kept} kept + {stats['removed']} removed")
    return stats


def _run_two_passes(source: str, out: Path, steps: Sequence[SampleStep], **options: Any) -> dict[str, Any]:
    """A keep-fraction filter (last step): pass 1 scores everything, then the threshold is fitted on
    the scores of the whole run and pass 2 filters the scored rows; outputs and stats are merged."""
    import datasets

    *before, last = steps
    if any(getattr(step, "needs_fit", False) for step in before) or getattr(last, "scorer", None) is None:
        raise ValueError("a keep-fraction filter must be the last step and wrap its scorer")
    first = run_steps(source, out / "pass1", [*before, last.scorer], **options)
    scored = datasets.load_dataset("parquet", data_dir=str(out / "pass1" / "kept"), split="train")
    last.fit(scored[last.column])
    read_options = ("split", "config", "kind", "columns", "limit", "streaming")
    second_options = {k: v for k, v in options.items() if k not in read_options}
    second = run_steps(str(out / "pass1" / "kept"), out / "pass2", [last], kind=first["format"], **second_options)
    for name in ("kept", "removed"):
        (out / name).mkdir(parents=True, exist_ok=True)
        for number, stage in enumerate(("pass1", "pass2")):
            folder = out / stage / name
            for file in sorted(folder.glob("*.parquet")) if folder.exists() else []:
                if stage == "pass1" and name == "kept":
                    continue  # pass 1's kept rows are pass 2's input
                file.rename(out / name / f"pass{number + 1}_{file.name}")
    removed = Counter(first["removed_by_reason"]) + Counter(second["removed_by_reason"])
    stats = {
        **first,
        "kept": second["kept"],
        "removed": sum(removed.values()),
        "removed_by_reason": dict(sorted(removed.items(), key=lambda kv: (-kv[1], kv[0]))),
        "steps": [*first["steps"][:-1], *second["steps"]],
        "seconds": round(first["seconds"] + second["seconds"], 3),
        "outputs": {"kept": str(out / "kept"), "removed": str(out / "removed")},
    }
    stats["rows_per_second"] = round(stats["rows_in"] / stats["seconds"], 2) if stats["seconds"] else None
    for stage in ("pass1", "pass2"):
        shutil.rmtree(out / stage / "kept", ignore_errors=True)
        shutil.rmtree(out / stage / "removed", ignore_errors=True)
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def run_steps(
    source: str,
    output: str | Path,
    steps: Sequence[SampleStep],
    *,
    kind: str = "auto",
    columns: Mapping[str, str] | None = None,
    split: str | None = None,
    config: str | None = None,
    limit: int | None = None,
    streaming: bool = False,
    tasks: int = 1,
    workers: int = 1,
    progress: bool = False,
    overwrite: bool = False,
    verbose: bool = False,
    work_dirs: Sequence[str] = (),
) -> dict[str, Any]:
    """Run `steps` over `source` and write the results to `output`; return the merged stats.

    Args:
        source: a Hub dataset id, local parquet/jsonl shards or a `save_to_disk` folder.
        output: folder that receives `kept/`, `removed/`, `stats.json` and datatrove's `datatrove/` logs.
        steps: mmsieve steps (filters drop into `removed/`, scorers only add columns).
        kind / columns: schema detection hints (see `mmsieve.schemas.detect_schema`).
        split / config: which part of the source to read.
        limit: read only the first `limit` rows.
        streaming: stream the source instead of downloading and preparing it first (see `SampleReader`).
        tasks / workers: datatrove tasks (shards) and parallel worker processes.
        progress: show a progress bar per task.
        overwrite: replace an existing output folder instead of refusing.
        verbose: print datatrove's task logs on the console (they always go to `output/datatrove/logs/`).
        work_dirs: sub-folders of `output` an earlier stage wrote (e.g. `dedup`): kept, and not "existing output".

    Raises:
        mmsieve.hub.SourceError / mmsieve.schemas.SchemaError: the source cannot be read.
        OutputExistsError: `output` holds results and `overwrite` is False.
    """
    out = prepare_output(output, overwrite, work_dirs)
    options = {
        "split": split,
        "config": config,
        "tasks": tasks,
        "workers": workers,
        "progress": progress,
        "verbose": verbose,
    }
    if any(getattr(step, "needs_fit", False) for step in steps):
        return _run_two_passes(
            source, out, steps, kind=kind, columns=columns, limit=limit, streaming=streaming, **options
        )
    reader = SampleReader(
        source,
        kind=kind,
        columns=columns,
        split=split,
        config=config,
        limit=limit,
        progress=progress,
        streaming=streaming,
    )
    pipeline = build_pipeline(reader, out, steps)
    tasks = reader.task_count(tasks)
    started = time.perf_counter()
    # task logs, per-task stats, completion markers go to datatrove/
    pipeline_stats = execute(pipeline, out / "datatrove", tasks=tasks, workers=workers, verbose=verbose)
    stats = run_stats(reader, steps, pipeline_stats, output=out, tasks=tasks, seconds=time.perf_counter() - started)
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats
