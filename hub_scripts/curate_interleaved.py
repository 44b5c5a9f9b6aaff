"""Curate OBELICS-style interleaved documents and publish them: hygiene checks -> UniFilter filter -> Hub.

Reads web documents whose `images` and `texts` lists interleave (None in one list where the other has an
item, as OBELICS), drops documents with broken images, no text, no image or too many images
(`HygieneFilter`), scores each document with a UniFilter checkpoint (the official document format: up to 10
images and 6,000 tokens; `--overflow truncate` scores longer ones on their beginning instead of skipping
them) and, with `--threshold`, keeps the documents scoring at least that (`UniFilterFilter`). Writes
OUTPUT/kept/, OUTPUT/removed/ (with reasons), OUTPUT/stats.json and, with `--push-to`, a Hub dataset with card.

    python hub_scripts/curate_interleaved.py --input HuggingFaceM4/OBELICS --limit 10000 --output obelics-10k/ \\
        --model weizhiwang/UniFilter-Qwen2.5-1.5B --threshold 2.0 --push-to me/obelics-10k-curated

On a Slurm cluster, then the printed `--finalize` command once the jobs are done:

    python hub_scripts/curate_interleaved.py ... --executor slurm --partition gpu --time 08:00:00 \\
        --tasks 128 --gpus-per-task 1
"""

from __future__ import annotations

from collections.abc import Sequence

from _common import build_parser, guarded, publish, run

from mmsieve.arguments import positive
from mmsieve.filters import HygieneFilter, UniFilterFilter, UniFilterScorer


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    """Run the recipe; returns the exit code (0, or 2 with one line on stderr for a fixable error)."""
    parser = build_parser(__doc__, __file__, kind="interleaved")
    group = parser.add_argument_group("scoring")
    group.add_argument("--model", required=True, metavar="ID_OR_PATH", help="UniFilter checkpoint: Hub id or folder")
    group.add_argument("--threshold", type=float, default=None, help="keep documents scoring at least this (0-3)")
    group.add_argument("--overflow", choices=("skip", "truncate"), default="skip", help="documents over the limits")
    group.add_argument("--batch-size", type=positive, default=32, help="documents per batch (default 32)")
    group.add_argument("--max-images", type=positive, default=None, help="hygiene: most images per document (30)")
    args = parser.parse_args(argv)

    hygiene = HygieneFilter(**({"max_images": args.max_images} if args.max_images else {}))
    options = {"overflow": args.overflow, "batch_size": args.batch_size}
    if args.threshold is None:
        score = UniFilterScorer(args.model, **options)  # scores only: every valid document is kept
    else:
        score = UniFilterFilter(args.model, threshold=args.threshold, **options)
    stats = run(args, [hygiene, score], argv, __file__)
    if stats is not None:
        publish(args, stats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
