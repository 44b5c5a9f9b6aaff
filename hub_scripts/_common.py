"""What the dataset recipes in this folder share: their options, running on the chosen executor, publishing.

Not a recipe itself. A recipe builds its steps, then:

    stats = run(args, steps, argv, __file__)   # local / ray: the stats; slurm: None (the jobs are queued)
    if stats is not None:
        publish(args, stats)

`run` is one code path for every executor: `build_pipeline` + `make_executor` + `.run()`, then `stats.json`
(`mmsieve.runner.run_pipeline`). A Slurm submission returns at once, so `run` prints the command that
writes `stats.json` and publishes once the jobs have finished: the same command line plus `--finalize`.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mmsieve.arguments import positive
from mmsieve.executors import add_executor_arguments, executor_options, finalize_hint
from mmsieve.readers import SampleReader
from mmsieve.runner import run_pipeline


EXIT_USAGE = 2


def build_parser(doc: str, script: str, kind: str = "auto") -> argparse.ArgumentParser:
    """A recipe's parser (its docstring as help) with the input/output, publishing and executor options."""
    parser = argparse.ArgumentParser(
        prog=Path(script).name, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    group = parser.add_argument_group("input and output")
    group.add_argument("--input", "-i", required=True, metavar="SRC", help="Hub dataset id or local parquet/jsonl")
    group.add_argument("--output", "-o", required=True, metavar="DIR", help="receives kept/, removed/, stats.json")
    group.add_argument(
        "--kind", default=kind, help=f"schema: auto, caption, interleaved, or a format (default {kind})"
    )
    group.add_argument("--columns", default=None, metavar="ROLE=COL,...", help="e.g. image=jpg,text=alt")
    group.add_argument("--split", default=None, help="split to read (default: train, or the only split)")
    group.add_argument("--config", default=None, help="Hub dataset configuration (subset)")
    group.add_argument("--limit", type=positive, default=None, metavar="N", help="read only the first N rows")
    group.add_argument(
        "--streaming", action="store_true", help="stream the source: each task fetches only its own files"
    )
    group.add_argument("--overwrite", action="store_true", help="replace DIR if it already holds results")
    group.add_argument("--verbose", action="store_true", help="print datatrove's task logs on the console")
    publish = parser.add_argument_group("publishing")
    publish.add_argument("--push-to", default=None, metavar="REPO_ID", help="publish the result as a Hub dataset")
    publish.add_argument("--push-removed", action="store_true", help="also publish the removed split (with reasons)")
    publish.add_argument("--private", action="store_true", help="create the dataset repo private")
    publish.add_argument("--license", default=None, help="the card's license (default: the source's, else unknown)")
    publish.add_argument("--pretty-name", default=None, help="the dataset card's title")
    add_executor_arguments(parser)
    return parser


def reader(args: argparse.Namespace) -> SampleReader:
    """The `SampleReader` the input options describe."""
    from mmsieve.schemas import parse_columns

    return SampleReader(
        args.input,
        kind=args.kind,
        columns=parse_columns(args.columns) if args.columns else None,
        split=args.split,
        config=args.config,
        limit=args.limit,
        streaming=args.streaming,
    )


def run(args: argparse.Namespace, steps: Sequence[Any], argv: Sequence[str] | None, script: str) -> dict | None:
    """Run `[reader, *steps, writer]` on `--executor` (`--resume` after a kill; `--finalize` only collects stats).

    Returns the stats (also in `OUTPUT/stats.json`), or None when Slurm jobs were submitted: then the command
    that finishes the run is printed.
    """
    options = executor_options(args)
    stats = run_pipeline(
        reader(args),
        args.output,
        steps,
        **options,
        overwrite=args.overwrite,
        verbose=args.verbose,
        job_name=Path(script).stem,
    )
    if stats is None:
        argv = list(sys.argv[1:] if argv is None else argv)
        print(finalize_hint(["python", _display_path(script), *argv], args.output, options["tasks"]))
        return None
    print(f"rows in {stats['rows_in']}, kept {stats['kept']}, removed {stats['removed']}")
    for reason, count in stats["removed_by_reason"].items():
        print(f"  {reason:<24} {count}")
    print(f"stats:   {os.path.join(args.output, 'stats.json')}")
    return stats


def _display_path(script: str) -> str:
    path = Path(script).resolve()
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(path)


def publish(args: argparse.Namespace, stats: dict[str, Any]) -> dict[str, Any] | None:
    """`--push-to`: publish `OUTPUT` (kept split, removed split with `--push-removed`, card, plots)."""
    from mmsieve.hub.commands import push_after_run, push_summary

    report = push_after_run(args, args.output)
    if report is not None:
        print(push_summary(report))
    return report


def guarded(main: Callable[..., int]) -> Callable[..., int]:
    """Turn the errors a user can fix (a bad source, argument, index or token) into one line and exit code 2."""

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        from mmsieve.hub.publish import PublishError
        from mmsieve.hub.sources import SourceError
        from mmsieve.run_stats import RunNotFinishedError
        from mmsieve.schemas import SchemaError

        fixable = (SourceError, SchemaError, PublishError, RunNotFinishedError, OSError, ValueError, ImportError)
        try:
            return main(argv)
        except fixable as err:  # ImportError: e.g. the ray executor without ray installed
            print(f"{Path(main.__code__.co_filename).name}: error: {err}", file=sys.stderr)
            return EXIT_USAGE

    return wrapper
