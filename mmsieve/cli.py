"""The `mmsieve` command.

    mmsieve filter --input SRC --output DIR [--kind auto|caption|interleaved|conversation]
                   [--columns image=COL,text=COL] [--split NAME] [--limit N] [--streaming] [--tasks N] [--workers N]
                   [--executor local|slurm|ray] [--gpus-per-task N] [--partition P --time T] [--resume]
    mmsieve score --model ID_OR_PATH --input SRC --output DIR [--threshold X | --keep-fraction F] [--scorer clip]
    mmsieve synth --output DIR [--source easyvqa|SRC] [--generator contrastive|teacher]
    mmsieve train --data DIR --init CHECKPOINT --output DIR
    mmsieve eval --model CHECKPOINT --data DIR
    mmsieve dedup --input SRC [--input SRC2] --output DIR --embedder sscd:PATH|clip:ID|phash
    mmsieve build-index --output INDEX --embedder SPEC [--benchmarks YAML]
    mmsieve decontaminate --input SRC --output DIR --index INDEX_DIR_OR_ID
    mmsieve rewrite --input SRC --output DIR --model ID_OR_PATH [--endpoint URL] --threshold X [--adaptive]
    mmsieve judge --input SRC --output DIR --model ID_OR_PATH [--endpoint URL] [--method finevision|mlm_filter]
    mmsieve push-dataset DIR --repo ID [--include-removed] [--private]
    mmsieve push-model DIR --repo ID [--private]
    mmsieve demo [--output DIR] [--push-to ID]

Every processing command takes --push-to ID (publish the result with its card) and --private, and runs on
--executor local (default), slurm or ray; --resume continues a killed run, --finalize completes a Slurm one.

A bad argument or an unreadable input prints one line on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from mmsieve.arguments import fraction, positive


EXIT_USAGE = 2


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one clear line instead of usage + error
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _add_source_arguments(parser: argparse.ArgumentParser, multiple_inputs: bool = False) -> None:
    group = parser.add_argument_group("input and output")
    group.add_argument(
        "--input",
        "-i",
        required=True,
        metavar="SRC",
        action="append" if multiple_inputs else "store",
        help="Hub dataset id, local parquet/jsonl folder or file, or a save_to_disk folder"
        + (" (repeat to combine datasets)" if multiple_inputs else ""),
    )
    group.add_argument("--output", "-o", required=True, metavar="DIR", help="receives kept/, removed/ and stats.json")
    group.add_argument(
        "--kind",
        default="auto",
        help="auto (default), caption, interleaved, conversation, or a format: caption, obelics, finevision, llava",
    )
    group.add_argument(
        "--columns", default=None, metavar="ROLE=COL,...", help="column names for the roles, e.g. image=jpg,text=alt"
    )
    group.add_argument("--split", default=None, help="split to read (default: train, or the only split)")
    group.add_argument("--config", default=None, help="Hub dataset configuration (subset)")
    group.add_argument("--limit", type=positive, default=None, metavar="N", help="read only the first N rows")
    group.add_argument(
        "--streaming",
        action="store_true",
        help="stream the source (no full download first; each task fetches only its own files)",
    )
    group.add_argument("--overwrite", action="store_true", help="replace DIR if it already holds results")
    group.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    from mmsieve.hub.commands import add_push_arguments

    add_push_arguments(group)
    group.add_argument(
        "--verbose", action="store_true", help="print datatrove's task logs (always kept in DIR/datatrove/logs/)"
    )
    from mmsieve.executors import add_executor_arguments

    add_executor_arguments(parser)


def _add_hygiene_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("hygiene thresholds (defaults in parentheses)")
    group.add_argument("--min-side", type=int, default=32, help="minimum shorter image side in pixels (32)")
    group.add_argument("--max-aspect-ratio", type=float, default=3.0, help="maximum longer/shorter side (3.0)")
    group.add_argument("--max-pixels", type=int, default=None, help="decompression-bomb guard (89,478,485)")
    group.add_argument("--min-chars", type=int, default=1, help="minimum text characters (1)")
    group.add_argument(
        "--max-chars",
        type=int,
        default=None,
        help="maximum text characters (per kind: caption 4,000, interleaved 400,000)",
    )
    group.add_argument("--min-tokens", type=int, default=None, help="minimum approximate tokens (none)")
    group.add_argument(
        "--max-tokens", type=int, default=None, help="maximum approximate tokens (8,192 per conversation turn)"
    )
    group.add_argument(
        "--min-images",
        type=int,
        default=None,
        help="minimum images (per kind: caption 1, interleaved 1, conversation 0)",
    )
    group.add_argument(
        "--max-images",
        type=int,
        default=None,
        help="maximum images (per kind: caption 1, interleaved 30, conversation 16)",
    )
    group.add_argument("--min-turns", type=int, default=1, help="minimum conversation turns (1)")
    group.add_argument("--max-turns", type=int, default=None, help="maximum conversation turns (none)")
    group.add_argument("--no-verify-images", action="store_true", help="read image headers only; skip full decoding")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `mmsieve` command (exposed for tests and docs)."""
    parser = _Parser(
        prog="mmsieve", description="Curate multimodal training data: filter, score, deduplicate, publish."
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p_filter = sub.add_parser(
        "filter",
        help="drop broken or malformed samples (hygiene checks), keeping the rest",
        description="Run the hygiene checks over a dataset: kept/ and removed/ parquet (with mmsieve_reason) and stats.json.",
    )
    _add_source_arguments(p_filter)
    _add_hygiene_arguments(p_filter)
    p_score = sub.add_parser(
        "score",
        help="score samples with UniFilter (or CLIP/SigLIP) and optionally keep the best",
        description=(
            "Add quality scores to every sample (unifilter_score or clip_score). With --threshold or --keep-fraction, "
            "also drop the samples below the cut into removed/ (keep-fraction takes two passes over the data)."
        ),
    )
    _add_source_arguments(p_score)
    group = p_score.add_argument_group("scoring")
    group.add_argument("--model", required=True, metavar="ID_OR_PATH", help="checkpoint: Hub id or local path")
    group.add_argument(
        "--scorer", choices=("unifilter", "clip"), default="unifilter", help="unifilter (default) or clip"
    )
    cut = group.add_mutually_exclusive_group()
    cut.add_argument("--threshold", type=float, default=None, help="keep samples scoring at least this")
    cut.add_argument("--keep-fraction", type=fraction, default=None, help="keep this top fraction of the run (0-1]")
    group.add_argument("--vision-tower", default=None, help="UniFilter: override config.mm_vision_tower (id or path)")
    group.add_argument("--batch-size", type=positive, default=64, help="samples per batch (default 64)")
    group.add_argument("--max-batch-tokens", type=positive, default=16_384, help="UniFilter: tokens per forward pass")
    group.add_argument(
        "--overflow", choices=("skip", "truncate"), default="skip", help="UniFilter: documents over the limits"
    )
    group.add_argument(
        "--aggregate", choices=("mean", "min", "max"), default="mean", help="CLIP: per-pair aggregation"
    )
    group.add_argument("--device", default=None, help="force a device (default: the task's GPU, else CPU)")
    from mmsieve.training.commands import add_commands

    add_commands(sub, positive)
    from mmsieve.dedup.commands import add_commands as add_dedup_commands

    add_dedup_commands(sub, _add_source_arguments, positive)
    from mmsieve.judge.commands import add_command as add_judge_command
    from mmsieve.rewrite.commands import add_command as add_rewrite_command

    add_rewrite_command(sub, _add_source_arguments, positive)
    add_judge_command(sub, _add_source_arguments, positive)
    from mmsieve.hub.commands import add_commands as add_hub_commands

    add_hub_commands(sub)
    p_demo = sub.add_parser(
        "demo", help="build the demo set from photos shipped in scikit-image and run the pipeline on it"
    )
    p_demo.add_argument(
        "--output", "-o", default="demo_output", metavar="DIR", help="demo folder (default demo_output)"
    )
    p_demo.add_argument("--push-to", default=None, metavar="REPO_ID", help="publish the demo's curated captions")
    p_demo.add_argument("--private", action="store_true", help="with --push-to: create the repo private")
    return parser


def _hygiene_config(args: argparse.Namespace) -> dict[str, Any]:
    names = ["min_side", "max_aspect_ratio", "max_pixels", "min_chars", "max_chars", "min_tokens", "max_tokens"]
    names += ["min_images", "max_images", "min_turns", "max_turns"]
    config = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    config["verify_images"] = not args.no_verify_images
    return config


def _print_summary(stats: dict[str, Any]) -> None:
    print(
        f"rows in {stats['rows_in']}, kept {stats['kept']}, removed {stats['removed']} "
        f"({stats['rows_per_second']} rows/s over {stats['tasks']} tasks)"
    )
    for reason, count in stats["removed_by_reason"].items():
        print(f"  {reason:<24} {count}")
    steps = stats.get("steps") or []
    if steps:
        print(f"  {'step':<24} {'rows/s':>10} {'seconds':>9} {'removed':>8}")
        for step in steps:
            rate = step.get("rows_per_second")
            seconds = step.get("seconds")
            print(
                f"  {step['step']:<24} {rate if rate is not None else '-':>10} "
                f"{seconds if seconds is not None else '-':>9} {sum(step.get('removed', {}).values()):>8}"
            )
    print(f"kept:    {stats['outputs']['kept']}\nremoved: {stats['outputs']['removed']}")


def _check_checkpoint(model: str, scorer: str) -> None:
    """Read the checkpoint's config here, so a wrong --model fails in one line before any worker starts."""
    from pathlib import Path

    from transformers import AutoConfig

    if model.startswith((".", "/", "~")) and not Path(model).expanduser().exists():
        raise CliError(f"no checkpoint folder at {model}")
    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise CliError(f"cannot load checkpoint {model!r}: {str(err).splitlines()[0]}") from None
    if scorer == "unifilter" and config.model_type not in ("llava_qwen", "llava_qwen3"):
        raise CliError(f"{model!r} is a {config.model_type!r} checkpoint, not UniFilter (llava_qwen / llava_qwen3)")
    if scorer == "clip" and not (hasattr(config, "vision_config") and hasattr(config, "text_config")):
        raise CliError(f"{model!r} is a {config.model_type!r} checkpoint, not a CLIP/SigLIP dual encoder")


def _score_step(args: argparse.Namespace) -> Any:
    from mmsieve.filters import ClipScoreFilter, ClipScoreScorer, UniFilterFilter, UniFilterScorer

    _check_checkpoint(args.model, args.scorer)

    if args.scorer == "clip":
        options = {"batch_size": args.batch_size, "aggregate": args.aggregate, "device": args.device}
        scorer_class, filter_class = ClipScoreScorer, ClipScoreFilter
    else:
        options = {
            "vision_tower": args.vision_tower,
            "batch_size": args.batch_size,
            "max_batch_tokens": args.max_batch_tokens,
            "overflow": args.overflow,
            "device": args.device,
        }
        scorer_class, filter_class = UniFilterScorer, UniFilterFilter
    if args.threshold is None and args.keep_fraction is None:
        return scorer_class(args.model, **options)
    return filter_class(args.model, threshold=args.threshold, keep_fraction=args.keep_fraction, **options)


def _run_filter(args: argparse.Namespace) -> int:
    from mmsieve.filters import HygieneFilter

    try:
        step = HygieneFilter(**_hygiene_config(args))
    except ValueError as err:
        raise CliError(str(err)) from None
    return _run(args, step)


def source_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of `run_steps` (and `run_dedup`) given by the input-and-output and execution options."""
    from mmsieve.executors import executor_options
    from mmsieve.schemas import parse_columns

    return {
        "kind": args.kind,
        "columns": parse_columns(args.columns) if args.columns else None,
        "split": args.split,
        "config": args.config,
        "limit": args.limit,
        "streaming": args.streaming,
        "progress": not args.no_progress and sys.stderr.isatty(),
        "overwrite": args.overwrite,
        "verbose": args.verbose,
        **executor_options(args),
    }


def _run(args: argparse.Namespace, *steps: Any) -> int:
    from mmsieve.runner import run_steps

    try:
        stats = run_steps(args.input, args.output, list(steps), **source_options(args))
    except ValueError as err:  # bad executor options, a keep-fraction filter on Slurm, ...
        raise CliError(str(err)) from None
    return _report(args, stats)


def _report(args: argparse.Namespace, stats: dict[str, Any] | None) -> int:
    """Print a finished run's summary and publish it (`--push-to`); after a Slurm submission, how to finish."""
    if stats is None:
        from mmsieve.executors import finalize_hint

        print(finalize_hint(["mmsieve", *args.argv], args.output, args.tasks))
        return 0
    for name, part in ({"": stats} if "rows_in" in stats else stats).items():
        print(f"{name}: " if name else "", end="")
        _print_summary(part)
    print(f"stats:   {os.path.join(args.output, 'stats.json')}")
    _push(args, args.output)
    return 0


def _push(args: argparse.Namespace, output: str) -> None:
    """`--push-to`: publish the output folder; a failure is one line and exit code 2 (the results stay on disk)."""
    from mmsieve.hub.commands import push_after_run, push_summary
    from mmsieve.hub.publish import PublishError

    try:
        report = push_after_run(args, output)
    except (PublishError, ValueError) as err:
        raise CliError(f"the run finished ({output}) but publishing failed: {err}") from None
    if report is not None:
        print(push_summary(report))


def _run_push_command(args: argparse.Namespace) -> int:
    from mmsieve.hub.commands import run_push
    from mmsieve.hub.publish import PublishError

    try:
        report = run_push(args)
    except (PublishError, ValueError) as err:
        raise CliError(str(err)) from None
    _print_json(report)
    return 0


def _print_json(report: dict[str, Any]) -> None:
    print(json.dumps(report, indent=2, default=str))


def _run_training_command(args: argparse.Namespace) -> int:
    from mmsieve.training import commands

    run = {"synth": commands.run_synth, "train": commands.run_train, "eval": commands.run_eval}[args.command]
    try:
        report = run(args)
    except ValueError as err:  # bad data or arguments found while reading them
        raise CliError(str(err)) from None
    _print_json(report)
    return 0


def _run_dedup_command(args: argparse.Namespace) -> int:
    from mmsieve.dedup import commands

    if args.command == "dedup" and args.push_to and len(args.input) > 1:
        raise CliError(
            "--push-to publishes one dataset: with several --input, publish each OUTPUT/NAME with mmsieve push-dataset"
        )
    try:
        if args.command == "decontaminate":
            return _run(args, commands.decontamination_step(args))
        if args.command == "build-index":
            _print_json(commands.run_build_index(args))
            return 0
        stats = commands.run_dedup_command(args)
    except (ValueError, FileNotFoundError) as err:  # a bad embedder spec, index or benchmark list
        raise CliError(str(err)) from None
    return _report(args, stats)


def _run_generating_command(args: argparse.Namespace) -> int:
    from mmsieve.judge.commands import judge_step
    from mmsieve.rewrite.commands import rewrite_steps

    try:
        steps = rewrite_steps(args) if args.command == "rewrite" else [judge_step(args)]
    except ValueError as err:
        raise CliError(str(err)) from None
    return _run(args, *steps)


def _run_demo(args: argparse.Namespace) -> int:
    from mmsieve.demo import run_demo
    from mmsieve.hub.publish import PublishError

    try:
        report = run_demo(args.output, push_to=args.push_to, private=args.private)
    except PublishError as err:
        raise CliError(str(err)) from None
    print(json.dumps(report["summary"]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mmsieve` console script; returns the exit code."""
    from mmsieve.hub.sources import SourceError
    from mmsieve.runner import OutputExistsError
    from mmsieve.schemas import SchemaError

    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # repeated with --finalize after a Slurm submission
    try:
        with _library_progress_bars(not getattr(args, "no_progress", False) and sys.stderr.isatty()):
            return _dispatch(args)
    except (CliError, SourceError, SchemaError, OutputExistsError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"mmsieve {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


@contextlib.contextmanager
def _library_progress_bars(enabled: bool) -> Iterator[None]:
    """`datasets` and `huggingface_hub` progress bars only on a terminal (not in batch logs or with --no-progress)."""
    import datasets
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was = datasets.is_progress_bar_enabled(), not are_progress_bars_disabled()
    if not enabled:
        datasets.disable_progress_bars()
        disable_progress_bars()
    try:
        yield
    finally:
        if was[0]:
            datasets.enable_progress_bars()
        if was[1]:
            enable_progress_bars()


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "filter":
        return _run_filter(args)
    if args.command == "score":
        return _run(args, _score_step(args))
    if args.command in ("synth", "train", "eval"):
        return _run_training_command(args)
    if args.command in ("dedup", "build-index", "decontaminate"):
        return _run_dedup_command(args)
    if args.command in ("rewrite", "judge"):
        return _run_generating_command(args)
    if args.command in ("push-dataset", "push-model"):
        return _run_push_command(args)
    return _run_demo(args)


if __name__ == "__main__":
    sys.exit(main())
