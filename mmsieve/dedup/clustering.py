"""Near-duplicate clustering: every pair of vectors at or above a cosine threshold (faiss), then union-find.

Vectors are float32 rows, L2-normalised, so cosine similarity is the inner product. `similar_pairs` finds
the pairs; `find_near_duplicates` links the owners (samples) of the two vectors of each pair, takes the
connected components as clusters and keeps one owner per cluster.

Search methods (measured on 2 shared CPU cores with 512-d random unit vectors holding planted pairs at cosine
0.90-0.995; `bench/dedup.py` runs the FineVision comparison):
    exact  IndexFlatIP range_search over the lower triangle (each pair computed once): n^2/2 dot products,
           3.0 / 10.1 / 35 s at 25k / 50k / 100k vectors, so ~140 s at 200k and ~1 h at 1M. `auto` uses it
           up to CPU_EXACT_LIMIT = 100k, where it still takes well under a minute.
    ivf    IVF-Flat: spherical k-means into nlist = 4*sqrt(n) lists (fixed-seed sample), each vector stored in
           its nearest list and probing its NPROBE nearest; a pair is found from either side. 0.7 / 1.9 / 4.0
           s at 25k / 50k / 100k, ~85 s at 1M. The scan is grouped by list, one BLAS matmul of all the
           vectors probing a list against its members: 3.3x faster than `IndexIVFFlat.range_search` (which
           scans list by list for each query, memory-bound) at 200k, same pairs.
           NPROBE = 16: recall of the planted pairs 0.9995 / 0.998 / 0.996 / 0.994 at 100k / 200k / 300k /
           1M (nprobe 8: 0.996 at 100k, 0.986 at 200k, 0.973 at 1M; nprobe 24: 0.998 at 1M). Random vectors
           are the hard case; raise nprobe beyond ~1M vectors.
On a GPU (faiss built with CUDA, `use_gpu` not False) the same two methods run as k-NN searches, since faiss
GPU indexes have no range_search: see `_gpu_pairs`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal


try:
    import faiss
except ImportError as err:  # faiss is the `dedup` extra
    raise ImportError("mmsieve.dedup needs faiss: pip install 'mmsieve[dedup]' (faiss-cpu), or faiss-gpu") from err
import numpy as np


logger = logging.getLogger(__name__)

CPU_EXACT_LIMIT = 100_000  # exact: 35 s at 100k on 2 cores, growing as n^2
GPU_EXACT_LIMIT = 2_000_000  # 2M x 2M 512-d dot products = 4 PFLOP: about a minute on one H100 (fp32)
NPROBE = 16
LISTS_PER_SQRT_N = 4
# k-means: 16 sample points per list and 5 iterations instead of faiss' 39 and 10 train 4x faster, for a
# recall of 0.9982 instead of 0.9985 at 200k
TRAIN_POINTS_PER_LIST = 16
KMEANS_ITERATIONS = 5
SEED = 1234
GPU_FIRST_K = 64  # neighbours asked for per query on the GPU, doubled for the queries that fill them all
GPU_MAX_K = 2048  # the largest k faiss GPU k-NN supports

Chunk = tuple[np.ndarray, np.ndarray, np.ndarray]  # (row ids, column ids, similarities) of some pairs


@dataclass(frozen=True)
class Pairs:
    """All pairs (i < j) of vectors with similarity >= threshold, sorted by (i, j).

    Example:
        >>> pairs = similar_pairs(vectors, 0.95)
        >>> list(zip(pairs.i, pairs.j, pairs.similarity))[:1]
        [(3, 17, 0.982)]
    """

    i: np.ndarray  # int64
    j: np.ndarray  # int64
    similarity: np.ndarray  # float32

    def __len__(self) -> int:
        return len(self.i)


def similar_pairs(
    vectors: np.ndarray,
    threshold: float,
    *,
    method: Literal["auto", "exact", "ivf"] = "auto",
    exact_limit: int | None = None,
    nprobe: int | None = None,
    use_gpu: bool | None = None,
    query_batch: int = 16384,
) -> Pairs:
    """Every pair of rows of `vectors` (unit float32 rows) whose inner product is >= `threshold`.

    `method="auto"` is exact up to `exact_limit` vectors (CPU_EXACT_LIMIT, or GPU_EXACT_LIMIT on a GPU) and
    IVF beyond; `nprobe` (IVF lists probed per vector, default NPROBE) trades speed for recall. `use_gpu`:
    None = when faiss sees a GPU. Threads: faiss' OpenMP default (`faiss.omp_set_num_threads` to change).
    The same input gives the same pairs.

    Example:
        >>> x = np.eye(3, dtype=np.float32); x[2] = [0.96, 0.28, 0.0]
        >>> similar_pairs(x, 0.95).i.tolist(), similar_pairs(x, 0.95).j.tolist()
        ([0], [2])
    """
    x = _as_matrix(vectors)
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    if method not in ("auto", "exact", "ivf"):
        raise ValueError(f"method must be 'auto', 'exact' or 'ivf', got {method!r}")
    if query_batch < 1 or (nprobe is not None and nprobe < 1):
        raise ValueError("query_batch and nprobe must be >= 1")
    gpu = faiss.get_num_gpus() > 0 if use_gpu is None else use_gpu
    if gpu and faiss.get_num_gpus() == 0:
        raise ValueError("use_gpu=True but this faiss sees no GPU (faiss-cpu, or no CUDA device)")
    if method == "auto":
        limit = exact_limit if exact_limit is not None else (GPU_EXACT_LIMIT if gpu else CPU_EXACT_LIMIT)
        method = "exact" if len(x) <= limit else "ivf"
    if len(x) < 2:
        chunks: list[Chunk] = []
    elif gpu:
        chunks = list(_gpu_pairs(x, threshold, method, nprobe or NPROBE, query_batch))
    elif method == "exact":
        chunks = list(_exact_pairs(x, threshold, query_batch))
    else:
        chunks = list(_ivf_pairs(x, threshold, nprobe or NPROBE, query_batch))
    return _collect(chunks, threshold)


def _as_matrix(vectors: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array [n, dim], got shape {x.shape}")
    return x


def _collect(chunks: list[Chunk], threshold: float) -> Pairs:
    """One sorted, duplicate-free Pairs from pairs found in any order and from either side."""
    if not chunks:
        return Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    rows = np.concatenate([c[0] for c in chunks]).astype(np.int64, copy=False)
    cols = np.concatenate([c[1] for c in chunks]).astype(np.int64, copy=False)
    sims = np.concatenate([c[2] for c in chunks]).astype(np.float32, copy=False)
    keep = (rows != cols) & (sims >= np.float32(threshold))
    i, j, sims = np.minimum(rows, cols)[keep], np.maximum(rows, cols)[keep], sims[keep]
    order = np.lexsort((-sims, j, i))  # by (i, j), the highest similarity first among repeats
    i, j, sims = i[order], j[order], sims[order]
    first = np.ones(len(i), bool)
    first[1:] = (i[1:] != i[:-1]) | (j[1:] != j[:-1])
    return Pairs(i[first], j[first], sims[first])


def _radius(threshold: float) -> float:
    """faiss range_search on inner products keeps sim > radius: the float32 just below makes it sim >= threshold."""
    return float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))


def _exact_pairs(x: np.ndarray, threshold: float, query_batch: int) -> Iterator[Chunk]:
    """Each batch of rows is added to the index, then searched against it: pairs (earlier row, row), once each."""
    index = faiss.IndexFlatIP(x.shape[1])
    for start in range(0, len(x), query_batch):
        stop = min(len(x), start + query_batch)
        index.add(x[start:stop])
        lims, sims, cols = index.range_search(x[start:stop], _radius(threshold))
        rows = np.repeat(np.arange(start, stop), np.diff(lims).astype(np.int64))
        lower = cols < rows
        yield cols[lower], rows[lower], sims[lower]


def default_nlist(n: int) -> int:
    """IVF lists for `n` vectors: LISTS_PER_SQRT_N * sqrt(n), with TRAIN_POINTS_PER_LIST vectors to train each.

    Example:
        >>> default_nlist(1_000_000)
        4000
    """
    return max(1, min(round(LISTS_PER_SQRT_N * math.sqrt(n)), n // TRAIN_POINTS_PER_LIST))


def _train_centroids(x: np.ndarray, nlist: int, gpu: bool = False) -> np.ndarray:
    """Spherical k-means centroids [nlist, dim] from a fixed-seed sample of TRAIN_POINTS_PER_LIST * nlist rows."""
    size = min(len(x), TRAIN_POINTS_PER_LIST * nlist)
    sample = x[np.sort(np.random.default_rng(SEED).choice(len(x), size, replace=False))]
    kmeans = faiss.Kmeans(
        x.shape[1],
        nlist,
        niter=KMEANS_ITERATIONS,
        seed=SEED,
        spherical=True,
        min_points_per_centroid=min(TRAIN_POINTS_PER_LIST, size // nlist),
        gpu=gpu,
        verbose=False,
    )
    kmeans.train(sample)
    return kmeans.centroids


def _ivf_pairs(x: np.ndarray, threshold: float, nprobe: int, query_batch: int) -> Iterator[Chunk]:
    """IVF-Flat with the scan grouped by list: the vectors probing a list times its members, one matmul."""
    nlist = default_nlist(len(x))
    nprobe = min(nprobe, nlist)
    quantizer = faiss.IndexFlatIP(x.shape[1])
    quantizer.add(_train_centroids(x, nlist))
    probes = np.empty((len(x), nprobe), np.int64)  # [n, nprobe] nearest lists, the first is the vector's own
    for start in range(0, len(x), query_batch):
        probes[start : start + query_batch] = quantizer.search(x[start : start + query_batch], nprobe)[1]
    members_by_list = np.argsort(probes[:, 0], kind="stable")
    member_bounds = np.searchsorted(probes[members_by_list, 0], np.arange(nlist + 1))
    probe_order = np.argsort(probes.ravel(), kind="stable")
    probing_by_list = probe_order // nprobe  # the vector of each (vector, list) probe, grouped by list
    probe_bounds = np.searchsorted(probes.ravel()[probe_order], np.arange(nlist + 1))
    for list_id in range(nlist):
        members = members_by_list[member_bounds[list_id] : member_bounds[list_id + 1]]
        if not len(members):
            continue
        member_vectors = x[members]
        probing = probing_by_list[probe_bounds[list_id] : probe_bounds[list_id + 1]]
        for start in range(0, len(probing), query_batch):
            queries = probing[start : start + query_batch]
            sims = x[queries] @ member_vectors.T  # [queries, members]
            rows, cols = np.nonzero(sims >= np.float32(threshold))
            yield queries[rows], members[cols], sims[rows, cols]


def _gpu_pairs(x: np.ndarray, threshold: float, method: str, nprobe: int, query_batch: int) -> Iterator[Chunk]:
    """Pairs from k-NN searches on GPU 0 (one process per GPU): a flat index, or IVF-Flat for `method="ivf"`.

    Untested here: the build machine has no GPU. faiss GPU indexes (flat and IVF) have no range_search, so
    each query asks for GPU_FIRST_K neighbours; the queries whose k-th neighbour is still >= threshold are
    asked again with k doubled, up to GPU_MAX_K (faiss' GPU limit); a vector with more near-duplicates than
    that keeps its GPU_MAX_K closest, and the pairs it misses are usually recovered through union-find.
    """
    resources = faiss.StandardGpuResources()
    if method == "exact":
        cpu_index: faiss.Index = faiss.IndexFlatIP(x.shape[1])
    else:
        nlist = default_nlist(len(x))
        quantizer = faiss.IndexFlatIP(x.shape[1])
        quantizer.add(_train_centroids(x, nlist, gpu=True))
        cpu_index = faiss.IndexIVFFlat(quantizer, x.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
        cpu_index.nprobe = min(nprobe, nlist)
    index = faiss.index_cpu_to_gpu(resources, 0, cpu_index)
    index.add(x)
    saturated = 0
    for start in range(0, len(x), query_batch):
        pending, k = np.arange(start, min(len(x), start + query_batch)), min(GPU_FIRST_K, len(x))
        while len(pending):
            sims, cols = index.search(x[pending], k)  # [pending, k], best first
            full = sims[:, -1] >= threshold
            last_round = k >= min(GPU_MAX_K, len(x))
            done = np.ones(len(pending), bool) if last_round else ~full
            saturated += int(full.sum()) if last_round and k < len(x) else 0
            rows = np.broadcast_to(pending[:, None], cols.shape)[done]
            sims, cols = sims[done], cols[done]
            found = (cols >= 0) & (sims >= threshold)
            yield rows[found], cols[found], sims[found]
            pending, k = pending[~done], min(2 * k, GPU_MAX_K, len(x))
    if saturated:
        logger.warning(
            "%d vectors have more than %d neighbours >= %s; kept the closest", saturated, GPU_MAX_K, threshold
        )


class UnionFind:
    """Disjoint sets over 0..n-1, numpy-backed: union by size, path compression, vectorised bulk unions.

    Example:
        >>> sets = UnionFind(5)
        >>> sets.union_many(np.array([0, 3]), np.array([1, 1]))
        >>> sets.find(3) == sets.find(0), sets.find(2) == sets.find(0)
        (True, False)
    """

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)
        self.size = np.ones(n, dtype=np.int64)  # meaningful at roots only

    def __len__(self) -> int:
        return len(self.parent)

    def find(self, x: int) -> int:
        """The root of `x`'s set; compresses the path from `x`."""
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return int(root)

    def union(self, a: int, b: int) -> bool:
        """Merges the sets of `a` and `b` (the smaller under the larger); False when they were one set."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return True

    def union_many(self, a: np.ndarray, b: np.ndarray) -> None:
        """`union(a[k], b[k])` for every k, in rounds of vectorised hooking and pointer jumping.

        Each round hooks, for every pair still in two sets, the root that is smaller (by size, then id)
        under the other. Hooks only go up that order, so no cycles form; when a root gets several hooks,
        any one of them is enough: the rest are merged in the next round.
        """
        a, b = np.asarray(a, np.int64).ravel(), np.asarray(b, np.int64).ravel()
        if a.shape != b.shape:
            raise ValueError(f"union_many needs two arrays of one length, got {a.shape} and {b.shape}")
        roots = self.roots()
        while len(a):
            ra, rb = roots[a], roots[b]
            apart = ra != rb
            a, b, ra, rb = a[apart], b[apart], ra[apart], rb[apart]
            a_below = (self.size[ra] < self.size[rb]) | ((self.size[ra] == self.size[rb]) & (ra < rb))
            self.parent[np.where(a_below, ra, rb)] = np.where(a_below, rb, ra)
            roots = self.roots()
            self.size = np.bincount(roots, minlength=len(roots))

    def roots(self) -> np.ndarray:
        """The root of every element, int64 [n]; fully compresses the forest."""
        parent = self.parent
        while True:
            grandparent = parent[parent]
            if np.array_equal(grandparent, parent):
                break
            parent = grandparent
        self.parent = parent
        return parent.copy()


@dataclass(frozen=True)
class DuplicateClusters:
    """Near-duplicate clusters over owners (samples), one entry per owner.

    Example:
        >>> clusters = find_near_duplicates(vectors, owners, 0.95)
        >>> removed = np.flatnonzero(~clusters.keeper)  # each a near-copy of owner clusters.cluster[k]
    """

    cluster: np.ndarray  # int64: the keeper's owner index; the owner's own index for keepers and singletons
    keeper: np.ndarray  # bool: True for singletons and the one kept member of each cluster
    similarity: np.ndarray  # float32: highest similarity of a pair linking the owner to another; NaN if none

    @property
    def n_duplicates(self) -> int:
        """Owners removed (cluster members other than their keeper)."""
        return int((~self.keeper).sum())


def find_near_duplicates(
    vectors: np.ndarray,
    owners: np.ndarray,
    threshold: float,
    *,
    quality: np.ndarray | None = None,
    n_owners: int | None = None,
    **search_options,
) -> DuplicateClusters:
    """Clusters owners linked by any pair of their vectors with similarity >= `threshold`; keeps one per cluster.

    `owners[k]` is the owner (sample) of `vectors[k]`, numbered by the caller in priority order; two vectors of
    one owner never link. Clusters are connected components (union-find), so chains join. The keeper is the
    owner with the highest `quality` (per owner; NaN ranks lowest), ties and `quality=None` going to the
    smallest owner index. Owners without vectors are singletons. `search_options` go to `similar_pairs`.

    Example:
        >>> x = np.array([[1, 0], [0.96, 0.28], [0, 1]], np.float32)
        >>> clusters = find_near_duplicates(x, np.array([0, 1, 2]), 0.95, quality=np.array([0.2, 0.9, 0.5]))
        >>> clusters.cluster.tolist(), clusters.keeper.tolist()
        ([1, 1, 2], [False, True, True])
    """
    x = _as_matrix(vectors)
    if np.shape(owners) != (len(x),):
        raise ValueError(f"owners must hold one owner index per vector ({len(x)}), got shape {np.shape(owners)}")
    _check_owners(owners, quality, n_owners)  # before the search, which is the slow part
    pairs = _pairs_with_exact_copies_collapsed(x, threshold, **search_options)
    return cluster_pairs(pairs, owners, quality=quality, n_owners=n_owners)


def _pairs_with_exact_copies_collapsed(x: np.ndarray, threshold: float, **search_options: Any) -> Pairs:
    """`similar_pairs`, searching each distinct vector once: m identical vectors (one placeholder image repeated
    m times) would otherwise give m^2/2 pairs; here each copy is linked to its first occurrence (similarity 1)."""
    if len(x) < 2:
        return similar_pairs(x, threshold, **search_options)
    rows = x.view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).ravel()
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    if len(first) == len(x):
        return similar_pairs(x, threshold, **search_options)
    found = similar_pairs(x[first], threshold, **search_options)
    representative = first[inverse.ravel()]
    copies = np.flatnonzero(representative != np.arange(len(x)))
    i = np.concatenate([first[found.i], representative[copies]])
    j = np.concatenate([first[found.j], copies])
    i, j = np.minimum(i, j), np.maximum(i, j)
    similarity = np.concatenate([found.similarity, np.ones(len(copies), np.float32)])
    order = np.lexsort((j, i))
    return Pairs(i[order], j[order], similarity[order])


def cluster_pairs(
    pairs: Pairs, owners: np.ndarray, *, quality: np.ndarray | None = None, n_owners: int | None = None
) -> DuplicateClusters:
    """The clusters and keepers of `find_near_duplicates`, from pairs of vectors already found.

    Example:
        >>> pairs = Pairs(np.array([0]), np.array([2]), np.array([0.97], np.float32))
        >>> cluster_pairs(pairs, np.array([0, 1, 2])).cluster.tolist()
        [0, 1, 0]
    """
    owners, rank = _check_owners(owners, quality, n_owners)
    n_owners = len(rank)
    a, b = owners[pairs.i], owners[pairs.j]
    other = a != b  # two images of one sample never make it a duplicate of itself
    a, b, sims = a[other], b[other], pairs.similarity[other]
    sets = UnionFind(n_owners)
    sets.union_many(a, b)
    roots = sets.roots()

    index = np.arange(n_owners)
    unknown = np.isnan(rank)
    order = np.lexsort((index, -np.where(unknown, 0.0, rank), unknown, roots))  # per set: known, best, first
    first = np.ones(n_owners, bool)
    first[1:] = roots[order][1:] != roots[order][:-1]
    keeper_of_root = np.empty(n_owners, np.int64)
    keeper_of_root[roots[order][first]] = order[first]
    cluster = keeper_of_root[roots]
    similarity = np.full(n_owners, np.nan, np.float32)
    np.fmax.at(similarity, np.concatenate([a, b]), np.concatenate([sims, sims]))
    return DuplicateClusters(cluster=cluster, keeper=cluster == index, similarity=similarity)


def _check_owners(
    owners: np.ndarray, quality: np.ndarray | None, n_owners: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """(owners as int64, the quality of each of the n_owners owners as float64, zeros without quality)."""
    owners = np.asarray(owners)
    if owners.ndim != 1 or (len(owners) and owners.dtype.kind not in "iu"):
        raise ValueError(f"owners must be a 1-D array of integers, got {owners.dtype} {owners.shape}")
    owners = owners.astype(np.int64, copy=False)
    if n_owners is None:
        n_owners = len(quality) if quality is not None else int(owners.max()) + 1 if len(owners) else 0
    if len(owners) and (owners.min() < 0 or owners.max() >= n_owners):
        raise ValueError(f"owner indices must lie in [0, {n_owners}), got {owners.min()}..{owners.max()}")
    rank = np.zeros(n_owners) if quality is None else np.asarray(quality, np.float64)
    if rank.shape != (n_owners,):
        raise ValueError(f"quality must hold one value per owner ({n_owners}), got shape {rank.shape}")
    return owners, rank


__all__ = [
    "DuplicateClusters",
    "Pairs",
    "UnionFind",
    "cluster_pairs",
    "default_nlist",
    "find_near_duplicates",
    "similar_pairs",
]
