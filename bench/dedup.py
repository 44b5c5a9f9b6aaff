"""Benchmark of near-duplicate clustering and the decontamination index (mmsieve.dedup, faiss on the CPU).

Synthetic 512-d unit vectors (fixed seed): 2% of the rows are originals with 1-3 near-copies each at cosine
0.96-0.99 (the original plus orthogonal noise, renormalised), which overwrite other random rows; everything
else is random, so no other pair comes near the threshold (0.95, FineVision's). Measured in one run:
  a. ours (`find_near_duplicates`, method "auto") against FineVision's approach (brute-force cosine: chunks
     of 5,000 query rows times all rows with a numpy matmul, pairs >= threshold, then the same union-find,
     `cluster_pairs`) at `--compare` sizes: the time ratio, and recall and precision of the planted pairs
     (the pairs inside a planted group whose true cosine is >= threshold);
  b. ours alone at `--sizes` (seconds; a size already measured in (a) is not run again);
  c. decontamination: `VectorIndex` over `--index-size` vectors (exact inner product), `--queries` queries
     in one batched call (a tenth of them near-copies of indexed vectors): queries per second.
Each timing is one run (the baseline is minutes). The last line printed is one JSON object.

Run:
    python bench/dedup.py [--quick] [--compare 100000,200000] [--sizes 100000,300000,1000000]
                          [--index-size 700000] [--queries 4096] [--threshold 0.95] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import faiss
import numpy as np
from timing import best_of

from mmsieve.dedup import clustering
from mmsieve.dedup.clustering import DuplicateClusters, Pairs, cluster_pairs, similar_pairs
from mmsieve.dedup.vector_index import VectorIndex


DIM = 512
ORIGINAL_FRACTION = 0.02
COPY_COSINE = (0.96, 0.99)
FINEVISION_CHUNK = 5000
FULL = {
    "compare": [100_000, 200_000],
    "sizes": [100_000, 300_000, 1_000_000],
    "index_size": 700_000,
    "queries": 4096,
    "exact_limit": None,  # the library's CPU_EXACT_LIMIT
}
# --quick lowers the exact limit too, so that its larger sizes take the IVF path like the full run's
QUICK = {
    "compare": [10_000, 20_000],
    "sizes": [10_000, 30_000],
    "index_size": 50_000,
    "queries": 1024,
    "exact_limit": 15_000,
}


def label(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near_copies(originals: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One copy of each row at a cosine drawn from COPY_COSINE: c * original + sqrt(1 - c^2) * orthogonal noise."""
    cosine = rng.uniform(*COPY_COSINE, size=(len(originals), 1)).astype(np.float32)
    noise = rng.standard_normal(originals.shape, dtype=np.float32)
    noise = unit_rows(noise - np.sum(noise * originals, axis=1, keepdims=True) * originals)
    return unit_rows(cosine * originals + np.sqrt(1 - cosine**2) * noise)


def make_vectors(n: int, threshold: float, seed: int) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """`n` unit rows with planted near-copy groups, and the planted pairs (i < j) whose cosine is >= threshold."""
    rng = np.random.default_rng(seed)
    x = unit_rows(rng.standard_normal((n, DIM), dtype=np.float32))
    rows = rng.permutation(n)
    n_originals = int(ORIGINAL_FRACTION * n)
    copies_per_original = rng.integers(1, 4, n_originals)
    originals = np.repeat(rows[:n_originals], copies_per_original)
    copies = rows[n_originals : n_originals + len(originals)]
    x[copies] = near_copies(x[originals], rng)
    planted: set[tuple[int, int]] = set()
    starts = np.concatenate([[0], np.cumsum(copies_per_original)[:-1]])
    for original, start, count in zip(rows[:n_originals].tolist(), starts.tolist(), copies_per_original.tolist()):
        group = [original, *copies[start : start + count].tolist()]
        sims = x[group].astype(np.float64) @ x[group].astype(np.float64).T
        planted.update(
            (min(a, b), max(a, b))
            for p, a in enumerate(group)
            for q, b in enumerate(group)
            if p < q and sims[p, q] >= threshold
        )
    return x, planted


def finevision_pairs(x: np.ndarray, threshold: float) -> Pairs:
    """FineVision's search: 5,000 query rows at a time times every row (numpy matmul), pairs i < j >= threshold."""
    rows, cols, sims = [], [], []
    for start in range(0, len(x), FINEVISION_CHUNK):
        block = x[start : start + FINEVISION_CHUNK] @ x.T  # [chunk, n]
        r, c = np.nonzero(block >= threshold)
        upper = c > r + start
        rows.append(r[upper] + start)
        cols.append(c[upper])
        sims.append(block[r[upper], c[upper]])
    return Pairs(np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64), np.concatenate(sims))


def recall_precision(pairs: Pairs, planted: set[tuple[int, int]]) -> tuple[float, float]:
    found = set(zip(pairs.i.tolist(), pairs.j.tolist()))
    hits = len(found & planted)
    return hits / max(1, len(planted)), hits / max(1, len(found))


def search_settings(n: int, exact_limit: int | None) -> str:
    if n <= (exact_limit if exact_limit is not None else clustering.CPU_EXACT_LIMIT):
        return "exact"
    return f"ivf nlist={clustering.default_nlist(n)} nprobe={clustering.NPROBE}"


def run_ours(x: np.ndarray, threshold: float, exact_limit: int | None) -> tuple[float, Pairs, DuplicateClusters]:
    """`find_near_duplicates` (method auto) as its two steps, timed together: seconds, pairs, clusters."""
    begin = time.perf_counter()
    pairs = similar_pairs(x, threshold, exact_limit=exact_limit)
    clusters = cluster_pairs(pairs, np.arange(len(x)))
    return time.perf_counter() - begin, pairs, clusters


def run_finevision(x: np.ndarray, threshold: float) -> tuple[float, Pairs, DuplicateClusters]:
    begin = time.perf_counter()
    pairs = finevision_pairs(x, threshold)
    clusters = cluster_pairs(pairs, np.arange(len(x)))
    return time.perf_counter() - begin, pairs, clusters


def compare_with_finevision(sizes: list[int], threshold: float, exact_limit: int | None, seed: int) -> dict:
    """(a): {n: {"seconds", "speedup", "recall"}} of ours, with the brute force run once per size."""
    print("\n(a) ours vs FineVision's chunked brute force (5,000 rows x all, numpy matmul) + the same union-find")
    print(
        f"{'n':>9} {'ours: search':>28} {'s':>7} {'recall':>7} {'precision':>9} {'brute s':>8} {'recall':>7} "
        f"{'precision':>9} {'speedup':>8} {'clusters differ':>15}"
    )
    results = {}
    for n in sizes:
        x, planted = make_vectors(n, threshold, seed)
        ours_s, ours_pairs, ours_clusters = run_ours(x, threshold, exact_limit)
        base_s, base_pairs, base_clusters = run_finevision(x, threshold)
        recall, precision = recall_precision(ours_pairs, planted)
        base_recall, base_precision = recall_precision(base_pairs, planted)
        differ = int(np.sum(ours_clusters.cluster != base_clusters.cluster))
        results[n] = {"seconds": ours_s, "speedup": base_s / ours_s, "recall": recall}
        print(
            f"{n:>9,} {search_settings(n, exact_limit):>28} {ours_s:>7.1f} {recall:>7.4f} {precision:>9.4f} "
            f"{base_s:>8.1f} {base_recall:>7.4f} {base_precision:>9.4f} {base_s / ours_s:>7.1f}x {differ:>15,}"
        )
        print(
            f"{'':>9} {len(planted):,} planted pairs; samples removed: ours {ours_clusters.n_duplicates:,}, "
            f"brute force {base_clusters.n_duplicates:,}"
        )
    return results


def time_ours(sizes: list[int], threshold: float, exact_limit: int | None, seed: int, known: dict) -> dict[int, float]:
    """(b): {n: seconds} of ours alone; sizes already in `known` (from (a)) are not run again."""
    print("\n(b) ours alone (find_near_duplicates, method auto)")
    print(f"{'n':>9} {'search':>28} {'s':>7} {'recall':>7} {'precision':>9} {'removed':>9}")
    seconds = {}
    for n in sizes:
        if n in known:
            seconds[n] = known[n]["seconds"]
            print(f"{n:>9,} {search_settings(n, exact_limit):>28} {seconds[n]:>7.1f}  (measured in a)")
            continue
        x, planted = make_vectors(n, threshold, seed)
        seconds[n], pairs, clusters = run_ours(x, threshold, exact_limit)
        recall, precision = recall_precision(pairs, planted)
        print(
            f"{n:>9,} {search_settings(n, exact_limit):>28} {seconds[n]:>7.1f} {recall:>7.4f} {precision:>9.4f} "
            f"{clusters.n_duplicates:>9,}"
        )
    return seconds


def decontamination(index_size: int, n_queries: int, threshold: float, seed: int) -> float:
    """(c): queries per second of one batched `VectorIndex.search` (k=1); a tenth of the queries are copies."""
    print(f"\n(c) decontamination: VectorIndex (exact inner product) over {index_size:,} vectors, batched queries")
    rng = np.random.default_rng(seed + 1)
    reference = unit_rows(rng.standard_normal((index_size, DIM), dtype=np.float32))
    queries = unit_rows(rng.standard_normal((n_queries, DIM), dtype=np.float32))
    contaminated = rng.choice(index_size, n_queries // 10, replace=False)
    queries[: len(contaminated)] = near_copies(reference[contaminated], rng)
    build_s, index = best_of(1, lambda: VectorIndex(reference))
    index.search(queries[:64])  # warm-up
    search_s, (sims, ids) = best_of(1, lambda: index.search(queries, k=1))
    found = np.mean(ids[: len(contaminated), 0] == contaminated)
    queries_per_s = n_queries / search_s
    print(
        f"build {build_s:.1f} s; {n_queries:,} queries in {search_s:.1f} s = {queries_per_s:,.0f} queries/s "
        f"({queries_per_s * index_size * 2 * DIM / 1e9:.0f} GFLOP/s); planted copies found {found:.4f}, flagged "
        f"{np.sum(sims[:, 0] >= threshold):,} of {n_queries:,} (planted {len(contaminated):,})"
    )
    return queries_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test of a minute or two")
    parser.add_argument("--compare", help="sizes for ours vs the baseline, comma-separated (default 100000,200000)")
    parser.add_argument("--sizes", help="sizes for ours alone, comma-separated (default 100000,300000,1000000)")
    parser.add_argument("--index-size", type=int, help="vectors in the decontamination index (default 700000)")
    parser.add_argument("--queries", type=int, help="decontamination queries (default 4096)")
    parser.add_argument("--threshold", type=float, default=0.95, help="cosine threshold (default 0.95, FineVision's)")
    parser.add_argument("--exact-limit", type=int, help="method auto's exact limit (default: the library's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    preset = QUICK if args.quick else FULL
    compare = [int(s) for s in args.compare.split(",")] if args.compare else preset["compare"]
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else preset["sizes"]
    exact_limit = args.exact_limit if args.exact_limit is not None else preset["exact_limit"]
    start = time.perf_counter()
    print(
        f"{DIM}-d unit vectors, {ORIGINAL_FRACTION:.0%} originals with 1-3 copies at cosine {COPY_COSINE}, threshold "
        f"{args.threshold}; faiss {faiss.__version__} with {faiss.omp_get_max_threads()} threads, {os.cpu_count()} "
        f"cores, load average {os.getloadavg()[0]:.1f} at the start"
    )
    compared = compare_with_finevision(compare, args.threshold, exact_limit, args.seed)
    seconds = time_ours(sizes, args.threshold, exact_limit, args.seed, compared)
    queries_per_s = decontamination(
        args.index_size or preset["index_size"], args.queries or preset["queries"], args.threshold, args.seed
    )
    print(f"\ntotal run {time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.1f} at the end")
    largest = max(compare)
    result = {
        f"speedup_vs_chunked_bruteforce_{label(largest)}": round(compared[largest]["speedup"], 2),
        "recall": round(compared[largest]["recall"], 4),
        **{f"seconds_{label(n)}": round(seconds[n], 2) for n in sizes},
        "decont_queries_per_s": round(queries_per_s, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
