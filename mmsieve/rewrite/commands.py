"""`mmsieve rewrite`: the command-line front of `Rewriter`.

Example:
    >>> # mmsieve rewrite --input scored/kept --output rewritten --endpoint http://localhost:8000 \\
    >>> #     --model Qwen/Qwen2.5-VL-7B-Instruct --threshold 1.5
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from mmsieve.generation.cli_options import add_backend_arguments, backend_from_args


def add_command(sub: Any, add_source_arguments: Callable[..., None], positive: Callable[[str], int]) -> None:
    """Register `rewrite` on the `mmsieve` sub-parser."""
    p = sub.add_parser(
        "rewrite",
        help="rewrite the text of low-quality samples (captions, answers), keeping the original",
        description=(
            "Rewrite captions and conversation answers of rows scoring below --threshold on --score-column (or the "
            "rows an AITQE model marks itself, with --aitqe). The new text replaces the old one; original_text, "
            "rewritten, rewrite_model and rewrite_reason record what happened. Nothing is dropped."
        ),
    )
    add_source_arguments(p)
    group = p.add_argument_group("rewriting model")
    add_backend_arguments(group, what="the rewriting model")
    group.add_argument(
        "--aitqe", action="store_true", help="--model is an AITQE checkpoint (HymanH/AITQE), run in process"
    )
    gate = p.add_argument_group("which rows")
    gate.add_argument("--threshold", type=float, default=None, help="rewrite rows whose score is below this")
    gate.add_argument("--score-column", default="unifilter_score", metavar="COL", help="the score (unifilter_score)")
    gate.add_argument(
        "--score-model",
        default=None,
        metavar="ID_OR_PATH",
        help="a UniFilter checkpoint that scores the rows first (when they carry no score yet)",
    )
    gate.add_argument(
        "--adaptive",
        action="store_true",
        help="rescore each rewrite with --score-model; keep it only if it scores higher",
    )
    gate.add_argument(
        "--rewrite-interleaved", action="store_true", help="also rewrite documents (text next to an image only)"
    )
    gate.add_argument("--max-tokens", type=positive, default=256, help="longest rewrite in tokens (256)")
    gate.add_argument("--batch-size", type=positive, default=64, help="rows per batch (64)")


def rewrite_steps(args: argparse.Namespace) -> list[Any]:
    """The steps of `mmsieve rewrite`: an optional UniFilter scorer, then the `Rewriter`.

    Raises:
        ValueError: for an inconsistent set of options (printed as one line by the CLI).
    """
    from mmsieve.rewrite.rewriter import Rewriter

    if args.threshold is None and not args.aitqe:
        raise ValueError("give --threshold (rows scoring below it are rewritten) or --aitqe")
    if args.adaptive and not args.score_model:
        raise ValueError("--adaptive needs --score-model (the scorer that rescores each rewrite)")
    if args.aitqe:
        if args.endpoint:
            raise ValueError("--aitqe runs the AITQE checkpoint in process: drop --endpoint")
        from mmsieve.generation.aitqe_backend import AITQEBackend

        backend: Any = AITQEBackend(args.model, device=args.device, batch_size=args.generate_batch_size)
    else:
        backend = backend_from_args(args, max_tokens=args.max_tokens)
    steps: list[Any] = []
    scorer = None
    if args.score_model:
        from mmsieve.filters import UniFilterScorer

        scorer = UniFilterScorer(args.score_model, batch_size=args.batch_size, device=args.device)
        steps.append(scorer)
    steps.append(
        Rewriter(
            backend,
            threshold=args.threshold,
            score_column=args.score_column,
            rescorer=scorer if args.adaptive else None,
            rewrite_interleaved=args.rewrite_interleaved,
            max_tokens=args.max_tokens,
            aitqe=args.aitqe,
            batch_size=args.batch_size,
        )
    )
    return steps


__all__ = ["add_command", "rewrite_steps"]
