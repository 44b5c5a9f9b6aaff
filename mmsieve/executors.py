"""Run an mmsieve pipeline on any datatrove executor: on this machine, on a Slurm cluster, or on Ray.

`mmsieve.runner.run_steps` runs locally. For a bigger job, build the same pipeline with
`mmsieve.runner.build_pipeline` and hand it to the executor of your cluster:

- `add_executor_arguments(parser)`: `--executor local|slurm|ray`, `--tasks`, `--workers`, `--gpus-per-task`,
  `--partition`, `--time`, `--ray-address`, `--logging-dir` (and `--cpus-per-task`) on an argparse parser;
- `make_executor(kind, pipeline, ...)`: datatrove's `LocalPipelineExecutor`, `SlurmPipelineExecutor` or
  `RayPipelineExecutor` for the pipeline;
- `run_pipeline(reader, output, steps, executor=...)`: both of the above, then `stats.json` as `run_steps` writes
  it (local and Ray block until the run is done; a Slurm submission returns at once);
- `collect_stats(reader, output, steps)`: `stats.json` from the task statistics datatrove saved, e.g. once the
  Slurm jobs have finished.

Example:
    >>> from mmsieve.filters import HygieneFilter  # doctest: +SKIP
    >>> from mmsieve.readers import SampleReader  # doctest: +SKIP
    >>> from mmsieve.runner import build_pipeline  # doctest: +SKIP
    >>> pipeline = build_pipeline(SampleReader("org/captions"), "/shared/out", [HygieneFilter()])  # doctest: +SKIP
    >>> make_executor("slurm", pipeline, tasks=64, workers=-1, logging_dir="/shared/out/datatrove",
    ...               partition="cpu", time="02:00:00").run()  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import time as _time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from mmsieve.arguments import non_negative, positive, positive_or_unlimited


ExecutorKind = Literal["local", "slurm", "ray"]
EXECUTORS: tuple[str, ...] = ("local", "slurm", "ray")
RAY_INSTALL_HINT = 'the ray executor needs Ray: pip install "datatrove[ray]"'


def add_executor_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add the "where to run" options to `parser` (read them back with `executor_options(args)`).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> _ = add_executor_arguments(parser)
        >>> args = parser.parse_args(["--executor", "slurm", "--partition", "gpu", "--time", "4:00:00"])
        >>> executor_options(args)["partition"], executor_options(args)["workers"]
        ('gpu', -1)
    """
    group = parser.add_argument_group("execution (a datatrove executor)")
    group.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local (default): worker processes here; slurm: an sbatch job array; ray: a Ray cluster",
    )
    group.add_argument("--tasks", type=positive, default=1, metavar="N", help="datatrove tasks (shards); default 1")
    group.add_argument(
        "--workers",
        type=positive_or_unlimited,
        default=None,
        metavar="N",
        help="tasks running at once (default: 1 locally, no limit (-1) on slurm and ray)",
    )
    group.add_argument("--gpus-per-task", type=non_negative, default=0, metavar="N", help="GPUs per task (slurm/ray)")
    group.add_argument("--cpus-per-task", type=positive, default=1, metavar="N", help="CPUs per task (slurm/ray)")
    group.add_argument("--partition", default=None, help="slurm: the partition (required with --executor slurm)")
    group.add_argument(
        "--time",
        default=None,
        metavar="[D-]HH:MM:SS",
        help="slurm: the job's time limit (required with --executor slurm); ray: a per-task time limit",
    )
    group.add_argument(
        "--ray-address", default=None, metavar="ADDR", help="ray: cluster address (default: RAY_ADDRESS)"
    )
    group.add_argument(
        "--logging-dir",
        default=None,
        metavar="DIR",
        help="datatrove's logs, per-task stats and completion markers (default: OUTPUT/datatrove)",
    )
    return group


def executor_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of `make_executor` / `run_pipeline` given by `add_executor_arguments`' options."""
    workers = args.workers if args.workers is not None else (1 if args.executor == "local" else -1)
    return {
        "executor": args.executor,
        "tasks": args.tasks,
        "workers": workers,
        "gpus_per_task": args.gpus_per_task,
        "cpus_per_task": args.cpus_per_task,
        "partition": args.partition,
        "time": args.time,
        "ray_address": args.ray_address,
        "logging_dir": args.logging_dir,
    }


def parse_duration(value: str) -> int:
    """Seconds in a Slurm-style duration: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM` or `D-HH:MM:SS`.

    Example:
        >>> parse_duration("1-02:00:00"), parse_duration("90"), parse_duration("1:30:00")
        (93600, 5400, 5400)
    """
    days, _, rest = value.strip().rpartition("-")
    try:
        parts = [int(p) for p in rest.split(":")]
        day_seconds = int(days) * 86_400 if days else 0
    except ValueError:
        raise ValueError(f"not a duration: {value!r} (expected [D-]HH:MM:SS)") from None
    if days:  # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 1:  # minutes
        hours, minutes, seconds = 0, parts[0], 0
    elif len(parts) == 2:  # minutes:seconds
        hours, minutes, seconds = 0, *parts
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:
        raise ValueError(f"not a duration: {value!r} (expected [D-]HH:MM:SS)")
    return day_seconds + hours * 3600 + minutes * 60 + seconds


def _ray_executor_class() -> type:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ImportError(RAY_INSTALL_HINT) from None
    from datatrove.executor import RayPipelineExecutor

    class MmsieveRayExecutor(RayPipelineExecutor):
        """datatrove's Ray executor that connects to `ray_address` (or `RAY_ADDRESS`, or a local Ray) first."""

        ray_address: str | None = None

        def run(self) -> Any:
            import ray

            if not ray.is_initialized():
                ray.init(address=self.ray_address, ignore_reinit_error=True)
            return super().run()

    return MmsieveRayExecutor


def make_executor(
    kind: ExecutorKind | str,
    pipeline: list[Any],
    *,
    tasks: int,
    workers: int,
    logging_dir: str | Path,
    gpus_per_task: int = 0,
    partition: str | None = None,
    time: str | None = None,
    ray_address: str | None = None,
    job_name: str = "mmsieve",
    depends: Any = None,
    cpus_per_task: int = 1,
    skip_completed: bool = True,
    verbose: bool = True,
) -> Any:
    """A datatrove executor of `kind` for `pipeline` (nothing runs until its `.run()`).

    Args:
        kind: `local` (a process pool here), `slurm` (an sbatch job array, submitted by `.run()`) or `ray` (tasks on
            the Ray cluster at `ray_address`; needs `pip install "datatrove[ray]"`).
        pipeline: the step list, e.g. from `mmsieve.runner.build_pipeline`.
        tasks: datatrove tasks: each reads one contiguous shard of the rows.
        workers: tasks running at once; -1 for no limit (local: capped at `tasks`).
        logging_dir: logs, per-task stats and completion markers (a shared folder for slurm and ray).
        gpus_per_task / cpus_per_task: resources of one task (slurm and ray).
        partition / time: slurm's partition and time limit (`HH:MM:SS`); both required for slurm. With ray, `time`
            is a per-task time limit.
        ray_address: the Ray cluster to connect to (default: `RAY_ADDRESS`, else a local Ray).
        job_name: the slurm job name.
        depends: an executor of the same kind to run first (slurm: a job dependency).
        skip_completed: skip tasks that a previous run in `logging_dir` completed (resume).
        verbose: local only: False silences the per-task console logs (the log files keep everything).

    A Slurm executor's `.run()` pickles the pipeline to `logging_dir/executor.pik`, writes the job array's script
    to `logging_dir/launch_script.slurm`, submits it with `sbatch` (plus a `merge_stats` job) and returns. To see
    the `#SBATCH` directives without submitting: `executor.get_sbatch_args()`.

    Raises:
        ValueError: an unknown kind, or slurm without `partition` / `time`.
        ImportError: ray is not installed (the message says how to install it).

    Example:
        >>> executor = make_executor("local", [], tasks=4, workers=2, logging_dir="out/datatrove")  # doctest: +SKIP
        >>> type(executor).__name__, executor.workers  # doctest: +SKIP
        ('LocalPipelineExecutor', 2)
        >>> make_executor("slurm", pipeline, tasks=64, workers=-1, logging_dir="/shared/logs",
        ...               partition="gpu", time="04:00:00", gpus_per_task=1).run()  # doctest: +SKIP
    """
    check_executor(kind, tasks=tasks, partition=partition, time=time)
    if kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        if verbose:
            local_class: type = LocalPipelineExecutor
        else:
            from mmsieve.runner import _quiet_executor_class

            local_class = _quiet_executor_class()
        return local_class(
            pipeline=pipeline,
            tasks=tasks,
            workers=tasks if workers == -1 else max(1, min(workers, tasks)),
            logging_dir=str(logging_dir),
            depends=depends,
            skip_completed=skip_completed,
        )
    if kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        return SlurmPipelineExecutor(
            pipeline=pipeline,
            tasks=tasks,
            time=str(time),
            partition=str(partition),
            cpus_per_task=cpus_per_task,
            gpus_per_task=gpus_per_task,
            workers=workers,
            job_name=job_name,
            logging_dir=str(logging_dir),
            depends=depends,
            skip_completed=skip_completed,
        )
    if kind == "ray":
        executor = _ray_executor_class()(
            pipeline=pipeline,
            tasks=tasks,
            workers=workers,
            depends=depends,
            skip_completed=skip_completed,
            logging_dir=str(logging_dir),
            cpus_per_task=cpus_per_task,
            gpus_per_task=gpus_per_task,
            time=parse_duration(time) if time else None,
        )
        executor.ray_address = ray_address
        return executor
    raise AssertionError(kind)  # unreachable: check_executor accepted it


def check_executor(
    kind: str, *, tasks: int = 1, partition: str | None = None, time: str | None = None, **_: Any
) -> None:
    """Raise the error `make_executor` would raise for these options, before any work (or import) is done.

    Example:
        >>> check_executor("slurm", partition="gpu")
        Traceback (most recent call last):
        ...
        ValueError: --executor slurm needs --time
    """
    if kind not in EXECUTORS:
        raise ValueError(f"unknown executor {kind!r}: expected one of {', '.join(EXECUTORS)}")
    if tasks < 1:
        raise ValueError(f"tasks must be >= 1, got {tasks}")
    if kind == "slurm":
        missing = [name for name, value in (("--partition", partition), ("--time", time)) if not value]
        if missing:
            raise ValueError(f"--executor slurm needs {' and '.join(missing)}")
    if kind == "ray":
        if time:
            parse_duration(time)
        _ray_executor_class()


class RunNotFinishedError(RuntimeError):
    """Some tasks of the run have not written their stats yet (still queued or running, or failed)."""


def _is_remote(path: str | Path) -> bool:
    return isinstance(path, str) and "://" in path


def _join(base: str | Path, name: str) -> str:
    return f"{str(base).rstrip('/')}/{name}"


def default_logging_dir(output: str | Path) -> str:
    """Where datatrove's logs go unless told: `OUTPUT/datatrove`, as `run_steps` does.

    Example:
        >>> default_logging_dir("s3://bucket/out/")
        's3://bucket/out/datatrove'
    """
    return _join(output, "datatrove")


def _prepare(output: str | Path, logging_dir: str, overwrite: bool, resume: bool) -> None:
    """Refuse (or, with `overwrite`, clear) earlier results; `resume` keeps them and skips completed tasks."""
    from mmsieve.runner import OutputExistsError, prepare_output

    if resume or _is_remote(output):
        return
    prepare_output(output, overwrite)
    logs = Path(logging_dir)
    if not _is_remote(logging_dir) and logs.is_dir() and any(logs.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{logs} holds an earlier run's logs; pass --overwrite (or --resume)")
        shutil.rmtree(logs)


def run_pipeline(
    reader: Any,
    output: str | Path,
    steps: Sequence[Any],
    *,
    executor: ExecutorKind | str = "local",
    tasks: int = 1,
    workers: int = 1,
    logging_dir: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    verbose: bool = False,
    job_name: str = "mmsieve",
    **resources: Any,
) -> dict[str, Any] | None:
    """Run `[reader, *steps, kept writer]` on an executor; return the stats (None for a Slurm submission).

    The same code path for every executor: `build_pipeline` + `make_executor` + `.run()`. Local and Ray runs
    block until every task is done, then `stats.json` is written exactly as `run_steps` writes it. A Slurm run
    returns once the job array is submitted: call `collect_stats` when the jobs have finished.

    Args:
        reader: a `SampleReader` (its `limit`, `split`, `kind`... choose the rows).
        output: receives `kept/`, `removed/` and `stats.json` (a shared folder for slurm and ray).
        steps: mmsieve steps. A keep-fraction filter needs two passes: use `run_steps` for it.
        executor / tasks / workers / logging_dir / resources: as `make_executor` (`resources`: `gpus_per_task`,
            `cpus_per_task`, `partition`, `time`, `ray_address`).
        overwrite: replace earlier results in `output`; resume: keep them and skip the tasks already completed.
        verbose: local: print datatrove's task logs on the console.

    Example:
        >>> stats = run_pipeline(SampleReader("captions/"), "out", [HygieneFilter()], tasks=2, workers=2)  # doctest: +SKIP
        >>> stats["rows_in"] == stats["kept"] + stats["removed"]  # doctest: +SKIP
        True
    """
    from mmsieve.runner import _silent_console, build_pipeline

    if any(getattr(step, "needs_fit", False) for step in steps):
        raise ValueError(
            "a keep-fraction filter takes two passes: use a --threshold here, or mmsieve.runner.run_steps"
        )
    check_executor(executor, tasks=tasks, **resources)
    logs = str(logging_dir) if logging_dir else default_logging_dir(output)
    _prepare(output, logs, overwrite, resume)
    pipeline = build_pipeline(reader, output, steps)
    tasks = reader.task_count(tasks)
    runner = make_executor(
        executor,
        pipeline,
        tasks=tasks,
        workers=workers,
        logging_dir=logs,
        job_name=job_name,
        skip_completed=resume,
        verbose=verbose,
        **resources,
    )
    started = _time.perf_counter()
    with _silent_console() if executor == "local" and not verbose else contextlib.nullcontext():
        runner.run()
    if executor == "slurm":
        return None
    return collect_stats(reader, output, steps, tasks=tasks, logging_dir=logs, seconds=_time.perf_counter() - started)


def _task_stats(logging_dir: str, tasks: int | None) -> tuple[Any, int, float]:
    """datatrove's per-task stats merged, the number of tasks, and the longest task's time."""
    from datatrove.io import get_datafolder
    from datatrove.utils.stats import PipelineStats

    folder = get_datafolder(logging_dir)
    files = sorted(f for f in folder.list_files("stats") if f.endswith(".json")) if folder.isdir("stats") else []
    if tasks is None:
        tasks = _planned_tasks(folder) or len(files)
    wanted = {f"stats/{rank:05d}.json" for rank in range(tasks)}
    missing = sorted(wanted - set(files))
    if not tasks or missing:
        raise RunNotFinishedError(
            f"{len(missing) or 'no'} of {tasks or '?'} tasks have not finished (no stats in {_join(logging_dir, 'stats')}): "
            "wait for the jobs, or rerun the failed ones with --resume"
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

    The file is the one `run_steps` writes (rows in, kept, removed by reason, each step with its parameters,
    throughput, versions), so `push_dataset` and the dataset card read it the same way. `reader` and `steps` are
    the ones the pipeline was built with (or equal ones: steps are matched by name). `seconds` defaults to the
    longest task's time (the wall time of a run whose tasks all ran at once).

    Raises:
        RunNotFinishedError: some tasks have not finished (their stats are missing).
        RuntimeError: the row accounting does not add up.

    Example:
        >>> # after `sbatch` ran the pipeline that run_pipeline(..., executor="slurm") submitted:
        >>> stats = collect_stats(SampleReader("org/captions"), "/shared/out", [HygieneFilter()])  # doctest: +SKIP
    """
    from datatrove.io import get_datafolder

    from mmsieve.runner import run_stats

    logs = str(logging_dir) if logging_dir else default_logging_dir(output)
    pipeline_stats, tasks, longest = _task_stats(logs, tasks)
    stats = run_stats(
        reader, steps, pipeline_stats, output=output, tasks=tasks, seconds=seconds if seconds is not None else longest
    )
    with get_datafolder(str(output)).open("stats.json", "w") as f:
        f.write(json.dumps(stats, indent=2) + "\n")
    return stats


__all__ = [
    "EXECUTORS",
    "RAY_INSTALL_HINT",
    "RunNotFinishedError",
    "add_executor_arguments",
    "check_executor",
    "collect_stats",
    "default_logging_dir",
    "executor_options",
    "make_executor",
    "parse_duration",
    "run_pipeline",
]
