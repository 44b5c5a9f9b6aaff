"""A run folder as a Hub dataset repo: card metadata, loadable splits with images, plots, determinism, shard bounds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard

from mmsieve.filters import HygieneFilter, UniFilterScorer
from mmsieve.hub.dataset_card import display_location, methods_used, render_dataset_card, size_category
from mmsieve.hub.dataset_repo import build_dataset_repo, score_columns
from mmsieve.models.tiny import build_tiny_unifilter
from mmsieve.runner import run_steps


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, caption_source: Path) -> Path:
    """Hygiene filter + tiny UniFilter scorer over the caption fixture, two tasks (two kept files)."""
    checkpoint = build_tiny_unifilter(tmp_path_factory.mktemp("uf") / "model")
    out = tmp_path_factory.mktemp("run") / "curated"
    steps = [HygieneFilter(), UniFilterScorer(str(checkpoint), batch_size=8)]
    run_steps(str(caption_source), out, steps, tasks=2, workers=1)
    return out


@pytest.fixture(scope="module")
def repo(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("repo") / "captions"
    return build_dataset_repo(
        run_dir, folder, include_removed=True, license="cc-by-4.0", repo_id="me/curated-captions"
    )


def _stats(run_dir: Path) -> dict:
    return json.loads((run_dir / "stats.json").read_text())


def _kept(run_dir: Path) -> datasets.Dataset:
    return datasets.load_dataset("parquet", data_dir=str(run_dir / "kept"), split="train")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _plot_links(card: str) -> list[str]:
    return re.findall(r"\]\((plots/[^)]+)\)", card)


def test_card_yaml_and_configs(repo: Path, run_dir: Path) -> None:
    from datasets.utils.metadata import MetadataConfigs

    card = DatasetCard.load(repo / "README.md")
    data = card.data.to_dict()
    assert isinstance(data, dict)
    assert data["license"] == "cc-by-4.0"
    assert data["task_categories"][0] == "image-to-text"
    assert data["size_categories"] == ["n<1K"]
    assert data["pretty_name"] == "curated-captions"
    assert {"mmsieve", "hygiene-filtering", "unifilter"} <= set(data["tags"])
    configs = MetadataConfigs.from_dataset_card_data(card.data)
    assert configs["default"]["data_files"] == [
        {"split": "train", "path": "data/train-*"},
        {"split": "removed", "path": "data/removed-*"},
    ]
    stats = _stats(run_dir)
    text = card.text
    assert f"**{stats['rows_in']}** rows" in text and f"**{stats['kept']}** were kept" in text
    for reason, count in stats["removed_by_reason"].items():
        assert f"| `{reason}` | {count} |" in text
    assert "`HygieneFilter`" in text and "`UniFilterScorer`" in text and "| `min_side` | 32 |" in text
    assert f"| datasets | {datasets.__version__} |" in text
    assert "wang2025unifilter" in text  # the method that ran is cited ...
    assert "pizzi2022sscd" not in text and "radford2021clip" not in text  # ... and only those
    assert "## Sample rows" in text and "image/jpeg" not in text


def test_load_dataset_returns_kept_rows_images_and_removed_split(repo: Path, run_dir: Path) -> None:
    loaded = datasets.load_dataset(str(repo))
    assert set(loaded) == {"train", "removed"}
    kept, stats = _kept(run_dir), _stats(run_dir)
    train = loaded["train"]
    assert len(train) == stats["kept"] == len(kept)
    assert isinstance(train.features["image"], datasets.Image)
    assert train["caption"] == kept["caption"]
    assert train["unifilter_score"] == pytest.approx(kept["unifilter_score"])
    ours = train.cast_column("image", datasets.Image(decode=False))["image"]
    theirs = kept.cast_column("image", datasets.Image(decode=False))["image"]
    assert [o["bytes"] for o in ours] == [t["bytes"] for t in theirs]  # the same image bytes, embedded
    assert all(o["path"] is None or "/" not in o["path"] for o in ours)
    assert train[0]["image"].size[0] > 0  # decodes to a picture
    removed = loaded["removed"]
    assert len(removed) == stats["removed"]
    assert sorted(set(removed["mmsieve_reason"])) == sorted(stats["removed_by_reason"])
    assert set(train["mmsieve_reason"]) == {None}  # shared schema: empty in train


def test_plots_referenced_exist_and_are_png(repo: Path) -> None:
    card = (repo / "README.md").read_text()
    links = _plot_links(card)
    assert "plots/unifilter_score.png" in links and "plots/mmsieve_reason.png" in links
    for link in links:
        data = (repo / link).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert b"Software" not in data and b"tIME" not in data  # no tool or time stamp in the metadata
    assert sorted(f"plots/{p.name}" for p in (repo / "plots").iterdir()) == sorted(links)


def test_score_columns_pick_scores_not_ids() -> None:
    from datasets import List, Value

    features = {
        "label": Value("int64"),
        "dup_cluster": Value("int64"),
        "clip_score": Value("float32"),
        "relevance_min": Value("int64"),
        "relevance_ratings": List(Value("int64")),
        "dup_similarity": Value("float32"),
        "unifilter_class": Value("int32"),
        "caption": Value("string"),
    }
    stats = {"steps": [{"step": "ScoreFilter", "parameters": {"column": "unifilter_class"}}]}
    assert score_columns(features, stats) == ["clip_score", "relevance_min", "dup_similarity", "unifilter_class"]


def test_building_twice_gives_identical_bytes(run_dir: Path, tmp_path: Path) -> None:
    first = build_dataset_repo(run_dir, tmp_path / "a", include_removed=True, max_shard_bytes=200_000)
    second = build_dataset_repo(run_dir, tmp_path / "elsewhere" / "b", include_removed=True, max_shard_bytes=200_000)
    assert _files(first) == _files(second)
    again = build_dataset_repo(run_dir, first, include_removed=True, max_shard_bytes=200_000)
    assert _files(again) == _files(second)
    (first / "NOTES.md").write_text("mine\n")
    without = build_dataset_repo(run_dir, first)  # a rebuild replaces our files only
    names = set(_files(without))
    assert "NOTES.md" in names and not any(n.startswith("data/removed") for n in names)


def test_shards_respect_max_shard_bytes(run_dir: Path, tmp_path: Path) -> None:
    bound = 120_000
    folder = build_dataset_repo(run_dir, tmp_path / "repo", max_shard_bytes=bound)
    shards = sorted((folder / "data").glob("train-*.parquet"))
    assert len(shards) > 1
    assert [s.name for s in shards] == [f"train-{i:05d}-of-{len(shards):05d}.parquet" for i in range(len(shards))]
    for shard in shards:
        rows = pq.ParquetFile(shard).metadata.num_rows
        assert shard.stat().st_size <= bound or rows == 1, (shard.name, shard.stat().st_size, rows)
    loaded = datasets.load_dataset(str(folder), split="train")
    assert loaded["caption"] == _kept(run_dir)["caption"]  # the order survives re-sharding
    assert "mmsieve_reason" not in loaded.column_names  # no removed split: no reason columns
    card = DatasetCard.load(folder / "README.md")
    assert [f["split"] for f in card.data.configs[0]["data_files"]] == ["train"]


def test_card_has_no_local_paths_or_secrets(repo: Path, run_dir: Path, caption_source: Path) -> None:
    card = (repo / "README.md").read_text()
    for path in (run_dir, caption_source, Path.home()):
        assert str(path) not in card
    assert str(run_dir.parent.parent) not in card  # the pytest tmp root
    assert not re.search(r"(?<![\w.])/(tmp|home|Users|root)/", card)
    assert f"`{caption_source.name}`" in card  # a local source is named by its folder only
    stats = _stats(run_dir)
    stats["steps"][0]["parameters"].update({"api_key": "sk-very-secret", "hub_token": "abc"})
    text = render_dataset_card(
        stats, columns={}, sample_rows=[], plots={}, license=None, source_datasets=None, pretty_name=None,
        repo_id=None, splits={"train": {"rows": 1, "files": 1}},
    )  # fmt: skip
    assert "sk-very-secret" not in text and "hub_token" not in text
    assert DatasetCard(text).data.license == "unknown"  # the local source declares none
    stats["steps"][0]["parameters"]["note"] = "hf_" + "a" * 30
    with pytest.raises(ValueError, match="token"):
        render_dataset_card(
            stats, columns={}, sample_rows=[], plots={}, license=None, source_datasets=None, pretty_name=None,
            repo_id=None, splits={},
        )  # fmt: skip


def test_size_category_boundaries() -> None:
    assert [size_category(n) for n in (0, 999, 1000, 9_999, 10_000, 999_999, 1_000_000)] == [
        "n<1K",
        "n<1K",
        "1K<n<10K",
        "1K<n<10K",
        "10K<n<100K",
        "100K<n<1M",
        "1M<n<10M",
    ]
    valid = json.loads((Path(datasets.__file__).parent / "utils/resources/size_categories.json").read_text())
    assert all(size_category(10**k) in valid for k in range(13))
    card = render_dataset_card(
        {"source": "org/captions", "kind": "conversation", "rows_in": 2500, "kept": 2400, "removed": 100},
        columns={}, sample_rows=[], plots={}, license="mit", source_datasets=None, pretty_name=None,
        repo_id=None, splits={"train": {"rows": 2400, "files": 1}},
    )  # fmt: skip
    data = DatasetCard(card).data
    assert data.size_categories == ["1K<n<10K"]
    assert data.source_datasets == ["org/captions"]  # a Hub source is carried over
    assert data.task_categories == ["visual-question-answering", "image-text-to-text"]
    assert "[`org/captions`](https://huggingface.co/datasets/org/captions)" in card


def test_empty_kept_split_is_a_valid_repo(caption_source: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    stats = run_steps(str(caption_source), run, [HygieneFilter(min_side=100_000)])
    assert stats["kept"] == 0
    folder = build_dataset_repo(run, tmp_path / "repo", include_removed=True)
    loaded = datasets.load_dataset(str(folder))  # the empty train split has no files: removed loads alone
    assert set(loaded) == {"removed"} and len(loaded["removed"]) == stats["removed"]
    card = (folder / "README.md").read_text()
    assert "**0** were kept" in card and "| `train` | 0 | none (empty split) |" in card
    assert "## Score distributions" not in card
    assert all((folder / link).is_file() for link in _plot_links(card))
    only_kept = build_dataset_repo(run, tmp_path / "kept_only")  # nothing to publish: one empty train file
    assert sorted(p.name for p in (only_kept / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    streamed = datasets.load_dataset(str(only_kept), split="train", streaming=True)
    assert list(streamed) == [] and isinstance(streamed.features["image"], datasets.Image)
    assert "| `train` | 0 | 1 |" in (only_kept / "README.md").read_text()


def test_methods_used_and_display_location() -> None:
    stats = {
        "steps": [
            {"step": "Judge", "parameters": {"method": "mlm_filter", "model": "transformers:Qwen/Qwen2.5-VL-3B"}},
            {"step": "ClipScoreFilter", "parameters": {"scorer": {"model": "openai/clip-vit-base-patch32"}}},
            {"step": "Rewriter", "parameters": {"model": "aitqe:HymanH/AITQE", "aitqe": True}},
            {"step": "DecontaminationFilter", "parameters": {"index": "idx", "embedder": "sscd:sscd.pt"}},
        ]
    }
    assert methods_used(stats) == ["aitqe", "mlm_filter", "finevision", "sscd", "clip"]
    assert methods_used({"steps": [{"step": "Rewriter", "parameters": {"aitqe": False, "model": "openai:x"}}]}) == []
    assert display_location("/home/someone/data/my_captions") == "my_captions"
    assert display_location("/tmp/pytest-1/run/kept") == "run/kept"
    assert display_location("HuggingFaceM4/FineVision") == "HuggingFaceM4/FineVision"
    assert display_location("https://user:pw@example.org/data.parquet?sig=abc") == "https://example.org/data.parquet"


def test_unreadable_images_fail_kept_rows_but_not_removed_ones() -> None:
    import pyarrow as pa
    from datasets import Features, Image, List

    from mmsieve.hub.dataset_repo import _embed

    features = Features({"image": Image(), "images": List(Image())})
    table = pa.table(
        {"image": [{"bytes": None, "path": "/gone/a.jpg"}], "images": [[{"bytes": b"x", "path": "/abs/b.png"}]]},
        schema=features.arrow_schema,
    )
    assert _embed(table, features, strict=False).to_pylist() == [
        {"image": {"bytes": None, "path": "a.jpg"}, "images": [{"bytes": b"x", "path": "b.png"}]}
    ]
    with pytest.raises(ValueError, match="cannot embed a kept image"):
        _embed(table, features, strict=True)


def test_earlier_runs_are_shown_and_the_source_license_carried_over(caption_source: Path, tmp_path: Path) -> None:
    """A run that read an earlier run's kept rows: the card shows both runs and the original source's license."""
    import shutil

    from mmsieve.hub.lineage import earlier_runs, original_source, source_license

    original = tmp_path / "captions-snapshot"  # a local copy in the Hub layout, README.md with its license
    (original / "data").mkdir(parents=True)
    for file in sorted(caption_source.glob("*.parquet")):
        shutil.copy(file, original / "data" / file.name)
    (original / "README.md").write_text("---\nlicense: cc-by-sa-4.0\n---\n# Photo captions\n")
    first = run_steps(str(original), tmp_path / "clean", [HygieneFilter()])
    second = run_steps(str(tmp_path / "clean" / "kept"), tmp_path / "short", [HygieneFilter(max_chars=100)])
    assert second["removed_by_reason"] == {"text_too_long": second["removed"]} and second["removed"] > 0
    assert earlier_runs(second) == [first] and original_source(second) == str(original)
    assert source_license(str(original / "data")) == source_license(str(original)) == "cc-by-sa-4.0"
    assert source_license(str(caption_source)) is None

    folder = build_dataset_repo(tmp_path / "short", tmp_path / "repo")
    card = (folder / "README.md").read_text()
    data = DatasetCard(card).data
    assert data.license == "cc-by-sa-4.0" and data.source_datasets is None  # a local source is no Hub dataset
    assert data.pretty_name == "captions-snapshot (curated)"
    assert "That source is the output of 1 earlier mmsieve run" in card and "## Earlier runs" in card
    assert f"### Run 1 on `{original.name}`" in card
    assert f"**{first['rows_in']}** rows in, **{first['kept']}** kept, **{first['removed']}** removed" in card
    for reason, count in first["removed_by_reason"].items():
        assert f"`{reason}` {count}" in card
    assert card.index("\n#### 1. `HygieneFilter`") < card.index("## Pipeline") < card.index("\n### 1. `HygieneFilter`")
    assert str(tmp_path) not in card
    assert (
        build_dataset_repo(tmp_path / "short", tmp_path / "mit", license="mit")
        .joinpath("README.md")
        .read_text(encoding="utf-8")
        .startswith("---\nlicense: mit\n")
    )  # an explicit license wins
