"""Curate an image-caption dataset and publish it: hygiene checks -> UniFilter score -> threshold -> Hub.

Reads a Hub dataset or local parquet/jsonl shards, drops broken images and malformed captions
(`HygieneFilter`), scores every pair with a UniFilter checkpoint (`UniFilterScorer`) and, with
`--threshold`, keeps the pairs scoring at least that (`ScoreFilter`; the others go to `removed/` with
reason `low_unifilter_score`, scores included). Writes OUTPUT/kept/, OUTPUT/removed/, OUTPUT/stats.json and,
with `--push-to`, publishes the kept split (and `--push-removed` the removed one) with a dataset card.

On this machine:

    python hub_scripts/curate_captions.py --input nlphuji/flickr30k --output curated/ \\
        --model weizhiwang/UniFilter-Qwen2.5-1.5B --threshold 2.0 --push-to me/flickr30k-curated

On a Slurm cluster (64 shards, one GPU each; the output folder must be shared), then, once the jobs are done,
the same command with `--finalize` (the first command prints it) writes stats.json and publishes:

    python hub_scripts/curate_captions.py --input nlphuji/flickr30k --output /shared/curated \\
        --model weizhiwang/UniFilter-Qwen2.5-1.5B --threshold 2.0 --push-to me/flickr30k-curated \\
        --executor slurm --partition gpu --time 04:00:00 --tasks 64 --gpus-per-task 1

On Ray (`pip install "mmsieve[ray]"`): `--executor ray --ray-address auto --tasks 64 --gpus-per-task 1`.
"""

from __future__ import annotations

from collections.abc import Sequence

from _common import build_parser, guarded, publish, run

from mmsieve.arguments import positive
from mmsieve.filters import HygieneFilter, ScoreFilter, UniFilterScorer


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    """Run the recipe; returns the exit code (0, or 2 with one line on stderr for a fixable error)."""
    parser = build_parser(__doc__, __file__, kind="caption")
    group = parser.add_argument_group("scoring")
    group.add_argument("--model", required=True, metavar="ID_OR_PATH", help="UniFilter checkpoint: Hub id or folder")
    group.add_argument("--threshold", type=float, default=None, help="keep pairs scoring at least this (0-3)")
    group.add_argument("--batch-size", type=positive, default=64, help="pairs per batch (default 64)")
    group.add_argument("--min-side", type=int, default=32, help="hygiene: minimum shorter image side (32 px)")
    args = parser.parse_args(argv)

    scorer = UniFilterScorer(args.model, batch_size=args.batch_size)
    steps = [HygieneFilter(min_side=args.min_side)]
    if args.threshold is None:
        steps.append(scorer)  # scores only: every valid pair is kept
    else:  # the filter runs the scorer itself, so removed rows keep their scores too
        steps.append(ScoreFilter("unifilter_score", args.threshold, scorer=scorer, error_column="unifilter_error"))
    stats = run(args, steps, argv, __file__)
    if stats is not None:
        publish(args, stats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
