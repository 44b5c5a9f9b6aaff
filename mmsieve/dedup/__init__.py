"""Near-duplicate removal and benchmark decontamination (FineVision's method, as pipeline steps that scale).

- `embedders`: SSCD, CLIP/SigLIP and perceptual-hash image embedders (`parse_embedder`).
- `clustering` / `vector_index`: faiss pair search, union-find clusters, the reference index.
- `near_duplicates`: the three dedup stages and `deduplicate` for `Dataset.map`; `run.run_dedup` runs them.
- `contamination_index` / `decontaminate`: the benchmark index (images + question/answer n-grams) and its filter.

Example:
    >>> from mmsieve.dedup import DecontaminationFilter, deduplicate
    >>> ds = deduplicate(ds, "phash")  # doctest: +SKIP
"""

from mmsieve.dedup.contamination_index import BenchmarkSpec, ContaminationIndex, build_index, load_benchmarks
from mmsieve.dedup.decontaminate import DecontaminationFilter
from mmsieve.dedup.embedders import ClipEmbedder, ImageEmbedder, PerceptualHashEmbedder, SSCDEmbedder, parse_embedder
from mmsieve.dedup.near_duplicates import (
    NearDuplicateClusterStep,
    NearDuplicateFilter,
    NearDuplicateSignature,
    cluster_near_duplicates,
    deduplicate,
)
from mmsieve.dedup.run import run_dedup


__all__ = [
    "BenchmarkSpec",
    "ClipEmbedder",
    "ContaminationIndex",
    "DecontaminationFilter",
    "ImageEmbedder",
    "NearDuplicateClusterStep",
    "NearDuplicateFilter",
    "NearDuplicateSignature",
    "PerceptualHashEmbedder",
    "SSCDEmbedder",
    "build_index",
    "cluster_near_duplicates",
    "deduplicate",
    "load_benchmarks",
    "parse_embedder",
    "run_dedup",
]
