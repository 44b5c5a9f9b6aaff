"""Reading sources: Hub ids with config and split (prepared or streamed), `hf://` URLs, webdataset shards.

Hub sources are real repos on the loopback Hub, pushed with `datasets.push_to_hub` as users publish them.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import datasets
import pytest
from PIL import Image as PILImage

from mmsieve.cli import main
from mmsieve.documents import document_to_sample
from mmsieve.filters import HygieneFilter
from mmsieve.hub.dataset_repo import build_dataset_repo
from mmsieve.hub.sources import SourceError, open_source
from mmsieve.readers import SampleReader
from mmsieve.runner import run_steps


FEATURES = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})


def _jpeg(photo: bytes, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    PILImage.open(io.BytesIO(photo)).convert("RGB").resize(size).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def _captions(photos: dict[str, bytes], n: int, tag: str) -> datasets.Dataset:
    """`n` caption rows with real JPEGs (every 5th image is 8 px wide: the hygiene filter drops it)."""
    names = sorted(photos)
    rows = {
        "image": [
            {"bytes": _jpeg(photos[names[i % len(names)]], (8 if i % 5 == 4 else 48, 40)), "path": f"{tag}-{i}.jpg"}
            for i in range(n)
        ],
        "caption": [f"{tag} caption number {i}." for i in range(n)],
    }
    return datasets.Dataset.from_dict(rows, features=FEATURES)


@pytest.fixture
def hub_source(hub: Any, photos: dict[str, bytes]) -> tuple[str, dict[str, datasets.Dataset]]:
    """A Hub dataset with two configs; `shapes` has train (4 parquet files) and test splits."""
    repo = hub.new_repo_id("captions")
    local = {"photos": _captions(photos, 6, "photo"), "shapes": _captions(photos, 23, "shape")}
    local["photos"].push_to_hub(repo, config_name="photos")
    datasets.DatasetDict({"train": local["shapes"], "test": _captions(photos, 5, "test")}).push_to_hub(
        repo, config_name="shapes", num_shards={"train": 4, "test": 1}
    )
    return repo, local


def _docs(reader: SampleReader, world_size: int) -> list[list[Any]]:
    return [
        [document_to_sample(doc) for doc in reader.run(rank=rank, world_size=world_size)] for rank in range(world_size)
    ]


def test_hub_config_and_split_prepared_and_streamed(hub_source: tuple[str, dict[str, datasets.Dataset]]) -> None:
    repo, local = hub_source
    expected = local["shapes"]["caption"]
    prepared = open_source(repo, config="shapes", split="train")
    streamed = open_source(repo, config="shapes", split="train", streaming=True)
    assert isinstance(streamed, datasets.IterableDataset) and streamed.n_shards == 4
    assert prepared["caption"] == expected and [row["caption"] for row in streamed] == expected
    for source in (prepared, streamed):
        assert source.features["image"] == datasets.Image(decode=False)  # encoded bytes, never PIL objects
    first = next(iter(streamed))["image"]
    assert first["bytes"] == local["shapes"].cast_column("image", datasets.Image(decode=False))[0]["image"]["bytes"]
    assert open_source(repo, config="shapes", split="test", streaming=True).n_shards == 1
    assert open_source(repo, config="photos")["caption"] == local["photos"]["caption"]  # its only split
    with pytest.raises(SourceError, match="split.*validation"):
        open_source(repo, config="shapes", split="validation", streaming=True)


def test_streaming_reader_splits_files_across_tasks(hub_source: tuple[str, dict[str, datasets.Dataset]]) -> None:
    repo, local = hub_source
    expected = local["shapes"]["caption"]
    reader = SampleReader(repo, config="shapes", split="train", streaming=True, batch_size=4)
    by_task = _docs(reader, 3)  # 4 files over 3 tasks: 2, 1, 1 files
    assert reader.num_rows is None and reader.task_count(64) == 64
    assert [s.text for task in by_task for s in task] == expected
    ids = [s.id for task in by_task for s in task]
    assert ids[0] == "0:0" and len(set(ids)) == len(expected)
    assert {s.id.split(":")[0] for s in by_task[0]} == {"0", "1"} and {s.id.split(":")[0] for s in by_task[2]} == {"3"}
    assert [s.id for s in _docs(reader, 1)[0]] == ids  # ids do not depend on the task count

    # more tasks than files: every task reads the stream and keeps every 6th row
    by_row = _docs(reader, 6)
    assert sorted(s.id for task in by_row for s in task) == sorted(ids)
    assert [s.text for s in by_row[1]] == expected[1::6]
    # a limit takes the first rows of the stream, in file order, whatever the task count
    limited = SampleReader(repo, config="shapes", split="train", streaming=True, limit=7)
    assert sorted((s.id, s.text) for task in _docs(limited, 2) for s in task) == sorted(
        zip(ids[:7], expected[:7], strict=True)
    )


def test_streamed_run_equals_prepared_run(hub_source: tuple[str, dict[str, datasets.Dataset]], tmp_path: Path) -> None:
    repo, _ = hub_source
    options = {"config": "shapes", "split": "train", "tasks": 3, "workers": 1}
    prepared = run_steps(repo, tmp_path / "prepared", [HygieneFilter()], **options)
    streamed = run_steps(repo, tmp_path / "streamed", [HygieneFilter()], streaming=True, **options)
    assert streamed["streaming"] is True and "streaming" not in prepared
    for key in ("rows_in", "kept", "removed_by_reason", "kind", "format"):
        assert streamed[key] == prepared[key]
    assert prepared["removed_by_reason"] == {"image_too_small": 4}

    def rows(run: Path, split: str) -> list[str]:
        return datasets.load_dataset("parquet", data_dir=str(run / split), split="train")["caption"]

    for split in ("kept", "removed"):
        assert sorted(rows(tmp_path / "streamed", split)) == sorted(rows(tmp_path / "prepared", split))


def test_hf_urls_files_globs_folders_and_revisions(hub_source: tuple[str, dict[str, datasets.Dataset]]) -> None:
    repo, local = hub_source
    expected = local["shapes"]["caption"]
    url = f"hf://datasets/{repo}"
    assert open_source(f"{url}/shapes/train-*.parquet")["caption"] == expected
    assert [r["caption"] for r in open_source(f"{url}@main/shapes/train-*.parquet", streaming=True)] == expected
    assert open_source(f"{url}/shapes/train-00002-of-00004.parquet")["caption"] == expected[12:18]
    assert open_source(f"{url}/shapes", split="test")["caption"] == [f"test caption number {i}." for i in range(5)]
    assert open_source(url, config="photos")["caption"] == local["photos"]["caption"]
    with pytest.raises(SourceError, match="end a glob"):
        open_source(f"{url}/shapes/*")
    with pytest.raises(SourceError, match="only dataset repos"):
        open_source(f"hf://{repo}/model.safetensors")
    with pytest.raises(SourceError, match="hf://datasets/ORG/NAME"):
        open_source("hf://datasets/just-a-name")


def test_cli_streams_an_hf_url(hub_source: tuple[str, dict[str, datasets.Dataset]], tmp_path: Path) -> None:
    repo, _ = hub_source
    source = f"hf://datasets/{repo}/shapes/train-*.parquet"
    assert main(["filter", "-i", source, "-o", str(tmp_path / "out"), "--streaming", "--tasks", "2"]) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert (stats["rows_in"], stats["kept"], stats["tasks"], stats["streaming"]) == (23, 19, 2, True)


def _webdataset(folder: Path, photos: dict[str, bytes], shards: int, per_shard: int) -> Path:
    """webdataset shards: `KEY.jpg` + `KEY.txt` members; the last sample of each shard has a truncated JPEG."""
    folder.mkdir(parents=True)
    names = sorted(photos)
    for shard in range(shards):
        with tarfile.open(folder / f"shard-{shard:05d}.tar", "w") as tar:
            for i in range(per_shard):
                jpeg = _jpeg(photos[names[i % len(names)]], (64, 48))
                members = {"jpg": jpeg[: len(jpeg) // 2] if i == per_shard - 1 else jpeg, "txt": f"s{shard} i{i}"}
                for extension, payload in members.items():
                    data = payload if isinstance(payload, bytes) else payload.encode()
                    info = tarfile.TarInfo(f"sample{shard:02d}{i:03d}.{extension}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return folder


def test_webdataset_shards_prepared_and_streamed(photos: dict[str, bytes], tmp_path: Path) -> None:
    source = _webdataset(tmp_path / "wds", photos, shards=3, per_shard=4)
    prepared = open_source(str(source))
    assert prepared.features["jpg"] == datasets.Image(decode=False) and len(prepared) == 12
    streamed = open_source(str(source), streaming=True)
    assert streamed.n_shards == 3 and [r["txt"] for r in streamed] == prepared["txt"]
    for streaming in (False, True):
        out = tmp_path / f"run-{streaming}"
        stats = run_steps(str(source), out, [HygieneFilter()], tasks=2, streaming=streaming)
        assert (stats["format"], stats["columns"]) == ("caption", {"image": "jpg", "text": "txt"})
        assert (stats["rows_in"], stats["kept"], stats["removed_by_reason"]) == (12, 9, {"image_truncated": 3})
        kept = datasets.load_dataset("parquet", data_dir=str(out / "kept"), split="train")
        assert isinstance(kept.features["jpg"], datasets.Image)
        assert sorted(kept["txt"]) == sorted(f"s{s} i{i}" for s in range(3) for i in range(3))
    card = (build_dataset_repo(out, tmp_path / "repo") / "README.md").read_text()
    assert "| txt |" in card and str(tmp_path) not in card  # sample rows skip `__url__`, a local shard path


def test_local_and_disk_sources_stream_too(caption_source: Path, tmp_path: Path) -> None:
    prepared = open_source(str(caption_source))
    assert open_source(str(caption_source), streaming=True).n_shards == 2
    prepared.save_to_disk(str(tmp_path / "disk"), num_shards=3)
    from_disk = open_source(str(tmp_path / "disk"), streaming=True)
    assert from_disk.n_shards == 3 and [r["caption"] for r in from_disk] == prepared["caption"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no parquet, jsonl, json, csv or webdataset"):
        open_source(str(tmp_path / "empty"))
