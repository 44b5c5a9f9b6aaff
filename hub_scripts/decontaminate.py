"""Remove benchmark test items from a training set and publish the clean set: index -> decontaminate -> Hub.

Uses a contamination index (the benchmarks' test images embedded, their questions and answers hashed
into word n-grams): an index folder, or a Hub dataset holding one. With `--embedder`, the index is built
first at `--index` from a benchmark list (`--benchmarks YAML`, default the shipped list: FineVision's 66
lmms-lab test sets plus MMStar, MathVista and OCRBench; `--only` picks some), and `--push-index` publishes it
for others to reuse. Every sample whose image matches a benchmark image (cosine >= the threshold) or whose
text shares n-grams with a benchmark question or answer goes to OUTPUT/removed/ with `contaminated_with`;
OUTPUT/stats.json and the dataset card get the per-benchmark table.

    python hub_scripts/decontaminate.py --input HuggingFaceM4/FineVision --config ai2d_merged \\
        --output ai2d-clean/ --index bench_index/ --embedder sscd:sscd_disc_mixup.torchscript.pt \\
        --push-index me/benchmark-index --push-to me/ai2d-decontaminated

With an index someone published (no build step):

    python hub_scripts/decontaminate.py --input my/captions --output clean/ --index me/benchmark-index \\
        --push-to me/captions-decontaminated [--executor slurm --partition cpu --time 02:00:00 --tasks 32]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from _common import build_parser, guarded, publish, run

from mmsieve.arguments import positive
from mmsieve.dedup.contamination_index import ContaminationIndex, build_index, load_benchmarks
from mmsieve.dedup.decontaminate import DecontaminationFilter
from mmsieve.dedup.embedders import parse_embedder


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    """Run the recipe; returns the exit code (0, or 2 with one line on stderr for a fixable error)."""
    parser = build_parser(__doc__, __file__)
    group = parser.add_argument_group("benchmark index")
    group.add_argument("--index", required=True, metavar="DIR_OR_ID", help="index folder or Hub dataset id")
    group.add_argument(
        "--embedder", default=None, metavar="SPEC", help="build the index at --index first with this embedder"
    )
    group.add_argument("--benchmarks", default=None, metavar="YAML", help="benchmark list to index (default: shipped)")
    group.add_argument("--only", nargs="+", default=None, metavar="NAME", help="index only these benchmarks")
    group.add_argument("--benchmark-limit", type=positive, default=None, metavar="N", help="rows per benchmark")
    group.add_argument("--push-index", default=None, metavar="REPO_ID", help="publish the built index as a dataset")
    group = parser.add_argument_group("decontamination")
    group.add_argument("--threshold", type=float, default=None, help="image cosine threshold (default: the index's)")
    group.add_argument("--no-images", action="store_true", help="skip the image check")
    group.add_argument("--no-text", action="store_true", help="skip the text n-gram check")
    group.add_argument("--min-ngrams", type=positive, default=1, help="shared n-grams that make a text match (1)")
    group.add_argument("--batch-size", type=positive, default=64, help="samples per batch (default 64)")
    args = parser.parse_args(argv)

    index = args.index
    if args.embedder and not args.finalize and not (Path(index) / "index.json").exists():
        meta = build_index(
            load_benchmarks(args.benchmarks, args.only),
            parse_embedder(args.embedder),
            index,
            limit=args.benchmark_limit,
            log=lambda line: print(line, file=sys.stderr),
        )
        print(f"index:   {index} ({meta['items']} items, {meta['images']} images, {args.embedder})")
    if Path(index).exists():
        index = str(Path(index).resolve())  # tasks may run elsewhere (Slurm): an absolute path
    if args.push_index and not args.finalize:
        from mmsieve.hub.publish import push_folder

        print(f"pushed:  {push_folder(index, args.push_index, private=args.private)['url']} (the index)")
    print(f"using {ContaminationIndex.load(index)}")  # a bad index fails here, before any task starts
    step = DecontaminationFilter(
        index,
        threshold=args.threshold,
        images=not args.no_images,
        text=not args.no_text,
        min_ngrams=args.min_ngrams,
        batch_size=args.batch_size,
    )
    stats = run(args, [step], argv, __file__)
    if stats is not None:
        publish(args, stats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
