"""The hub_scripts recipes end to end (tiny models, real files, the loopback Hub) and `mmsieve.executors`.

Each recipe's `main(argv)` runs in this process with `--executor local`; what it publishes must load back with
`datasets.load_dataset(repo_id)` (or `UniFilterScorer(repo_id)`) and equal the local result. The Slurm path runs
for real too, with stand-ins for `sbatch`, `srun` and `scontrol` that run the job array's tasks on this machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import datasets
import pytest
import run_checks

from mmsieve.executors import RAY_INSTALL_HINT, add_executor_arguments, executor_options, make_executor
from mmsieve.filters import HygieneFilter, UniFilterScorer
from mmsieve.readers import SampleReader
from mmsieve.runner import build_pipeline, run_steps
from mmsieve.sample import ImageRef, Sample


SCRIPTS = Path(__file__).resolve().parents[1] / "hub_scripts"


def recipe(name: str) -> ModuleType:
    """Import a recipe as `python hub_scripts/NAME.py` would (its folder first on the path)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module(name)


def kept(run_dir: Path) -> datasets.Dataset:
    return datasets.load_dataset("parquet", data_dir=str(run_dir / "kept"), split="train")


def stable(stats: dict[str, Any]) -> dict[str, Any]:
    return run_checks.stable(stats, "tasks")  # these tests compare runs of different task counts too


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mmsieve.models.tiny import build_tiny_unifilter

    return build_tiny_unifilter(tmp_path_factory.mktemp("uf") / "model")


# --- mmsieve.executors --------------------------------------------------------------------------------------------


def test_executor_options_and_kinds(tmp_path: Path) -> None:
    from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor

    parser = argparse.ArgumentParser()
    add_executor_arguments(parser)
    local = executor_options(parser.parse_args(["--tasks", "4"]))
    assert local["executor"] == "local" and local["workers"] == 1 and local["tasks"] == 4
    options = executor_options(parser.parse_args(["--executor", "slurm", "--partition", "gpu", "--time", "1:00:00"]))
    assert options["workers"] == -1 and options["partition"] == "gpu"

    executor = make_executor("local", [], tasks=3, workers=8, logging_dir=tmp_path / "logs")
    assert isinstance(executor, LocalPipelineExecutor) and executor.workers == 3
    slurm = make_executor("slurm", [], tasks=2, workers=-1, logging_dir=tmp_path, partition="cpu", time="0:10:00")
    assert isinstance(slurm, SlurmPipelineExecutor) and slurm.time == "0:10:00"
    with pytest.raises(ValueError, match="--partition and --time"):
        make_executor("slurm", [], tasks=2, workers=1, logging_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown executor"):
        make_executor("kubernetes", [], tasks=2, workers=1, logging_dir=tmp_path)
    try:
        import ray  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r'pip install "datatrove\[ray\]"'):
            make_executor("ray", [], tasks=2, workers=1, logging_dir=tmp_path)
    else:
        ray_executor = make_executor("ray", [], tasks=2, workers=1, logging_dir=tmp_path, time="0:05:00")
        assert ray_executor.time == 300


def test_slurm_submission_writes_the_sbatch_script(
    caption_source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datatrove.executor.slurm as slurm

    submitted: list[tuple[str, tuple[str, ...]]] = []

    def sbatch(script: str, job_id_retriever: Any, *args: str) -> str:  # datatrove's one call to `sbatch`
        submitted.append((script, args))
        return str(100 + len(submitted))

    monkeypatch.setattr(slurm, "launch_slurm_job", sbatch)
    pipeline = build_pipeline(SampleReader(str(caption_source)), tmp_path / "out", [HygieneFilter()])
    executor = make_executor(
        "slurm",
        pipeline,
        tasks=8,
        workers=4,
        logging_dir=tmp_path / "logs",
        partition="gpu-a100",
        time="01:30:00",
        gpus_per_task=1,
        cpus_per_task=6,
        job_name="curate",
    )
    executor.run()
    (job, job_args), (merge, merge_args) = submitted
    directives = [line for line in job.splitlines() if line.startswith("#SBATCH")]
    for expected in ("--partition=gpu-a100", "--time=01:30:00", "--gpus=1", "--cpus-per-task=6", "--array=0-7%4"):
        assert f"#SBATCH {expected}" in directives
    assert "#SBATCH --job-name=curate" in directives
    assert f"launch_pickled_pipeline {tmp_path / 'logs' / 'executor.pik'}" in job
    assert (tmp_path / "logs" / "launch_script.slurm").read_text() == job  # the script datatrove saves, as sent
    assert "merge_stats" in merge and "--dependency=afterok:101" in merge
    assert executor.job_id == "101"


# --- the dataset recipes, locally ---------------------------------------------------------------------------------


def test_curate_captions_round_trip(hub: Any, caption_source: Path, checkpoint: Path, tmp_path: Path) -> None:
    curate = recipe("curate_captions")
    base = ["--input", str(caption_source), "--model", str(checkpoint), "--batch-size", "8"]
    scored_repo = hub.new_repo_id("scored-captions")
    assert curate.main([*base, "--output", str(tmp_path / "scored"), "--push-to", scored_repo]) == 0
    # the same steps through run_steps: one code path for all executors, and the same stats as `mmsieve score`
    reference = run_steps(
        str(caption_source), tmp_path / "ref", [HygieneFilter(), UniFilterScorer(str(checkpoint), batch_size=8)]
    )
    scored = json.loads((tmp_path / "scored" / "stats.json").read_text())
    assert stable(scored) == stable(reference)
    pushed = datasets.load_dataset(scored_repo, split="train")
    local = kept(tmp_path / "scored")
    assert pushed["caption"] == local["caption"] and len(pushed) == scored["kept"]
    assert pushed["unifilter_score"] == pytest.approx(local["unifilter_score"])
    assert "README.md" in hub.files(scored_repo, "dataset")

    threshold = statistics.median(local["unifilter_score"])
    repo = hub.new_repo_id("curated-captions")
    argv = [*base, "--output", str(tmp_path / "curated"), "--threshold", str(threshold), "--push-to", repo]
    assert curate.main([*argv, "--push-removed", "--license", "cc-by-4.0"]) == 0
    stats = json.loads((tmp_path / "curated" / "stats.json").read_text())
    assert 0 < stats["kept"] < scored["kept"] and stats["removed_by_reason"]["low_unifilter_score"] > 0
    loaded = datasets.load_dataset(repo)
    assert len(loaded["train"]) == stats["kept"] and len(loaded["removed"]) == stats["removed"]
    assert loaded["train"]["caption"] == kept(tmp_path / "curated")["caption"]
    assert min(loaded["train"]["unifilter_score"]) >= threshold
    assert sorted(loaded["train"]["caption"]) == sorted(
        c for c, s in zip(local["caption"], local["unifilter_score"]) if s >= threshold
    )
    card = hub.files(repo, "dataset")["README.md"].decode()
    assert "cc-by-4.0" in card and "low_unifilter_score" in card

    # the output is refused unless --overwrite; a fixable error is one line and exit code 2
    assert curate.main(argv) == 2
    assert curate.main([*argv, "--overwrite"]) == 0


def test_curate_captions_streams_a_hub_dataset(
    hub: Any, caption_source: Path, checkpoint: Path, tmp_path: Path
) -> None:
    """Hub dataset -> hygiene -> score -> filter -> Hub, reading the source as a stream split across tasks."""
    from huggingface_hub import DatasetCard

    source = hub.new_repo_id("raw-captions")
    datasets.load_dataset("parquet", data_dir=str(caption_source), split="train").push_to_hub(source, num_shards=2)
    repo = hub.new_repo_id("streamed-captions")
    argv = ["--input", source, "--streaming", "--tasks", "2", "--output", str(tmp_path / "out"), "--model"]
    argv += [str(checkpoint), "--threshold=-1e9", "--push-to", repo]
    assert recipe("curate_captions").main(argv) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["streaming"] and stats["tasks"] == 2 and stats["rows_in"] == 32
    reference = run_steps(
        str(caption_source), tmp_path / "ref", [HygieneFilter(), UniFilterScorer(str(checkpoint), batch_size=8)]
    )
    assert stats["removed_by_reason"] == reference["removed_by_reason"] and stats["kept"] == reference["kept"]
    loaded = datasets.load_dataset(repo, split="train")
    assert sorted(loaded["caption"]) == sorted(kept(tmp_path / "ref")["caption"])
    assert DatasetCard.load(repo, repo_type="dataset").data.source_datasets == [source]


def test_curate_interleaved_round_trip(hub: Any, checkpoint: Path, tmp_path: Path) -> None:
    from mmsieve.demo.corpus import build_interleaved

    source = build_interleaved(tmp_path / "obelics")
    repo = hub.new_repo_id("curated-documents")
    argv = ["--input", str(source), "--output", str(tmp_path / "out"), "--model", str(checkpoint)]
    assert recipe("curate_interleaved").main([*argv, "--threshold=-1e9", "--push-to", repo, "--push-removed"]) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["kind"] == "interleaved" and stats["kept"] > 0
    assert {"too_many_images", "image_truncated"} <= set(stats["removed_by_reason"])
    loaded = datasets.load_dataset(repo)
    local = kept(tmp_path / "out")
    assert loaded["train"]["url"] == local["url"]
    assert loaded["train"]["unifilter_score"] == pytest.approx(local["unifilter_score"])
    assert len(loaded["removed"]) == stats["removed"]
    assert "README.md" in hub.files(repo, "dataset")


def test_decontaminate_builds_publishes_and_uses_an_index(
    hub: Any, photos: dict[str, bytes], caption_source: Path, tmp_path: Path
) -> None:
    from mmsieve.demo.corpus import image_cell, save_shards

    question = "Which kitchen instrument in this photo measures the temperature of the coffee?"
    bench = save_shards(
        {
            "image": [image_cell(photos[n], f"{n}.jpg") for n in ("rocket", "camera")],
            "question": [question, "What is in the picture?"],
            "answer": ["a thermometer", "a camera"],
            "question_id": ["q0", "q1"],
        },
        datasets.Features(
            {"image": datasets.Image(), **{k: datasets.Value("string") for k in ("question", "answer", "question_id")}}
        ),
        tmp_path / "toybench",
        shards=1,
    )
    benchmarks = tmp_path / "benchmarks.yaml"
    benchmarks.write_text(f"benchmarks:\n  - {{name: toybench, repo: {bench}, split: train}}\n")
    index_repo, repo = hub.new_repo_id("bench-index"), hub.new_repo_id("decontaminated")
    argv = ["--input", str(caption_source), "--output", str(tmp_path / "out"), "--index", str(tmp_path / "index")]
    argv += ["--embedder", "phash", "--benchmarks", str(benchmarks), "--push-index", index_repo, "--push-to", repo]
    assert recipe("decontaminate").main(argv) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["removed_by_reason"]["contaminated"] >= 2 and stats["contamination"]["toybench"]["image"] >= 2
    loaded = datasets.load_dataset(repo, split="train")
    local = kept(tmp_path / "out")
    assert loaded["caption"] == local["caption"] and len(loaded) == stats["kept"]
    assert "README.md" in hub.files(repo, "dataset")
    assert "index.json" in hub.files(index_repo, "dataset")

    # the published index, by repo id, gives the same verdicts
    again = ["--input", str(caption_source), "--output", str(tmp_path / "again"), "--index", index_repo]
    assert recipe("decontaminate").main(again) == 0
    assert (
        stable(json.loads((tmp_path / "again" / "stats.json").read_text()))["removed_by_reason"]
        == stats["removed_by_reason"]
    )


# --- the model recipe ---------------------------------------------------------------------------------------------


def test_train_classifier_publishes_a_checkpoint_that_scores_identically(
    hub: Any, photos: dict[str, bytes], tmp_path: Path
) -> None:
    from mmsieve.models.tiny import build_tiny_unifilter

    init = build_tiny_unifilter(tmp_path / "init", image_size=32, patch_size=8, num_image_tokens=16, num_labels=4)
    repo = hub.new_repo_id("unifilter-easyvqa")
    argv = ["--output", str(tmp_path / "run"), "--images", "16", "--init", str(init), "--epochs", "1"]
    argv += ["--lr", "1e-3", "--batch-size", "8", "--minutes", "0.5", "--push-to", repo]
    assert recipe("train_classifier").main(argv) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["test"]["num_samples"] > 0 and 0 <= report["test"]["accuracy"] <= 1
    files = hub.files(repo, "model")
    assert "README.md" in files and any(f.endswith(".safetensors") for f in files)
    assert not any(f.endswith(".bin") or "checkpoint-" in f for f in files)
    from huggingface_hub import ModelCard

    card = ModelCard.load(repo)  # the pushed card parses, with model-index results of the test set
    accuracy = next(r for r in card.data.eval_results if r.metric_type == "accuracy")
    assert accuracy.metric_value == pytest.approx(report["test"]["accuracy"], abs=1e-3)
    assert card.data.base_model is None  # a local init is no Hub model to name
    samples = [
        Sample.caption(str(i), ImageRef(data=photos[n]), f"A photo of a {n}.")
        for i, n in enumerate(sorted(photos)[:5])
    ]
    local = UniFilterScorer(report["checkpoint"]).process(samples)["unifilter_score"]
    remote = UniFilterScorer(repo).process(samples)["unifilter_score"]
    assert None not in local and remote == pytest.approx(local, abs=1e-6)


# --- the Slurm path, run for real with stand-ins for the Slurm commands --------------------------------------------


def test_slurm_run_then_finalize_publishes(
    hub: Any,
    caption_source: Path,
    checkpoint: Path,
    tmp_path: Path,
    fake_slurm: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    curate = recipe("curate_captions")
    repo = hub.new_repo_id("slurm-captions")
    out = tmp_path / "out"
    argv = ["--input", str(caption_source), "--output", str(out), "--model", str(checkpoint), "--threshold=-1e9"]
    argv += ["--push-to", repo, "--executor", "slurm", "--partition", "cpu", "--time", "00:10:00", "--tasks", "2"]
    capsys.readouterr()
    assert curate.main(argv) == 0
    printed = capsys.readouterr().out
    assert "--finalize" in printed and not (out / "stats.json").exists(), fake_slurm.read_text()[-3000:]
    assert sorted(p.name for p in (out / "datatrove" / "stats").iterdir()) == ["00000.json", "00001.json"], (
        fake_slurm.read_text()[-3000:]
    )

    assert curate.main([*argv, "--finalize"]) == 0  # what the first run printed: stats.json, then publish
    stats = json.loads((out / "stats.json").read_text())
    assert stats["tasks"] == 2 and stats["rows_in"] == stats["kept"] + stats["removed"] == 32
    local_run = ["--input", str(caption_source), "--output", str(tmp_path / "local"), "--model", str(checkpoint)]
    assert curate.main([*local_run, "--threshold=-1e9"]) == 0
    assert stable(stats) == stable(json.loads((tmp_path / "local" / "stats.json").read_text()))
    loaded = datasets.load_dataset(repo, split="train")
    assert loaded["caption"] == kept(out)["caption"]
    assert loaded["unifilter_score"] == pytest.approx(kept(out)["unifilter_score"])
    # two tasks batch differently from one: the same scores up to float noise
    assert loaded["unifilter_score"] == pytest.approx(kept(tmp_path / "local")["unifilter_score"], abs=1e-5)


def test_unfinished_run_and_missing_ray_are_one_line_errors(
    caption_source: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    curate = recipe("curate_captions")
    argv = ["--input", str(caption_source), "--output", str(tmp_path / "out"), "--model", str(checkpoint)]
    capsys.readouterr()
    assert curate.main([*argv, "--finalize"]) == 2
    err = capsys.readouterr().err.strip()
    assert "have not finished" in err and "\n" not in err
    assert curate.main([*argv, "--executor", "slurm", "--time", "1:00:00"]) == 2
    assert "--partition" in capsys.readouterr().err
    try:
        import ray  # noqa: F401
    except ImportError:
        assert curate.main([*argv, "--executor", "ray", "--overwrite"]) == 2
        assert RAY_INSTALL_HINT in capsys.readouterr().err
