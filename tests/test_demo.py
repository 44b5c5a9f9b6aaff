"""`make demo` end to end: every kind through a real run, every planted problem with its reason."""

from __future__ import annotations

from pathlib import Path

import datasets

from mmsieve.demo import run_demo


def test_demo_counts_and_outputs(tmp_path):
    report = run_demo(tmp_path / "demo", verbose=False, train_minutes=0.3, train_images=60)
    summary = report["summary"]
    assert summary["captions"]["removed_by_reason"] == {
        "image_too_small": 2,
        "image_unidentified": 2,
        "text_empty": 2,
        "image_aspect_ratio": 1,
        "image_empty": 1,
        "image_missing": 1,
        "image_too_many_pixels": 1,
        "image_truncated": 1,
        "text_too_long": 1,
    }
    assert summary["interleaved"]["removed_by_reason"] == {
        "image_truncated": 1,
        "malformed_row": 1,
        "too_few_images": 1,
        "too_many_images": 1,
    }
    assert summary["conversations"]["removed_by_reason"] == {
        "image_unidentified": 1,
        "text_empty": 1,
        "too_few_turns": 1,
    }
    dedup = report["dedup"]
    # pHash catches every re-encoded and resized copy, not the crops; every planted benchmark image is caught
    assert dedup["dedup"]["caught_by_edit"] == {"reencoded": "3/3", "resized": "3/3", "cropped": "0/3"}
    assert dedup["dedup"]["caught"] == 6 and dedup["dedup"]["rows_in"] == 25
    assert dedup["decontamination"]["caught"] == dedup["decontamination"]["planted"] == 4
    assert dedup["decontamination"]["by_benchmark"] == {"easy-vqa": {"image": 4, "text": 0, "total": 4}}
    for name, counts in summary.items():
        assert counts["rows_in"] == counts["kept"] + counts["removed"]
        kept = datasets.load_dataset("parquet", data_dir=str(tmp_path / "demo" / name / "kept"), split="train")
        removed = datasets.load_dataset("parquet", data_dir=str(tmp_path / "demo" / name / "removed"), split="train")
        assert (len(kept), len(removed)) == (counts["kept"], counts["removed"])
    interleaved = datasets.load_dataset(
        "parquet", data_dir=str(tmp_path / "demo" / "interleaved" / "removed"), split="train"
    )
    bad_lists = interleaved[interleaved["mmsieve_reason"].index("malformed_row")]
    assert (len(bad_lists["images"]), len(bad_lists["texts"])) == (2, 3)  # written back exactly as it came
    conversations = datasets.load_dataset(
        "parquet", data_dir=str(tmp_path / "demo" / "conversations" / "kept"), split="train"
    )
    assert isinstance(conversations.features["images"].feature, datasets.Image)
    assert conversations[0]["images"][0].size == (64, 64)
    assert set(conversations[0]["texts"][0]) == {"user", "assistant"}
    training = report["scoring"]["training"]
    assert training["train_seconds"] <= 60 and Path(training["card"]).exists()
    removed = tmp_path / "demo" / "shape_captions_filtered" / "removed"
    filtered = report["scoring"]["filter"]
    n_removed = (
        len(datasets.load_dataset("parquet", data_dir=str(removed), split="train"))
        if filtered["kept"] < filtered["rows_in"]
        else 0
    )
    assert filtered["rows_in"] == filtered["kept"] + n_removed
    for name in ("captions", "interleaved", "conversations"):
        scored = datasets.load_dataset(
            "parquet", data_dir=str(tmp_path / "demo" / f"{name}_scored" / "kept"), split="train"
        )
        assert len(scored) == summary[name]["kept"]
        assert all(isinstance(s, float) for s in scored["unifilter_score"])
    rewrite = report["rewrite"]  # a scripted endpoint plays the VLM: this checks the mechanics, not a model
    rows = min(400, 4 * (60 // 3))  # the stage reads at most 400 of the unseen shape captions (4 per test image)
    assert rewrite["rows"] == rows and rewrite["requests"] == rewrite["below_threshold"]  # only low rows were sent
    assert rewrite["rewritten"] + rewrite["reverted_by_adaptive"] <= rewrite["below_threshold"]
    rewritten = datasets.load_dataset(
        "parquet", data_dir=str(tmp_path / "demo" / "shape_captions_rewritten" / "kept"), split="train"
    ).remove_columns("image")
    assert len(rewritten) == rows and sum(rewritten["rewritten"]) == rewrite["rewritten"]
    for row in rewritten:
        if row["rewritten"]:  # the new text replaced the caption; the original and the better score are recorded
            assert row["original_text"] != row["caption"] and row["rewrite_score"] > row["unifilter_score"]
        else:
            assert row["original_text"] is None and row["rewrite_model"] is None
            assert row["unifilter_score"] >= 2.0 or row["rewrite_reason"].startswith(("adaptive:", "the model kept"))
    # the last stage: complete Hub repo layouts (parquet + card + plots) that load back and whose card is readable
    from huggingface_hub import DatasetCard

    hub = report["hub"]
    assert set(hub["folders"]) == {"shape-captions", "captions"} and "pushed" not in hub
    for folder in map(Path, hub["folders"].values()):
        card = (folder / "README.md").read_text()
        assert DatasetCard(card).data.configs[0]["config_name"] == "default"
        links = [line.split("](", 1)[1].split(")", 1)[0] for line in card.splitlines() if "](plots/" in line]
        assert links and all((folder / link).read_bytes().startswith(b"\x89PNG") for link in links)
        loaded = datasets.load_dataset(str(folder))
        assert isinstance(loaded["train"].features["image"], datasets.Image)
        assert "## Rows in, kept, removed" in card and "## Citation" in card and str(tmp_path) not in card
    captions = (Path(hub["folders"]["captions"]) / "README.md").read_text()
    assert "## Earlier runs" in captions and "`near_duplicate` 6" in captions  # the dedup run before decontamination
    assert "| easy-vqa | 4 | 0 | 4 |" in captions
    shapes = datasets.load_dataset(hub["folders"]["shape-captions"], split="train")
    assert len(shapes) == rows and sum(shapes["rewritten"]) == rewrite["rewritten"]
