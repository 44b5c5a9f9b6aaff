"""The `mmsieve dedup`, `mmsieve decontaminate` and `mmsieve build-index` commands.

mmsieve dedup --input SRC [--input SRC2 ...] --output DIR --embedder sscd:PATH|clip:ID|phash [--threshold X]
mmsieve build-index --output INDEX --embedder SPEC [--benchmarks YAML] [--only NAME ...] [--limit N]
mmsieve decontaminate --input SRC --output DIR --index INDEX_DIR_OR_HUB_ID [--threshold X] [--no-text]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any


EMBEDDER_HELP = (
    "image embedder: sscd:PATH_OR_URL_OR_ID (SSCD TorchScript file, or safetensors folder/Hub id; square 320 px as "
    "FineVision), sscd288:... (short edge 288), clip:ID or siglip:ID (transformers), phash or dhash (no model)"
)


def add_commands(sub: Any, add_source_arguments: Callable[..., None], positive: Callable[[str], int]) -> None:
    """Register the three commands on the `mmsieve` sub-parser."""
    p_dedup = sub.add_parser(
        "dedup",
        help="remove near-duplicate images within (and across) datasets",
        description=(
            "Embed every image, find all pairs at or above --threshold (faiss), cluster them and keep one sample per "
            "cluster (the best --quality-column score, else the first). Removed rows carry reason near_duplicate and "
            "dup_of / dup_cluster / dup_similarity. Repeat --input to deduplicate datasets against each other "
            "(earlier inputs win ties)."
        ),
    )
    add_source_arguments(p_dedup, multiple_inputs=True)
    group = p_dedup.add_argument_group("deduplication")
    group.add_argument("--embedder", required=True, metavar="SPEC", help=EMBEDDER_HELP)
    group.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="cosine similarity of a near-duplicate (default: the embedder's; SSCD 0.95 as FineVision, 0.75 is "
        "SSCD's own 90%%-precision copy threshold)",
    )
    group.add_argument(
        "--quality-column",
        default="auto",
        metavar="COL",
        help="keep the best-scored sample of a cluster by this column; auto (default): unifilter_score or clip_score "
        "when present; none: keep the first",
    )
    group.add_argument(
        "--method", choices=("auto", "exact", "ivf"), default="auto", help="pair search: exact or IVF (faiss)"
    )
    group.add_argument("--batch-size", type=positive, default=64, help="images per embedding batch (default 64)")

    p_index = sub.add_parser(
        "build-index",
        help="embed benchmark test sets into a reusable decontamination index",
        description=(
            "Read each benchmark's test split (Hub ids or local folders, from --benchmarks or the shipped list: "
            "FineVision's 66 lmms-lab test sets plus MMStar, MathVista and OCRBench), embed its images and hash its "
            "questions and answers. The index folder can be pushed to the Hub as a dataset and used by others."
        ),
    )
    p_index.add_argument("--output", "-o", required=True, metavar="DIR", help="the index folder")
    p_index.add_argument("--embedder", required=True, metavar="SPEC", help=EMBEDDER_HELP)
    p_index.add_argument("--benchmarks", default=None, metavar="YAML", help="benchmark list (default: shipped)")
    p_index.add_argument("--only", nargs="+", default=None, metavar="NAME", help="only these benchmarks of the list")
    p_index.add_argument("--limit", type=positive, default=None, metavar="N", help="at most N rows per benchmark")
    p_index.add_argument("--ngram", type=positive, default=8, metavar="N", help="words per text n-gram (default 8)")
    p_index.add_argument("--threshold", type=float, default=None, help="default image threshold stored in the index")

    p_decont = sub.add_parser(
        "decontaminate",
        help="drop samples whose image or text matches a benchmark test item",
        description=(
            "Compare every image with the index's benchmark images (cosine >= --threshold) and every text with the "
            "benchmarks' questions and answers (shared word n-grams). Removed rows carry reason contaminated and "
            "contaminated_with = benchmark/item_id; stats.json gets a per-benchmark table."
        ),
    )
    add_source_arguments(p_decont)
    group = p_decont.add_argument_group("decontamination")
    group.add_argument("--index", required=True, metavar="DIR_OR_ID", help="index folder or Hub dataset id")
    group.add_argument("--threshold", type=float, default=None, help="image cosine threshold (default: the index's)")
    group.add_argument("--no-images", action="store_true", help="skip the image check")
    group.add_argument("--no-text", action="store_true", help="skip the text n-gram check")
    group.add_argument("--min-ngrams", type=positive, default=1, help="shared n-grams that make a text match (1)")
    group.add_argument("--embedder", default=None, metavar="SPEC", help="override the index's embedder spec")
    group.add_argument("--batch-size", type=positive, default=64, help="samples per batch (default 64)")


def _quality(value: str) -> str | None:
    return None if value.lower() == "none" else value


def run_dedup_command(args: argparse.Namespace) -> dict[str, Any]:
    """`mmsieve dedup`: returns the stats (per dataset when several inputs)."""
    from mmsieve.cli import source_options
    from mmsieve.dedup.run import run_dedup

    return run_dedup(
        args.input,
        args.output,
        args.embedder,
        threshold=args.threshold,
        quality_column=_quality(args.quality_column),
        batch_size=args.batch_size,
        method=args.method,
        **source_options(args),
    )


def run_build_index(args: argparse.Namespace) -> dict[str, Any]:
    """`mmsieve build-index`: returns the index metadata."""
    from mmsieve.dedup.contamination_index import build_index, load_benchmarks
    from mmsieve.dedup.embedders import parse_embedder

    specs = load_benchmarks(args.benchmarks, args.only)
    return build_index(
        specs,
        parse_embedder(args.embedder),
        args.output,
        n=args.ngram,
        threshold=args.threshold,
        limit=args.limit,
        log=lambda line: print(line, file=sys.stderr),
    )


def decontamination_step(args: argparse.Namespace) -> Any:
    """The `DecontaminationFilter` of `mmsieve decontaminate` (the index is loaded here: a bad one fails early)."""
    from mmsieve.dedup.contamination_index import ContaminationIndex
    from mmsieve.dedup.decontaminate import DecontaminationFilter

    ContaminationIndex.load(args.index)
    return DecontaminationFilter(
        args.index,
        threshold=args.threshold,
        images=not args.no_images,
        text=not args.no_text,
        min_ngrams=args.min_ngrams,
        embedder=args.embedder,
        batch_size=args.batch_size,
    )
