"""`mmsieve push-dataset` and `mmsieve push-model`, and the `--push-to` option of the processing commands.

Example:
    >>> # mmsieve push-dataset curated/ --repo me/curated-captions --include-removed
    >>> # mmsieve push-model bench_output/easyvqa/model --repo me/unifilter-easyvqa --private
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_push_arguments(group: Any) -> None:
    """`--push-to`, `--push-removed` and `--private` for a processing command's input-and-output group."""
    group.add_argument(
        "--push-to",
        default=None,
        metavar="REPO_ID",
        help="publish the result as a Hub dataset (kept split, scores, card, plots); token from HF_TOKEN or hf login",
    )
    group.add_argument("--push-removed", action="store_true", help="with --push-to: also publish the removed split")
    group.add_argument("--private", action="store_true", help="with --push-to: create the repo private")


def add_commands(sub: Any) -> None:
    """Register `push-dataset` and `push-model` on the `mmsieve` sub-parser."""
    p = sub.add_parser(
        "push-dataset",
        help="publish a run folder (kept/, removed/, stats.json) as a Hub dataset with its card",
        description=(
            "Publish the kept rows (and with --include-removed the removed ones, with reasons) of an mmsieve run "
            "folder as a Hub dataset: bounded parquet shards with Image features, a dataset card (pipeline, "
            "counts by reason, score histograms, contamination table, citations), in one commit. Re-publishing "
            "the same folder changes nothing; files mmsieve did not create are kept unless --replace."
        ),
    )
    p.add_argument("run_dir", metavar="DIR", help="an mmsieve output folder (kept/, removed/, stats.json)")
    p.add_argument("--repo", required=True, metavar="REPO_ID", help="the dataset repo, e.g. me/curated-captions")
    p.add_argument("--include-removed", action="store_true", help="also publish the removed split")
    p.add_argument("--license", default=None, help="the dataset's license (default: the source's, else unknown)")
    p.add_argument("--source", action="append", default=None, metavar="ID", help="a source dataset id (repeat)")
    p.add_argument("--pretty-name", default=None, help="the card's title")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--replace", action="store_true", help="also delete repo files mmsieve did not publish")
    p.add_argument("--max-shard-mb", type=float, default=256.0, help="largest parquet file in MiB (default 256)")
    m = sub.add_parser(
        "push-model",
        help="publish a checkpoint folder (safetensors + model card) as a Hub model",
        description="Publish a checkpoint (safetensors weights, config, tokenizer, processor, README.md model card) "
        "in one commit. Pickled weights and trainer state are left out.",
    )
    m.add_argument("model_dir", metavar="DIR", help="a checkpoint folder with *.safetensors and README.md")
    m.add_argument("--repo", required=True, metavar="REPO_ID", help="the model repo, e.g. me/unifilter-easyvqa")
    m.add_argument("--private", action="store_true", help="create the repo private")
    m.add_argument("--replace", action="store_true", help="also delete repo files mmsieve did not publish")


def run_push(args: argparse.Namespace) -> dict[str, Any]:
    """Run `push-dataset` or `push-model`; returns the publish report.

    Raises:
        ValueError: the folder is not a run folder / checkpoint (printed as one line by the CLI).
    """
    from mmsieve.hub.publish import push_dataset, push_model

    if args.command == "push-model":
        if not Path(args.model_dir).is_dir():
            raise ValueError(f"no checkpoint folder at {args.model_dir}")
        return push_model(args.model_dir, args.repo, private=args.private, replace=args.replace)
    check_run_dir(args.run_dir)
    return push_dataset(
        args.run_dir,
        args.repo,
        include_removed=args.include_removed,
        private=args.private,
        license=args.license,
        source_datasets=args.source,
        pretty_name=args.pretty_name,
        replace=args.replace,
        max_shard_bytes=int(args.max_shard_mb * 2**20),
    )


def check_run_dir(run_dir: str | Path) -> None:
    """Raise ValueError unless `run_dir` is one mmsieve run's output folder.

    Example:
        >>> check_run_dir("/nonexistent")
        Traceback (most recent call last):
        ...
        ValueError: /nonexistent is not an mmsieve run folder (kept/ and stats.json)
    """
    folder = Path(run_dir)
    if not (folder / "stats.json").is_file() or not (folder / "kept").is_dir():
        raise ValueError(f"{run_dir} is not an mmsieve run folder (kept/ and stats.json)")


def push_after_run(args: argparse.Namespace, output: str | Path) -> dict[str, Any] | None:
    """`--push-to`: publish a processing command's (or recipe's) output folder; None when the option is not set.

    `--license` and `--pretty-name` are used where the command has them (the recipes do).

    Example:
        >>> push_after_run(argparse.Namespace(push_to=None), "out") is None
        True
    """
    if not getattr(args, "push_to", None):
        return None
    from mmsieve.hub.publish import push_dataset

    check_run_dir(output)  # the card names the source datasets and carries their license over
    return push_dataset(
        output,
        args.push_to,
        include_removed=args.push_removed,
        private=args.private,
        license=getattr(args, "license", None),
        pretty_name=getattr(args, "pretty_name", None),
    )


def push_summary(report: dict[str, Any]) -> str:
    """The line printed after a publish: where it went and whether it made a commit.

    Example:
        >>> push_summary({"url": "https://huggingface.co/datasets/me/x", "commit": "0123456789abcdef", "changed": True})
        'pushed:  https://huggingface.co/datasets/me/x (new commit 0123456789)'
    """
    return f"pushed:  {report['url']} ({'new commit ' + report['commit'][:10] if report['changed'] else 'unchanged'})"


__all__ = ["add_commands", "add_push_arguments", "check_run_dir", "push_after_run", "push_summary", "run_push"]
