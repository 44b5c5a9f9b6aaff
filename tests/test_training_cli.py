"""`mmsieve synth` -> `mmsieve train` -> `mmsieve eval` -> `mmsieve score`, end to end on easy-vqa."""

from __future__ import annotations

import json

import datasets
import yaml

from mmsieve.cli import main
from mmsieve.models.tiny import build_tiny_unifilter


def test_synth_train_eval_score(tmp_path, capsys):
    assert main(["synth", "--output", str(tmp_path / "synth"), "--limit", "24"]) == 0
    synth = json.loads(capsys.readouterr().out)
    assert synth["rows"] == 96 and synth["by_level"] == {"0": 24, "1": 24, "2": 24, "3": 24}
    data = datasets.load_dataset("parquet", data_dir=str(tmp_path / "synth" / "data"), split="train")
    assert {"images", "text", "label", "generator", "source_id", "kind"} <= set(data.column_names)

    init = build_tiny_unifilter(tmp_path / "init", image_size=32, patch_size=8, num_image_tokens=16)
    capsys.readouterr()
    argv = ["train", "--data", str(tmp_path / "synth"), "--init", str(init), "--output", str(tmp_path / "model")]
    assert main([*argv, "--epochs", "1", "--lr", "1e-3", "--batch-size", "8", "--validation-fraction", "0.25"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert 0 <= trained["accuracy"] <= 1 and trained["train_seconds"] > 0
    card = (tmp_path / "model" / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["model-index"][0]["results"]
    assert (tmp_path / "model" / "confusion_matrix.png").stat().st_size > 1000

    assert (
        main(
            ["eval", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "synth"), "-o", str(tmp_path / "ev")]
        )
        == 0
    )
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["num_samples"] == 96
    assert (tmp_path / "ev" / "eval_results.json").exists()

    argv = ["score", "--model", str(tmp_path / "model"), "-i", str(tmp_path / "synth"), "-o", str(tmp_path / "scored")]
    assert main([*argv, "--kind", "interleaved"]) == 0


def test_synth_bad_arguments_exit_2(tmp_path, capsys):
    code = main(["synth", "--output", str(tmp_path / "s"), "--generator", "teacher", "--limit", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--model" in err
