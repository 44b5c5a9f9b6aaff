"""An exact inner-product index over unit vectors (benchmark test images), saved as two plain files.

Exhaustive search (faiss `IndexFlatIP`) is exact and fast enough for decontamination: the reference side,
the benchmark test sets, holds at most ~1M images, while the training set is only queried.

    folder/vectors.npy   float32 [count, dim] (`np.save`, no pickles)
    folder/index.json    {"format": "mmsieve.vector_index", "version": 1, "dim", "count", "metric"}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


try:
    import faiss
except ImportError as err:  # faiss is the `dedup` extra
    raise ImportError("mmsieve.dedup needs faiss: pip install 'mmsieve[dedup]' (faiss-cpu), or faiss-gpu") from err
import numpy as np


FORMAT = "mmsieve.vector_index"
FORMAT_VERSION = 1
METRIC = "inner_product"
SEARCH_BATCH = 65536  # queries per faiss call: bounds the [batch, k] result buffers
GPU_MAX_K = 2048  # the largest k faiss GPU k-NN supports


class VectorIndex:
    """Exact k-NN by inner product (cosine on L2-normalised rows) over a fixed set of float32 vectors.

    `use_gpu`: None = on every GPU faiss sees (each holds a replica), else CPU; False forces the CPU.

    Example:
        >>> index = VectorIndex(test_vectors)  # [n, 512] unit rows
        >>> sims, ids = index.search(train_vectors, k=1)  # [m, 1] each
        >>> index.save("bench_index/vectors"); VectorIndex.load("bench_index/vectors").search(train_vectors)
    """

    def __init__(self, vectors: np.ndarray, *, use_gpu: bool | None = None) -> None:
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] < 1:
            raise ValueError(f"vectors must be a 2-D array [n, dim] with dim >= 1, got shape {x.shape}")
        self.dim: int = x.shape[1]
        self._cpu_index = faiss.IndexFlatIP(self.dim)
        self._cpu_index.add(x)
        gpu = faiss.get_num_gpus() > 0 if use_gpu is None else use_gpu
        if gpu and faiss.get_num_gpus() == 0:
            raise ValueError("use_gpu=True but this faiss sees no GPU (faiss-cpu, or no CUDA device)")
        # GPU path (untested here: no GPU on the build machine): replicas of the flat index, queries split.
        self._index = faiss.index_cpu_to_all_gpus(self._cpu_index) if gpu else self._cpu_index
        self._max_k = GPU_MAX_K if gpu else None

    def __len__(self) -> int:
        return int(self._cpu_index.ntotal)

    def __repr__(self) -> str:
        return f"VectorIndex({len(self)} vectors, dim={self.dim})"

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The `k` most similar indexed vectors of each query, best first: (similarities, ids), each [m, k].

        Similarities are float32, ids int64 rows of the indexed vectors; where fewer than `k` vectors are
        indexed, the missing places hold -inf and -1.

        Example:
            >>> sims, ids = VectorIndex(np.eye(3, dtype=np.float32)).search(np.eye(3, dtype=np.float32)[:1], k=2)
            >>> ids[0, 0], float(sims[0, 0])
            (0, 1.0)
        """
        if k < 1 or (self._max_k is not None and k > self._max_k):
            raise ValueError(f"k must be in [1, {self._max_k or 'n'}], got {k}")
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.size == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be [m, {self.dim}], got shape {q.shape}")
        sims = np.empty((len(q), k), np.float32)
        ids = np.empty((len(q), k), np.int64)
        for start in range(0, len(q), SEARCH_BATCH):
            stop = start + SEARCH_BATCH
            sims[start:stop], ids[start:stop] = self._index.search(q[start:stop], k)
        sims[ids < 0] = -np.inf
        return sims, ids

    def vectors(self) -> np.ndarray:
        """A copy of the indexed vectors, float32 [count, dim]."""
        return self._cpu_index.reconstruct_n(0, len(self)).reshape(len(self), self.dim)

    def save(self, folder: str | Path) -> None:
        """Writes `vectors.npy` then `index.json` into `folder` (created if missing).

        Example:
            >>> VectorIndex(vectors).save("bench_index/vectors")
        """
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "vectors.npy", self.vectors(), allow_pickle=False)
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "dim": self.dim, "count": len(self), "metric": METRIC}
        (out / "index.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path, *, use_gpu: bool | None = None) -> VectorIndex:
        """Reads a folder written by `save`, checking its index.json against the vectors.

        Example:
            >>> index = VectorIndex.load("bench_index/vectors")
        """
        where = Path(folder)
        meta_path, vectors_path = where / "index.json", where / "vectors.npy"
        if not meta_path.is_file() or not vectors_path.is_file():
            raise FileNotFoundError(
                f"{where}: not a vector index (expected index.json and vectors.npy, written by VectorIndex.save)"
            )
        meta = _read_meta(meta_path)
        try:
            vectors = np.load(vectors_path, allow_pickle=False)
        except ValueError as error:  # a pickled or damaged file
            raise ValueError(f"{vectors_path}: not a plain float32 .npy array ({error})") from error
        if vectors.dtype != np.float32 or vectors.shape != (meta["count"], meta["dim"]):
            raise ValueError(
                f"{vectors_path}: {vectors.dtype} {vectors.shape}, but index.json says float32 "
                f"({meta['count']}, {meta['dim']}); the folder is damaged: save the index again"
            )
        return cls(vectors, use_gpu=use_gpu)


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: unreadable index.json ({error})") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} index.json")
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format version {meta.get('version')!r}, this mmsieve reads {FORMAT_VERSION}")
    if meta.get("metric") != METRIC:
        raise ValueError(f"{path}: metric {meta.get('metric')!r}, this index searches by {METRIC}")
    for key in ("dim", "count"):
        if not isinstance(meta.get(key), int) or meta[key] < 0:
            raise ValueError(f"{path}: {key} must be a non-negative integer, got {meta.get(key)!r}")
    return meta


__all__ = ["VectorIndex"]
