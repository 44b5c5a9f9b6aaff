"""Publishing round trips against the loopback Hub: datasets and checkpoints, idempotence, ownership, tokens."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import datasets
import pytest

from mmsieve.cli import main
from mmsieve.filters import HygieneFilter, UniFilterScorer
from mmsieve.hub.publish import MANIFEST, PublishError, model_files, push_dataset, push_model, scrub
from mmsieve.models.tiny import build_tiny_unifilter
from mmsieve.runner import run_steps
from mmsieve.sample import ImageRef, Sample


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = build_tiny_unifilter(tmp_path_factory.mktemp("uf") / "model")
    (folder / "README.md").write_text("---\nlicense: apache-2.0\nlibrary_name: mmsieve\n---\n# tiny UniFilter\n")
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, caption_source: Path, checkpoint: Path) -> Path:
    out = tmp_path_factory.mktemp("run") / "curated"
    run_steps(str(caption_source), out, [HygieneFilter(), UniFilterScorer(str(checkpoint), batch_size=8)])
    return out


def _kept(run_dir: Path) -> datasets.Dataset:
    return datasets.load_dataset("parquet", data_dir=str(run_dir / "kept"), split="train")


def test_dataset_round_trip_rows_scores_images_and_card(hub: Any, run_dir: Path) -> None:
    repo = hub.new_repo_id("captions")
    report = push_dataset(run_dir, repo, include_removed=True, license="cc-by-4.0")
    assert report["changed"] and report["repo"] == f"datasets/{repo}"
    loaded = datasets.load_dataset(repo)
    local = _kept(run_dir)
    assert set(loaded) == {"train", "removed"}
    assert loaded["train"]["caption"] == local["caption"]
    assert loaded["train"]["unifilter_score"] == pytest.approx(local["unifilter_score"])
    assert isinstance(loaded["train"].features["image"], datasets.Image)
    for pushed, ours in zip(loaded["train"], local, strict=True):
        assert pushed["image"].tobytes() == ours["image"].tobytes()  # the same pixels came back
    stats = json.loads((run_dir / "stats.json").read_text())
    assert len(loaded["removed"]) == stats["removed"]
    assert sorted(set(loaded["removed"]["mmsieve_reason"])) == sorted(stats["removed_by_reason"])
    files = hub.files(repo, "dataset")
    card = files["README.md"].decode()
    from huggingface_hub import DatasetCard

    assert DatasetCard(card).data.license == "cc-by-4.0"  # the YAML parses
    for line in card.splitlines():  # every plot the card shows is in the repo
        if "](plots/" in line:
            assert line.split("](", 1)[1].split(")", 1)[0] in files
    assert json.loads(files[MANIFEST])["files"] == sorted(f for f in files if f not in (MANIFEST, ".gitattributes"))


def test_identical_publish_changes_nothing_and_foreign_files_survive(hub: Any, run_dir: Path) -> None:
    from huggingface_hub import HfApi

    repo = hub.new_repo_id("idempotent")
    first = push_dataset(run_dir, repo, include_removed=True)
    commits = len(hub.commits(repo, "dataset"))
    again = push_dataset(run_dir, repo, include_removed=True)
    assert not again["changed"] and again["commit"] == first["commit"]
    assert len(hub.commits(repo, "dataset")) == commits
    HfApi().upload_file(
        path_or_fileobj=b"hand-written notes\n", path_in_repo="NOTES.md", repo_id=repo, repo_type="dataset"
    )
    without_removed = push_dataset(run_dir, repo)  # our removed split is gone now: only our shards are deleted
    files = hub.files(repo, "dataset")
    assert without_removed["deleted"] and all(
        f.startswith("data/removed") or f.startswith("plots/") for f in without_removed["deleted"]
    )
    assert "NOTES.md" in files and not any(f.startswith("data/removed") for f in files)
    replaced = push_dataset(run_dir, repo, replace=True)
    assert "NOTES.md" in replaced["deleted"] and "NOTES.md" not in hub.files(repo, "dataset")


def test_private_repo(hub: Any, run_dir: Path) -> None:
    repo = hub.new_repo_id("private")
    push_dataset(run_dir, repo, private=True)
    assert hub.is_private(repo, "dataset")


def test_model_round_trip_scores_identically(hub: Any, checkpoint: Path, photos: dict[str, bytes]) -> None:
    (checkpoint / "training_args.bin").write_bytes(b"\x80\x04pickled")  # never published
    repo = hub.new_repo_id("unifilter")
    report = push_model(checkpoint, repo)
    assert report["left_out"] == ["training_args.bin"]
    files = hub.files(repo, "model")
    assert "training_args.bin" not in files and any(f.endswith(".safetensors") for f in files)
    samples = [
        Sample.caption(str(i), ImageRef(data=photos[n]), f"A photo of {n}.") for i, n in enumerate(sorted(photos)[:4])
    ]
    local = UniFilterScorer(str(checkpoint)).process(samples)["unifilter_score"]
    remote = UniFilterScorer(repo).process(samples)["unifilter_score"]
    assert remote == pytest.approx(local, abs=1e-6)


def test_model_folder_checks(tmp_path: Path, checkpoint: Path) -> None:
    with pytest.raises(PublishError, match="safetensors"):
        model_files(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(PublishError, match="model card"):
        model_files(tmp_path)
    keep, left_out = model_files(checkpoint)
    assert "README.md" in keep and all(not f.endswith(".bin") for f in keep)


def test_token_never_appears_in_outputs(
    hub: Any, caption_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = os.environ["HF_TOKEN"]
    repo = hub.new_repo_id("secret")
    out = tmp_path / "run"
    assert main(["filter", "-i", str(caption_source), "-o", str(out), "--push-to", repo, "--push-removed"]) == 0
    printed = capsys.readouterr()
    assert repo in printed.out and token in hub.tokens_seen  # it was used, to talk to the Hub only
    texts = [printed.out, printed.err]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in out.rglob("*") if p.is_file()]
    texts += [data.decode("utf-8", "replace") for data in hub.files(repo, "dataset").values()]
    assert all(token not in text for text in texts)
    assert main(["push-dataset", str(out), "--repo", "not a valid id!"]) == 2  # a failure prints one line
    assert token not in capsys.readouterr().err


def test_scrub_removes_tokens() -> None:
    assert scrub("Bearer hf_loopbackTOKEN1234567890 rejected", "hf_loopbackTOKEN1234567890") == "Bearer *** rejected"
    assert scrub("token=secret-value", "secret-value") == "token=***"


def test_push_to_with_several_dedup_inputs_is_refused_before_running(
    caption_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["dedup", "-i", str(caption_source), "-i", str(caption_source), "-o", str(tmp_path / "out")]
    assert main([*argv, "--embedder", "phash", "--push-to", "me/deduped"]) == 2
    assert "publish each OUTPUT/NAME with mmsieve push-dataset" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_push_commands_refuse_bad_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["push-dataset", str(tmp_path), "--repo", "me/x"]) == 2
    assert "not an mmsieve run folder" in capsys.readouterr().err
    assert main(["push-model", str(tmp_path), "--repo", "me/x"]) == 2
    assert "safetensors" in capsys.readouterr().err


def test_hub_source_license_and_id_reach_the_card(hub: Any, caption_source: Path, tmp_path: Path) -> None:
    """Curating a Hub dataset: the published card names it in `source_datasets` and carries its license over."""
    from huggingface_hub import DatasetCard, HfApi

    source = hub.new_repo_id("licensed-source")
    datasets.load_dataset("parquet", data_dir=str(caption_source), split="train").push_to_hub(source)
    card = DatasetCard.load(source, repo_type="dataset")
    card.data.license = "cc-by-nc-4.0"
    HfApi().upload_file(  # not card.push_to_hub: its module-level client kept the endpoint of import time
        path_or_fileobj=str(card).encode(), path_in_repo="README.md", repo_id=source, repo_type="dataset"
    )
    target = hub.new_repo_id("licensed-curated")
    out = tmp_path / "run"
    assert main(["filter", "-i", source, "-o", str(out), "--streaming", "--push-to", target]) == 0
    published = DatasetCard(hub.files(target, "dataset")["README.md"].decode()).data
    assert published.license == "cc-by-nc-4.0" and published.source_datasets == [source]
    assert json.loads((out / "stats.json").read_text())["streaming"] is True
    assert len(datasets.load_dataset(target, split="train")) == json.loads((out / "stats.json").read_text())["kept"]
