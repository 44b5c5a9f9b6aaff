"""The datatrove executors an mmsieve pipeline runs on: this machine, a Slurm cluster, or Ray.

- `add_executor_arguments(parser)`: `--executor local|slurm|ray`, `--tasks`, `--workers`, `--gpus-per-task`,
  `--cpus-per-task`, `--partition`, `--time`, `--ray-address`, `--logging-dir` on an argparse parser, read back
  with `executor_options(args)`;
- `make_executor(kind, pipeline, ...)`: datatrove's `LocalPipelineExecutor` (as `LocalExecutor`: each worker
  exports its slot as `MMSIEVE_WORKER_SLOT`, so models load on that slot's GPU), `SlurmPipelineExecutor` or
  `RayPipelineExecutor` (one GPU per task with `gpus_per_task`);
- `run_executor(executor)`: `.run()` it (a quiet local executor keeps this process's console quiet too).

`mmsieve.runner.run_steps` runs steps over a source on any of them and writes `stats.json`.

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
import io
import os
import shlex
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from mmsieve.arguments import non_negative, positive, positive_or_unlimited


ExecutorKind = Literal["local", "slurm", "ray"]
EXECUTORS: tuple[str, ...] = ("local", "slurm", "ray")
RAY_INSTALL_HINT = 'the ray executor needs Ray: pip install "mmsieve[ray]"'
WORKER_SLOT_ENV = "MMSIEVE_WORKER_SLOT"  # a local worker's slot during a task: which GPU it uses


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
        "--env-command",
        default=None,
        metavar="CMD",
        help="slurm: shell command each job runs first (default: this Python's bin/ first on PATH)",
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
    group.add_argument(
        "--resume",
        action="store_true",
        help="after a crash or kill: keep OUTPUT, skip the tasks that completed, redo the others",
    )
    group.add_argument(
        "--finalize",
        action="store_true",
        help="run nothing: write stats.json of a finished run (after the Slurm jobs), then publish with --push-to",
    )
    return group


def executor_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of `mmsieve.runner.run_steps` / `run_pipeline` given by `add_executor_arguments`.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> _ = add_executor_arguments(parser)
        >>> executor_options(parser.parse_args(["--tasks", "8", "--resume"]))["resume"]
        True
    """
    workers = args.workers if args.workers is not None else (1 if args.executor == "local" else -1)
    return {
        "resume": args.resume,
        "finalize": args.finalize,
        "executor": args.executor,
        "tasks": args.tasks,
        "workers": workers,
        "gpus_per_task": args.gpus_per_task,
        "cpus_per_task": args.cpus_per_task,
        "partition": args.partition,
        "time": args.time,
        "ray_address": args.ray_address,
        "env_command": args.env_command,
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
    import datatrove.executor.ray as datatrove_ray
    from datatrove.executor import RayPipelineExecutor

    class InProcessRankWorker(datatrove_ray.RankWorker):
        """datatrove's Ray actor, running its ranks in the actor's own process instead of a forked pool.

        Forking a Ray worker (it has gRPC and core-worker threads) and then running torch in the child hung
        here in about one run in three (the task had completed, its result never came back). A task is one rank
        by default, so nothing ran in parallel in that pool anyway: several ranks now run one after the other.
        """

        def run_for_rank(self, executor_ref: Any, ranks: list[int], node_ips: list[str], node_idx: int) -> Any:
            import random
            import time

            from datatrove.utils.stats import PipelineStats

            os.environ["RAY_NODELIST"] = ",".join(node_ips)
            os.environ["RAY_NODEID"] = str(node_idx)
            node_rank = -1 if executor_ref.nodes_per_task == 1 else node_idx
            first = 0 if executor_ref.log_first else 1
            for rank_id, rank in enumerate(ranks, start=first):
                time.sleep(random.randint(0, executor_ref.randomize_start_duration))
                executor_ref._run_for_rank(rank, rank_id, node_rank=node_rank)
            return PipelineStats()

    class MmsieveRayExecutor(RayPipelineExecutor):
        """datatrove's Ray executor that connects to `ray_address` (or `RAY_ADDRESS`, or a local Ray) first, and
        runs each task in its actor's process (`InProcessRankWorker`)."""

        ray_address: str | None = None

        def run(self) -> Any:
            import ray

            if not ray.is_initialized():
                ray.init(address=self.ray_address, ignore_reinit_error=True)
            datatrove_ray.RankWorker, original = InProcessRankWorker, datatrove_ray.RankWorker  # what submit_task uses
            try:
                return super().run()
            finally:
                datatrove_ray.RankWorker = original

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
    env_command: str | None = None,
) -> Any:
    """A datatrove executor of `kind` for `pipeline` (nothing runs until its `.run()`).

    Args:
        kind: `local` (a process pool here), `slurm` (an sbatch job array, submitted by `.run()`) or `ray` (tasks on
            the Ray cluster at `ray_address`; needs `pip install "mmsieve[ray]"`).
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
        env_command: slurm: the shell command each job runs first (e.g. `module load cuda; source venv/bin/activate`);
            default: put this Python's `bin/` first on `PATH`, so the jobs run the mmsieve that submitted them.

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
        executor = _local_executor_class()(
            pipeline=pipeline,
            tasks=tasks,
            workers=tasks if workers == -1 else max(1, min(workers, tasks)),
            logging_dir=str(logging_dir),
            depends=depends,
            skip_completed=skip_completed,
        )
        executor.quiet = not verbose
        return executor
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
            env_command=env_command or f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH",
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


def _local_executor_class() -> type:
    from datatrove.executor import LocalPipelineExecutor

    class LocalExecutor(LocalPipelineExecutor):
        """datatrove's local executor; during a task, its worker's slot (0 .. workers-1) is in `WORKER_SLOT_ENV`,
        so `mmsieve.models.devices.pick_device` puts one worker on each GPU, and its console log is silenced when
        `quiet` (the task log files keep everything). Not `LOCAL_RANK`: transformers would take that for a
        torch.distributed launch."""

        quiet: bool = False

        def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1) -> Any:
            before = os.environ.get(WORKER_SLOT_ENV)
            os.environ[WORKER_SLOT_ENV] = str(local_rank)
            try:
                with contextlib.redirect_stderr(_Discard()) if self.quiet else contextlib.nullcontext():
                    return super()._run_for_rank(rank, local_rank, node_rank)
            finally:
                if before is None:
                    os.environ.pop(WORKER_SLOT_ENV, None)
                else:
                    os.environ[WORKER_SLOT_ENV] = before

    return LocalExecutor


class _Discard(io.TextIOBase):
    """A stderr stand-in that drops everything (never closed, so loguru handlers bound to it stay valid)."""

    def write(self, text: str) -> int:
        return len(text)


@contextlib.contextmanager
def silent_console() -> Iterator[None]:
    """Silence datatrove's console logging in this process; restore a plain stderr handler afterwards.

    Example:
        >>> with silent_console():
        ...     pass
    """
    from loguru import logger

    logger.remove()
    try:
        with contextlib.redirect_stderr(_Discard()):
            yield
    finally:
        logger.remove()
        logger.add(sys.stderr, level="WARNING")


def finalize_hint(command: Sequence[str], output: str | Path, tasks: int) -> str:
    """What to print after a Slurm submission: the same command with `--finalize`, to run when the jobs are done.

    Example:
        >>> print(finalize_hint(["mmsieve", "filter", "-i", "org/x", "-o", "out"], "out", 8))
        submitted 8 Slurm tasks writing to out; when the jobs have finished, write stats.json with:
          mmsieve filter -i org/x -o out --finalize
    """
    return (
        f"submitted {tasks} Slurm tasks writing to {output}; when the jobs have finished, write stats.json with:\n"
        f"  {shlex.join([*command, '--finalize'])}"
    )


def run_executor(executor: Any) -> None:
    """Run an executor from `make_executor`: local and Ray block until every task is done (a local executor made
    with `verbose=False` keeps this process's console quiet too); Slurm returns once the jobs are submitted.

    Example:
        >>> run_executor(make_executor("local", pipeline, tasks=4, workers=2, logging_dir="out/logs"))  # doctest: +SKIP
    """
    with silent_console() if getattr(executor, "quiet", False) else contextlib.nullcontext():
        executor.run()


__all__ = [
    "EXECUTORS",
    "RAY_INSTALL_HINT",
    "WORKER_SLOT_ENV",
    "add_executor_arguments",
    "check_executor",
    "executor_options",
    "finalize_hint",
    "make_executor",
    "parse_duration",
    "run_executor",
    "silent_console",
]
