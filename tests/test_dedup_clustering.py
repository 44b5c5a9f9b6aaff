"""Near-duplicate clustering (faiss pairs + union-find) and the reference VectorIndex, on synthetic vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmsieve.dedup.clustering import UnionFind, cluster_pairs, find_near_duplicates, similar_pairs
from mmsieve.dedup.vector_index import VectorIndex


THRESHOLD = 0.9


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def planted(n: int = 4000, dim: int = 128, groups: int = 120, seed: int = 0) -> tuple[np.ndarray, list[set[int]]]:
    """Random unit vectors; `groups` of them get 1-3 copies at cosine ~0.97-0.995. Returns (vectors, groups)."""
    rng = np.random.default_rng(seed)
    x = unit(rng.standard_normal((n, dim)))
    order = rng.permutation(n)
    planted_groups, used = [], groups
    for base in order[:groups]:
        copies = order[used : used + rng.integers(1, 4)]
        used += len(copies)
        for copy in copies:
            x[copy] = unit(x[base] + rng.uniform(0.1, 0.25) * unit(rng.standard_normal(dim)))
        planted_groups.append({int(base), *map(int, copies)})
    return x, planted_groups


def brute_force_pairs(x: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    i, j = np.nonzero(np.triu(x @ x.T >= threshold, k=1))
    return set(zip(i.tolist(), j.tolist()))


def components(cluster: np.ndarray) -> list[set[int]]:
    groups: dict[int, set[int]] = {}
    for owner, keeper in enumerate(cluster.tolist()):
        groups.setdefault(keeper, set()).add(owner)
    return sorted((g for g in groups.values() if len(g) > 1), key=min)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, list[set[int]]]:
    return planted()


@pytest.mark.parametrize(("method", "query_batch"), [("exact", 16384), ("exact", 700), ("ivf", 16384), ("ivf", 50)])
def test_planted_pairs_and_clusters_are_recovered_exactly(data, method, query_batch):
    x, groups = data
    truth = brute_force_pairs(x, THRESHOLD)
    assert len(truth) >= sum(len(g) - 1 for g in groups)  # every copy, plus copy-copy pairs
    pairs = similar_pairs(x, THRESHOLD, method=method, query_batch=query_batch)
    found = list(zip(pairs.i.tolist(), pairs.j.tolist()))
    assert found == sorted(truth)  # precision and recall 1.0, sorted by (i, j), no repeats
    assert pairs.i.dtype == np.int64 and pairs.similarity.dtype == np.float32
    np.testing.assert_allclose(pairs.similarity, np.sum(x[pairs.i] * x[pairs.j], axis=1), atol=1e-5)

    clusters = find_near_duplicates(x, np.arange(len(x)), THRESHOLD, method=method)
    assert components(clusters.cluster) == sorted(groups, key=min)
    assert clusters.n_duplicates == sum(len(g) - 1 for g in groups)
    assert all(clusters.keeper[min(g)] for g in groups)  # no quality: the smallest index is kept

    again = similar_pairs(x, THRESHOLD, method=method, query_batch=query_batch)  # deterministic
    assert np.array_equal(again.i, pairs.i) and np.array_equal(again.similarity, pairs.similarity)


def test_auto_switches_to_ivf_above_the_exact_limit(data):
    x, _ = data
    exact = similar_pairs(x, THRESHOLD)
    ivf = similar_pairs(x, THRESHOLD, exact_limit=len(x) - 1)
    assert np.array_equal(exact.i, ivf.i) and np.array_equal(exact.j, ivf.j)


def test_multi_image_owners_link_and_same_owner_pairs_are_ignored():
    rng = np.random.default_rng(1)
    x = unit(rng.standard_normal((6, 32)))
    x[2] = unit(x[1] + 0.05 * x[0])  # owner 1's image copies owner 0's second image
    x[4] = unit(x[3] + 0.01 * x[5])  # owner 2 holds the same image twice: not a duplicate of itself
    owners = np.array([0, 0, 1, 2, 2, 3])
    clusters = find_near_duplicates(x, owners, THRESHOLD, n_owners=5)  # owner 4 has no vectors
    assert clusters.cluster.tolist() == [0, 0, 2, 3, 4]
    assert clusters.keeper.tolist() == [True, False, True, True, True]
    assert clusters.similarity[1] == pytest.approx(float(x[1] @ x[2]), abs=1e-5)
    assert np.isnan(clusters.similarity[[2, 3, 4]]).all()
    assert clusters.n_duplicates == 1
    from_pairs = cluster_pairs(similar_pairs(x, THRESHOLD), owners, n_owners=5)  # the same, in two steps
    assert np.array_equal(from_pairs.cluster, clusters.cluster)


@pytest.mark.parametrize(
    ("quality", "keeper"),
    [
        (None, 0),
        ([0.1, 0.9, 0.5, 0.0], 1),  # the highest quality
        ([0.2, 0.7, 0.7, 0.0], 1),  # a tie: the smallest index
        ([np.nan, 0.3, np.nan, 0.0], 1),  # NaN ranks lowest
        ([np.nan, np.nan, np.nan, 0.0], 0),  # all NaN: the smallest index
        ([np.nan, -np.inf, 0.0, 5.0], 2),  # owner 3 is a singleton: its quality does not count
        ([np.nan, -np.inf, np.nan, 0.0], 1),  # -inf is a value, NaN is below it
    ],
)
def test_keeper_is_highest_quality_then_smallest_index(quality, keeper):
    rng = np.random.default_rng(2)
    base, other = unit(rng.standard_normal((2, 16)))
    x = unit(np.stack([base, base + 0.05 * other, base - 0.05 * other, other]))
    q = None if quality is None else np.array(quality)
    clusters = find_near_duplicates(x, np.arange(4), THRESHOLD, quality=q)
    assert clusters.cluster.tolist() == [keeper, keeper, keeper, 3]
    assert clusters.keeper.tolist() == [k in (keeper, 3) for k in range(4)]
    assert np.isfinite(clusters.similarity[:3]).all() and np.isnan(clusters.similarity[3])


def test_transitive_chain_is_one_cluster():
    degrees = np.deg2rad([0.0, 15.0, 30.0, 90.0])  # neighbours at 15 degrees, ends at 30: cos 0.966 vs 0.866
    x = np.stack([np.cos(degrees), np.sin(degrees)], axis=1).astype(np.float32)
    threshold = float(np.cos(np.deg2rad(16.0)))
    pairs = similar_pairs(x, threshold)
    assert list(zip(pairs.i.tolist(), pairs.j.tolist())) == [(0, 1), (1, 2)]
    clusters = find_near_duplicates(x, np.arange(4), threshold)
    assert clusters.cluster.tolist() == [0, 0, 0, 3]


@pytest.mark.parametrize("method", ["exact", "ivf"])
def test_three_shards_concatenated_give_the_clusters_of_one_block(data, method):
    x, _ = data
    rng = np.random.default_rng(3)
    quality = rng.random(len(x))
    quality[rng.choice(len(x), 200, replace=False)] = np.nan
    one_block = find_near_duplicates(x, np.arange(len(x)), THRESHOLD, quality=quality, method=method)

    # 3 tasks each write their shard (owners numbered locally, rows in their own order); rank order restores it
    bounds = [0, 1300, 2900, len(x)]
    shard_vectors, shard_owners = [], []
    for rank in range(3):
        local = np.arange(bounds[rank + 1] - bounds[rank])[::-1]
        shard_vectors.append(x[bounds[rank] + local])
        shard_owners.append(local + bounds[rank])  # the caller offsets local owner ids by the shard start
    sharded = find_near_duplicates(
        np.concatenate(shard_vectors), np.concatenate(shard_owners), THRESHOLD, quality=quality, method=method
    )
    assert np.array_equal(sharded.cluster, one_block.cluster)
    assert np.array_equal(sharded.keeper, one_block.keeper)
    np.testing.assert_allclose(sharded.similarity, one_block.similarity, atol=1e-5)


@pytest.mark.parametrize("method", ["exact", "ivf"])
def test_a_pair_exactly_at_the_threshold_counts(method):
    x = np.array([[1.0, 0.0], [0.75, np.sqrt(1 - 0.75**2)], [0.0, 1.0]], np.float32)  # x0 . x1 == 0.75 exactly
    pairs = similar_pairs(x, 0.75, method=method)
    assert pairs.i.tolist() == [0] and pairs.j.tolist() == [1] and pairs.similarity.tolist() == [0.75]
    assert len(similar_pairs(x, float(np.nextafter(np.float32(0.75), np.float32(1))), method=method)) == 0


def test_empty_input_and_a_single_vector():
    empty = np.zeros((0, 8), np.float32)
    assert len(similar_pairs(empty, THRESHOLD)) == 0
    assert len(similar_pairs(empty, THRESHOLD, method="ivf")) == 0
    clusters = find_near_duplicates(empty, np.zeros(0, np.int64), THRESHOLD)
    assert len(clusters.cluster) == 0 and clusters.n_duplicates == 0
    clusters = find_near_duplicates(empty, np.zeros(0, np.int64), THRESHOLD, n_owners=2)
    assert clusters.cluster.tolist() == [0, 1] and clusters.keeper.all()

    one = unit(np.ones((1, 8)))
    assert len(similar_pairs(one, THRESHOLD, method="ivf")) == 0
    clusters = find_near_duplicates(one, np.array([0]), THRESHOLD)
    assert clusters.cluster.tolist() == [0] and clusters.keeper.tolist() == [True]


def test_bad_arguments_raise():
    x = unit(np.ones((3, 4)))
    with pytest.raises(ValueError, match="2-D"):
        similar_pairs(x[0], THRESHOLD)
    with pytest.raises(ValueError, match="method"):
        similar_pairs(x, THRESHOLD, method="hnsw")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="owners"):
        find_near_duplicates(x, np.array([0, 1]), THRESHOLD)
    with pytest.raises(ValueError, match="quality"):
        find_near_duplicates(x, np.arange(3), THRESHOLD, quality=np.ones(2), n_owners=3)


def test_union_many_matches_one_union_at_a_time():
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 3000, 2500), rng.integers(0, 3000, 2500)
    bulk, single = UnionFind(3000), UnionFind(3000)
    bulk.union_many(a, b)
    for left, right in zip(a.tolist(), b.tolist()):
        single.union(left, right)
    bulk_roots, single_roots = bulk.roots(), single.roots()
    # the same partition: each set of one is exactly a set of the other
    assert len(np.unique(bulk_roots)) == len(np.unique(single_roots))
    assert len(np.unique(np.stack([bulk_roots, single_roots]), axis=1)[0]) == len(np.unique(bulk_roots))
    assert all(single.find(int(k)) == single.find(int(single_roots[k])) for k in range(0, 3000, 97))


def test_vector_index_search_and_round_trip(tmp_path, data):
    x, _ = data
    index = VectorIndex(x[:3000])
    assert len(index) == 3000 and index.dim == x.shape[1]
    sims, ids = index.search(x[2990:], k=3)
    assert sims.shape == ids.shape == (len(x) - 2990, 3) and ids.dtype == np.int64
    assert ids[:10, 0].tolist() == list(range(2990, 3000))  # an indexed vector finds itself first
    np.testing.assert_allclose(sims[:10, 0], 1.0, atol=1e-5)
    assert (np.diff(sims, axis=1) <= 0).all()

    index.save(tmp_path / "vectors")
    assert json.loads((tmp_path / "vectors" / "index.json").read_text())["count"] == 3000
    loaded = VectorIndex.load(tmp_path / "vectors")
    sims2, ids2 = loaded.search(x[2990:], k=3)
    assert np.array_equal(sims, sims2) and np.array_equal(ids, ids2)

    nothing = loaded.search(np.zeros((0, x.shape[1]), np.float32), k=2)
    assert nothing[0].shape == nothing[1].shape == (0, 2)
    small = VectorIndex(x[:2])
    sims, ids = small.search(x[:1], k=4)
    assert ids[0].tolist()[2:] == [-1, -1] and np.isneginf(sims[0, 2:]).all()


def test_vector_index_bad_folder_says_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a vector index"):
        VectorIndex.load(tmp_path / "missing")
    VectorIndex(unit(np.ones((2, 4)))).save(tmp_path / "ok")
    meta_path = tmp_path / "ok" / "index.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "count": 3}))
    with pytest.raises(ValueError, match="damaged"):
        VectorIndex.load(tmp_path / "ok")
    meta_path.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        VectorIndex.load(tmp_path / "ok")
    meta_path.write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(ValueError, match="version"):
        VectorIndex.load(tmp_path / "ok")


def test_exact_copies_are_collapsed_before_the_search():
    """5,000 copies of one placeholder vector cost 4,999 links, not 12.5M pairs, and cluster as before."""
    rng = np.random.default_rng(0)
    other = rng.normal(size=(20, 64)).astype(np.float32)
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    placeholder = np.tile(other[:1], (5_000, 1))
    x = np.concatenate([other, placeholder])
    owners = np.arange(len(x))
    clusters = find_near_duplicates(x, owners, 0.95)
    assert clusters.n_duplicates == 5_000  # every copy of vector 0 joins its cluster; vector 0 is kept
    assert clusters.keeper[0] and not clusters.keeper[20:].any()
    assert (clusters.cluster[20:] == 0).all() and np.allclose(clusters.similarity[20:], 1.0)
    assert clusters.keeper[1:20].all()
