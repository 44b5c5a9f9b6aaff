"""Round trips through the loopback fake Hub with unmodified huggingface_hub and datasets clients.

These prove the fake is faithful enough for push/pull tests: real HTTP, real LFS uploads, real cache layout.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage


def _png(jpeg: bytes) -> bytes:
    """A small real PNG made from a photo."""
    buffer = io.BytesIO()
    PILImage.open(io.BytesIO(jpeg)).convert("RGB").resize((48, 32)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_push_to_hub_then_load_dataset(hub, photos: dict[str, bytes]) -> None:
    """Image + float score columns survive push_to_hub -> load_dataset; the token is sent and stored nowhere."""
    import datasets

    jpegs = [photos[name] for name in sorted(photos)[:2]]
    images = [*jpegs, _png(jpegs[0])]
    scores = [0.125, 0.5, 0.875]
    features = datasets.Features({"image": datasets.Image(), "score": datasets.Value("float64")})
    rows = {"image": [{"bytes": b, "path": None} for b in images], "score": scores}
    repo_id = hub.new_repo_id("images")
    datasets.Dataset.from_dict(rows, features=features).push_to_hub(repo_id)

    files = hub.files(repo_id)
    assert {".gitattributes", "README.md", "data/train-00000-of-00001.parquet"} == set(files)
    assert any(m == "PUT" and p.startswith("/_lfs/") for m, p in hub.requests)  # the parquet shard went through LFS
    assert not hub.is_private(repo_id)

    loaded = datasets.load_dataset(repo_id, split="train")
    assert loaded["score"] == scores
    assert [np.asarray(im).shape for im in loaded["image"]] == [
        np.asarray(PILImage.open(io.BytesIO(b))).shape for b in images
    ]
    raw = loaded.cast_column("image", datasets.Image(decode=False))
    assert [cell["bytes"] for cell in raw["image"]] == images

    token = os.environ["HF_TOKEN"]
    assert hub.tokens_seen == {token}
    assert not any(token.encode() in content for content in files.values())
    assert not any(token in path for _, path in hub.requests)


def test_push_to_hub_with_spawned_workers(hub) -> None:
    """num_proc=2 uploads shards from spawned workers, which only see os.environ."""
    import datasets

    rows = {"text": [f"row {i}" for i in range(20)], "score": [i / 20 for i in range(20)]}
    repo_id = hub.new_repo_id("sharded")
    datasets.Dataset.from_dict(rows).push_to_hub(repo_id, num_shards=2, num_proc=2)

    assert {p for p in hub.files(repo_id) if p.startswith("data/")} == {
        "data/train-00000-of-00002.parquet",
        "data/train-00001-of-00002.parquet",
    }
    assert sum(m == "PUT" and p.startswith("/_lfs/") for m, p in hub.requests) == 2  # one per worker's shard
    loaded = datasets.load_dataset(repo_id, split="train")
    assert sorted(zip(loaded["text"], loaded["score"])) == sorted(zip(rows["text"], rows["score"]))


def _model_folder(root: Path) -> Path:
    from safetensors.numpy import save_file

    root.mkdir()
    (root / "README.md").write_text("---\nlicense: apache-2.0\ntags:\n- loopback\n---\n# A tiny model\n")
    (root / "config.json").write_text('{"hidden_size": 4}\n')
    rng = np.random.default_rng(0)
    save_file({"weight": rng.standard_normal((64, 64)).astype(np.float32)}, str(root / "model.safetensors"))
    return root


def test_identical_upload_folder_makes_no_new_commit(hub, tmp_path: Path) -> None:
    from huggingface_hub import HfApi

    api, repo_id = HfApi(), hub.new_repo_id("model")
    api.create_repo(repo_id)
    folder = _model_folder(tmp_path / "model")
    first = api.upload_folder(repo_id=repo_id, folder_path=folder)
    commits = hub.commits(repo_id, "model")
    assert commits[0].oid == first.oid and len(commits) == 2  # the upload + the seeding `.gitattributes` commit

    second = api.upload_folder(repo_id=repo_id, folder_path=folder)
    assert second.oid == first.oid
    assert hub.commits(repo_id, "model") == commits
    api.create_repo(repo_id, exist_ok=True)  # 409 with url is accepted


def test_upload_folder_lfs_then_snapshot_download(hub, tmp_path: Path) -> None:
    from huggingface_hub import HfApi, snapshot_download

    api, repo_id = HfApi(), hub.new_repo_id("weights")
    api.create_repo(repo_id)
    folder = _model_folder(tmp_path / "model")
    api.upload_folder(repo_id=repo_id, folder_path=folder)

    (info,) = api.get_paths_info(repo_id, ["model.safetensors"])
    assert info.lfs is not None and info.lfs.size == (folder / "model.safetensors").stat().st_size
    local = Path(snapshot_download(repo_id, cache_dir=tmp_path / "cache"))
    for name in ("README.md", "config.json", "model.safetensors"):
        assert (local / name).read_bytes() == (folder / name).read_bytes()
        assert hub.files(repo_id, "model")[name] == (folder / name).read_bytes()


def test_create_repo_private(hub) -> None:
    from huggingface_hub import HfApi

    api, private_id, public_id = HfApi(), hub.new_repo_id("secret"), hub.new_repo_id("open")
    api.create_repo(private_id, repo_type="dataset", private=True)
    api.create_repo(public_id, repo_type="dataset")
    assert hub.is_private(private_id) and api.dataset_info(private_id).private
    assert not hub.is_private(public_id) and not api.dataset_info(public_id).private


def test_broken_readme_yaml_is_rejected(hub) -> None:
    from huggingface_hub import HfApi

    api, repo_id = HfApi(), hub.new_repo_id("card")
    api.create_repo(repo_id, repo_type="dataset")
    before = hub.commits(repo_id)
    with pytest.raises(ValueError, match="Invalid metadata in README.md"):
        api.upload_file(
            path_or_fileobj=b"---\nlicense: [unclosed\n---\n# Card\n",
            path_in_repo="README.md",
            repo_id=repo_id,
            repo_type="dataset",
        )
    assert hub.commits(repo_id) == before


def test_missing_things_raise_typed_errors(hub, tmp_path: Path) -> None:
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    api, repo_id = HfApi(), hub.new_repo_id("sparse")
    api.create_repo(repo_id, repo_type="dataset")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "missing.txt", repo_type="dataset", cache_dir=tmp_path)
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(repo_id, path_in_repo="no/such/dir", repo_type="dataset"))
    with pytest.raises(RevisionNotFoundError):
        api.dataset_info(repo_id, revision="no-such-branch")
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info(hub.new_repo_id("never-created"))
    assert api.file_exists(repo_id, ".gitattributes", repo_type="dataset")
    assert not api.file_exists(repo_id, "missing.txt", repo_type="dataset")
