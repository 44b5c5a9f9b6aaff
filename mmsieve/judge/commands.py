"""`mmsieve judge`: the command-line front of `Judge` and `RatingFilter`.

Example:
    >>> # mmsieve judge --input convs --output judged --endpoint http://localhost:8000 --model Qwen/Qwen3-32B \\
    >>> #     --vision-endpoint http://localhost:8001 --vision-model Qwen/Qwen2.5-VL-32B-Instruct --min-rating relevance=3
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from mmsieve.generation.cli_options import add_backend_arguments, backend_from_args


def _min_rating(value: str) -> tuple[str, float]:
    name, sep, number = value.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name.strip(), float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected AXIS=N (e.g. relevance=3), got {value!r}") from None


def add_command(sub: Any, add_source_arguments: Callable[..., None], positive: Callable[[str], int]) -> None:
    """Register `judge` on the `mmsieve` sub-parser."""
    p = sub.add_parser(
        "judge",
        help="rate samples with a judge model (FineVision's 4 axes per turn, or MLM-Filter's 4 metrics)",
        description=(
            "Rate every conversation turn (a caption counts as one turn) 1-5 on formatting, relevance, visual "
            "dependency and image-question correspondence (FineVision's *_ratings and *_min columns), or score "
            "captions 0-100 with MLM-Filter's prompts (--method mlm_filter). With --min-rating, drop rows below it."
        ),
    )
    add_source_arguments(p)
    group = p.add_argument_group("judge model (text axes, or everything without a vision judge)")
    add_backend_arguments(group, what="the judge")
    vision = p.add_argument_group("vision judge (the image axis; default: the judge above)")
    add_backend_arguments(vision, prefix="vision-", what="the vision judge")
    rating = p.add_argument_group("rating")
    rating.add_argument("--method", choices=("finevision", "mlm_filter"), default="finevision", help="(finevision)")
    rating.add_argument("--axes", default=None, metavar="A,B", help="rate only these axes / metrics (default all)")
    rating.add_argument(
        "--min-rating",
        type=_min_rating,
        action="append",
        default=[],
        metavar="AXIS=N",
        help="drop rows whose AXIS rating (minimum over turns) is below N; repeat for several axes",
    )
    rating.add_argument(
        "--missing", choices=("keep", "drop"), default="keep", help="a rating the judge could not give (keep)"
    )
    rating.add_argument("--max-tokens", type=positive, default=None, help="judge answer length (64; MLM-Filter 8)")
    rating.add_argument("--batch-size", type=positive, default=64, help="rows per batch (64)")


def judge_step(args: argparse.Namespace) -> Any:
    """The step of `mmsieve judge`: a `Judge`, wrapped in a `RatingFilter` when `--min-rating` is given.

    Raises:
        ValueError: for unknown axes (printed as one line by the CLI).
    """
    from mmsieve.judge.judge import Judge
    from mmsieve.judge.rating_filter import RatingFilter

    max_tokens = args.max_tokens or (64 if args.method == "finevision" else 8)
    backend = backend_from_args(args, max_tokens=max_tokens)
    vision = backend_from_args(args, prefix="vision-", max_tokens=max_tokens) if args.vision_model else None
    if args.vision_endpoint and not args.vision_model:
        raise ValueError("--vision-endpoint needs --vision-model (the served model's name)")
    axes = tuple(a.strip() for a in args.axes.split(",") if a.strip()) if args.axes else None
    judge = Judge(
        backend,
        vision_backend=vision,
        method=args.method,
        axes=axes,
        max_tokens=max_tokens,
        batch_size=args.batch_size,
    )
    if not args.min_rating:
        return judge
    return RatingFilter(dict(args.min_rating), judge=judge, missing=args.missing)


__all__ = ["add_command", "judge_step"]
