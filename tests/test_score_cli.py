"""`mmsieve score` end to end with tiny checkpoints in the official formats."""

from __future__ import annotations

import json

import datasets
import pytest

from mmsieve.cli import main
from mmsieve.models.tiny import build_tiny_unifilter
from mmsieve.models.tiny_dual_encoder import build_tiny_clip


@pytest.fixture(scope="module")
def unifilter_ckpt(tmp_path_factory):
    return str(build_tiny_unifilter(tmp_path_factory.mktemp("ckpt") / "unifilter"))


def _load(folder):
    return datasets.load_dataset("parquet", data_dir=str(folder), split="train")


def test_score_adds_columns_and_keeps_every_row(caption_source, unifilter_ckpt, tmp_path):
    out = tmp_path / "scored"
    assert main(["score", "--model", unifilter_ckpt, "-i", str(caption_source), "-o", str(out), "--tasks", "2"]) == 0
    kept = _load(out / "kept")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["kept"] == stats["rows_in"] == len(kept) and stats["removed"] == 0
    assert kept.features["unifilter_score"] == datasets.Value("float32")
    scored = [s for s in kept["unifilter_score"] if s is not None]
    errors = [e for e in kept["unifilter_error"] if e]
    assert len(scored) + len(errors) == len(kept)
    assert {e.split(":")[0] for e in errors} >= {"image_truncated", "image_missing", "image_unidentified"}
    assert stats["steps"][0]["parameters"]["model"] == unifilter_ckpt


def test_score_with_threshold_and_keep_fraction(caption_source, unifilter_ckpt, tmp_path):
    base = ["score", "--model", unifilter_ckpt, "-i", str(caption_source)]
    assert main([*base, "-o", str(tmp_path / "top"), "--keep-fraction", "0.25"]) == 0
    top = json.loads((tmp_path / "top" / "stats.json").read_text())
    assert top["kept"] == round(0.25 * top["rows_in"])
    assert top["rows_in"] == top["kept"] + top["removed"]
    threshold = top["steps"][-1]["parameters"]["threshold"]
    assert main([*base, "-o", str(tmp_path / "cut"), "--threshold", str(threshold)]) == 0
    cut = json.loads((tmp_path / "cut" / "stats.json").read_text())
    assert cut["kept"] == top["kept"]
    assert sorted(_load(tmp_path / "cut" / "kept")["caption"]) == sorted(_load(tmp_path / "top" / "kept")["caption"])


def test_score_with_clip(caption_source, tmp_path):
    clip = str(build_tiny_clip(tmp_path / "clip"))
    assert (
        main(["score", "--scorer", "clip", "--model", clip, "-i", str(caption_source), "-o", str(tmp_path / "o")]) == 0
    )
    kept = _load(tmp_path / "o" / "kept")
    assert all(-1 <= s <= 1 for s in kept["clip_score"] if s is not None)


def test_score_bad_arguments_exit_2(caption_source, unifilter_ckpt, tmp_path, capsys):
    clip = str(build_tiny_clip(tmp_path / "clip"))
    capsys.readouterr()  # the builder's own progress output
    cases = [
        ["--model", str(tmp_path / "nope")],
        ["--model", clip],  # a CLIP checkpoint given to the UniFilter scorer
        ["--model", unifilter_ckpt, "--scorer", "clip"],
    ]
    for k, extra in enumerate(cases):
        code = main(["score", *extra, "-i", str(caption_source), "-o", str(tmp_path / f"o{k}")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "error" in err, (extra, err)
    for extra in (["--threshold", "1", "--keep-fraction", "0.5"], ["--keep-fraction", "1.5"]):
        with pytest.raises(SystemExit) as exc:
            main(["score", "--model", unifilter_ckpt, "-i", str(caption_source), "-o", str(tmp_path / "x"), *extra])
        assert exc.value.code == 2
