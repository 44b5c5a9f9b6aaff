"""Run steps over a source on any datatrove executor and write `kept/`, `removed/` and `stats.json`.

This is what `mmsieve filter` (and `score`, `dedup`, ...) runs: a plain datatrove pipeline,
`[SampleReader, *steps, SampleWriter(kept)]`, where every filter step gets its own exclusion writer
into `removed/`. It runs on this machine, on Slurm or on Ray (`mmsieve.executors`), and can be resumed:
a rerun with `resume=True` skips the tasks that completed and redoes the others, whose output files are
named by task and replaced, so nothing is written twice. The stats of all tasks are merged into one
`stats.json` (`mmsieve.run_stats`): rows in, kept, removed by reason, the steps with their parameters,
and throughput. Rows in always equal kept + removed.

Example:
    >>> from mmsieve.filters import HygieneFilter
    >>> stats = run_steps("captions/", "out/", [HygieneFilter(min_side=64)], tasks=2, workers=2)  # doctest: +SKIP
    >>> stats["rows_in"] == stats["kept"] + stats["removed"]  # doctest: +SKIP
    True
    >>> run_steps("org/captions", "/shared/out", [HygieneFilter()], executor="slurm", tasks=64,
    ...           partition="cpu", time="02:00:00")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmsieve.readers import SampleReader
from mmsieve.run_stats import collect_stats, default_logging_dir, join_path
from mmsieve.steps import SampleStep
from mmsieve.writers import SampleWriter, output_features


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
            raise OutputExistsError(f"{out} is not empty; pass --overwrite to replace it, or --resume to continue it")
        for path in out.iterdir():
            if path.name not in work_dirs:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    return out


def _slug(step: Any) -> str:
    return re.sub(r"[^a-z0-9]+", "_", type(step).__name__.lower()).strip("_")


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
                join_path(out, "removed"),
                schema,
                output_features(dataset.features, schema, step_features, with_reason=True),
                with_reason=True,
                output_filename=f"{position:02d}_{_slug(step)}_${{rank}}.parquet",
            )
    kept = SampleWriter(
        join_path(out, "kept"), schema, output_features(dataset.features, schema, step_features, False)
    )
    return [reader, *steps, kept]


def _is_remote(path: str | Path) -> bool:
    return isinstance(path, str) and "://" in path


def _prepare(output: str | Path, logging_dir: str, overwrite: bool, resume: bool, work_dirs: Sequence[str]) -> None:
    """Refuse (or, with `overwrite`, clear) earlier results; `resume` keeps them and skips completed tasks."""
    if resume or _is_remote(output):
        return
    prepare_output(output, overwrite, work_dirs)
    logs = Path(logging_dir)
    if not _is_remote(logging_dir) and logs.is_dir() and any(logs.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{logs} holds an earlier run's logs; pass --overwrite (or --resume)")
        shutil.rmtree(logs)


def run_pipeline(
    reader: SampleReader,
    output: str | Path,
    steps: Sequence[SampleStep],
    *,
    executor: str = "local",
    tasks: int = 1,
    workers: int = 1,
    logging_dir: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    finalize: bool = False,
    verbose: bool = False,
    job_name: str = "mmsieve",
    work_dirs: Sequence[str] = (),
    depends: Any = None,
    **resources: Any,
) -> dict[str, Any] | None:
    """Run `[reader, *steps, kept writer]` on an executor; return the stats (None for a Slurm submission).

    One code path for every executor: `build_pipeline` + `make_executor` + `.run()`, then `stats.json` merged from
    every task's saved statistics (`collect_stats`), so a resumed run reports all its rows, not only the rerun
    ones. A Slurm run returns once the job array is submitted: call `collect_stats` when the jobs have finished.

    Args:
        reader: a `SampleReader` (its `limit`, `split`, `kind`, `streaming`... choose the rows).
        output: receives `kept/`, `removed/` and `stats.json` (a shared folder for slurm and ray).
        steps: mmsieve steps. A keep-fraction filter needs two passes: use `run_steps` for it.
        executor / tasks / workers / logging_dir / resources: as `mmsieve.executors.make_executor` (`resources`:
            `gpus_per_task`, `cpus_per_task`, `partition`, `time`, `ray_address`). `logging_dir` defaults to
            `OUTPUT/datatrove`.
        overwrite: replace earlier results in `output`; resume: keep them and skip the tasks already completed.
        finalize: run nothing, only write `stats.json` of a finished run (e.g. once the Slurm jobs are done).
        verbose: local: print datatrove's task logs on the console (they always go to `logging_dir/logs/`).
        work_dirs: sub-folders of `output` an earlier stage wrote (e.g. `dedup`): kept, and not "existing output".
        depends: a Slurm executor whose jobs must succeed before these start (a multi-stage run).

    Raises:
        OutputExistsError: `output` holds results and neither `overwrite` nor `resume` is set.
        ValueError: a keep-fraction step, or bad executor options.

    Example:
        >>> stats = run_pipeline(SampleReader("captions/"), "out", [HygieneFilter()], tasks=2, workers=2)  # doctest: +SKIP
        >>> stats["rows_in"] == stats["kept"] + stats["removed"]  # doctest: +SKIP
        True
    """
    from mmsieve.executors import check_executor, make_executor, run_executor

    if any(getattr(step, "needs_fit", False) for step in steps):
        raise ValueError(
            "a keep-fraction filter takes two passes: use a --threshold here, or mmsieve.runner.run_steps"
        )
    check_executor(executor, tasks=tasks, **resources)
    logs = str(logging_dir) if logging_dir else default_logging_dir(output)
    if finalize:
        return collect_stats(reader, output, steps, logging_dir=logs)
    _prepare(output, logs, overwrite, resume, work_dirs)
    pipeline = build_pipeline(reader, output, steps)
    tasks = reader.task_count(tasks)
    started = time.perf_counter()
    run_executor(
        make_executor(
            executor,
            pipeline,
            tasks=tasks,
            workers=workers,
            logging_dir=logs,
            job_name=job_name,
            skip_completed=resume,
            verbose=verbose,
            depends=depends,
            **resources,
        )
    )
    if executor == "slurm":
        return None
    return collect_stats(reader, output, steps, tasks=tasks, logging_dir=logs, seconds=time.perf_counter() - started)


def _run_two_passes(source: str, out: Path, steps: Sequence[SampleStep], **options: Any) -> dict[str, Any]:
    """A keep-fraction filter (last step): pass 1 scores everything, then the threshold is fitted on
    the scores of the whole run and pass 2 filters the scored rows; outputs and stats are merged."""
    import datasets

    *before, last = steps
    if any(getattr(step, "needs_fit", False) for step in before) or getattr(last, "scorer", None) is None:
        raise ValueError("a keep-fraction filter must be the last step and wrap its scorer")
    if options.get("executor", "local") == "slurm" or options.get("finalize"):
        raise ValueError(
            "a keep-fraction filter takes two passes, which a Slurm submission cannot wait for: use a --threshold"
        )
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
    resume: bool = False,
    finalize: bool = False,
    verbose: bool = False,
    work_dirs: Sequence[str] = (),
    **executor_options: Any,
) -> dict[str, Any] | None:
    """Run `steps` over `source` and write the results to `output`; return the merged stats.

    Args:
        source: a Hub dataset id, `hf://` files, local parquet/jsonl/webdataset shards or a `save_to_disk` folder.
        output: folder that receives `kept/`, `removed/`, `stats.json` and datatrove's `datatrove/` logs.
        steps: mmsieve steps (filters drop into `removed/`, scorers only add columns).
        kind / columns: schema detection hints (see `mmsieve.schemas.detect_schema`).
        split / config: which part of the source to read.
        limit: read only the first `limit` rows.
        streaming: stream the source instead of downloading and preparing it first (see `SampleReader`).
        tasks / workers: datatrove tasks (shards) and tasks running at once.
        progress: show a progress bar per task (rows/s and ETA).
        overwrite: replace an existing output folder instead of refusing.
        resume: keep an existing output folder and skip the tasks that completed (after a crash or a kill).
        finalize: run nothing, only write `stats.json` of a finished run (e.g. once the Slurm jobs are done).
        verbose: print datatrove's task logs on the console (they always go to `output/datatrove/logs/`).
        work_dirs: sub-folders of `output` an earlier stage wrote (e.g. `dedup`): kept, and not "existing output".
        executor_options: `executor` (`local`, `slurm`, `ray`) and its resources, as `run_pipeline`.

    Returns:
        the stats, or None when Slurm jobs were submitted (`mmsieve.run_stats.collect_stats` once they finish).

    Raises:
        mmsieve.hub.SourceError / mmsieve.schemas.SchemaError: the source cannot be read.
        OutputExistsError: `output` holds results and neither `overwrite` nor `resume` is set.
    """
    options = {
        "split": split,
        "config": config,
        "tasks": tasks,
        "workers": workers,
        "progress": progress,
        "verbose": verbose,
        "resume": resume,
        "finalize": finalize,
        **executor_options,
    }
    if any(getattr(step, "needs_fit", False) for step in steps):
        out = Path(output) if resume or finalize else prepare_output(output, overwrite, work_dirs)
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
    return run_pipeline(
        reader,
        output,
        steps,
        tasks=tasks,
        workers=workers,
        overwrite=overwrite,
        resume=resume,
        finalize=finalize,
        verbose=verbose,
        work_dirs=work_dirs,
        **executor_options,
    )
