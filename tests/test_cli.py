"""The `mmsieve filter` command and the runner behind it, on real parquet, jsonl and save_to_disk sources."""

from __future__ import annotations

import json

import datasets
import pytest

from mmsieve.cli import main
from mmsieve.hub.sources import open_source
from mmsieve.runner import OutputExistsError, run_steps


def _load(folder):
    return datasets.load_dataset("parquet", data_dir=str(folder), split="train")


def test_filter_command_writes_kept_removed_and_stats(caption_source, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(["filter", "--input", str(caption_source), "--output", str(out), "--tasks", "2", "--workers", "2"]) == 0
    )
    stats = json.loads((out / "stats.json").read_text())
    kept, removed = _load(out / "kept"), _load(out / "removed")
    assert stats["rows_in"] == len(open_source(str(caption_source))) == len(kept) + len(removed)
    assert stats["kept"] == len(kept) and stats["removed"] == len(removed)
    assert stats["format"] == "caption" and stats["columns"] == {"image": "image", "text": "caption"}
    assert sum(stats["removed_by_reason"].values()) == len(removed)
    assert stats["steps"][0]["parameters"]["min_side"] == 32
    assert stats["rows_per_second"] > 0
    assert set(kept["source"]) == {
        "skimage",
        "broken/cmyk_jpeg",
        "broken/png_16bit",
        "broken/palette_png_transparent",
        "broken/la_png",
        "broken/animated_gif",
        "broken/exif_rotated_jpeg",
        "broken/webp",
        "broken/tiff",
    }
    assert isinstance(kept.features["image"], datasets.Image)
    assert list(kept.column_names) == ["image", "caption", "source"]
    assert {"mmsieve_reason", "mmsieve_detail"} <= set(removed.column_names)
    printed = capsys.readouterr().out
    assert f"rows in {stats['rows_in']}" in printed and "image_truncated" in printed


def test_tasks_do_not_change_results(caption_source, tmp_path):
    one = run_steps(str(caption_source), tmp_path / "one", [_hygiene()], tasks=1)
    three = run_steps(str(caption_source), tmp_path / "three", [_hygiene()], tasks=3, workers=2)
    assert one["removed_by_reason"] == three["removed_by_reason"]
    assert sorted(_load(tmp_path / "one" / "kept")["caption"]) == sorted(_load(tmp_path / "three" / "kept")["caption"])


def test_limit_and_other_source_types(caption_source, tmp_path):
    ds = open_source(str(caption_source))
    ds.save_to_disk(str(tmp_path / "saved"))
    rows = [{"image": {"bytes": None, "path": str(tmp_path / "missing.jpg")}, "text": "gone"}]
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    saved = run_steps(str(tmp_path / "saved"), tmp_path / "o1", [_hygiene()], limit=5)
    assert saved["rows_in"] == 5
    jsonl = run_steps(str(tmp_path / "j"), tmp_path / "o2", [_hygiene()], kind="caption", columns={"text": "text"})
    assert jsonl["removed_by_reason"] == {"image_missing": 1}


def test_existing_output_is_not_clobbered(caption_source, tmp_path):
    run_steps(str(caption_source), tmp_path / "o", [_hygiene()], limit=3)
    with pytest.raises(OutputExistsError):
        run_steps(str(caption_source), tmp_path / "o", [_hygiene()], limit=3)
    assert run_steps(str(caption_source), tmp_path / "o", [_hygiene()], limit=3, overwrite=True)["rows_in"] == 3


@pytest.mark.parametrize(
    "argv",
    [
        ["filter", "--input", "x"],
        ["filter", "--input", "x", "--output", "o", "--tasks", "0"],
        ["filter", "--input", "x", "--output", "o", "--min-side", "big"],
        ["frobnicate"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err


def test_unreadable_inputs_exit_2_with_one_line(caption_source, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    cases = [
        ["--input", str(tmp_path / "does-not-exist")],
        ["--input", str(tmp_path / "notes")],
        ["--input", str(tmp_path / "empty")],
        ["--input", str(caption_source), "--kind", "conversation"],
        ["--input", str(caption_source), "--columns", "image"],
        ["--input", str(caption_source), "--max-aspect-ratio", "0.5"],
        ["--input", str(caption_source), "--split", "test"],
    ]
    for k, extra in enumerate(cases):
        code = main(["filter", *extra, "--output", str(tmp_path / f"o{k}")])
        err = capsys.readouterr().err.strip()
        assert code == 2, extra
        assert len(err.splitlines()) == 1 and err.startswith("mmsieve filter: error:"), err


def _hygiene():
    from mmsieve.filters import HygieneFilter

    return HygieneFilter()


def test_refiltering_a_removed_output(caption_source, tmp_path):
    first = run_steps(str(caption_source), tmp_path / "a", [_hygiene()])
    again = run_steps(str(tmp_path / "a" / "removed"), tmp_path / "b", [_hygiene()])
    assert again["rows_in"] == first["removed"]
    assert again["removed_by_reason"] == first["removed_by_reason"]
