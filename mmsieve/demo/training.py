"""The demo's training stage: semi-synthetic easy-vqa data, a classifier trained in minutes, evaluated, carded,
then used to score and filter.

No pretrained weights are reachable offline, so the model is the UniFilter architecture at a tiny size, trained
from random initialisation on synthetic shapes. It learns whether a caption names the right shape and colour;
it knows nothing about real photos, and every printout says so.

Example:
    >>> report = train_demo_model(Path("demo_output"), minutes=3)  # doctest: +SKIP
    >>> report["test"]["accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


# The architecture used for easy-vqa (64x64 images of one shape), here and in bench/train_easyvqa.py.
EASYVQA_MODEL: dict[str, Any] = {
    "image_size": 64,
    "patch_size": 8,  # 8x8 patches
    "num_image_tokens": 16,  # pooled to 4x4
    "vision_hidden": 64,
    "llm_hidden": 128,
    "llm_layers": 2,
    "llm_heads": 4,
    "llm_kv_heads": 2,
    "num_labels": 4,  # cross-entropy over the four levels
}


def samples_of(records: list[Any]) -> tuple[list[Any], list[int]]:
    """Generated records -> (samples, labels), through the same dataset rows `mmsieve synth` writes."""
    from mmsieve.training.records import row_to_training_sample, to_dataset

    pairs = [row_to_training_sample(row) for row in to_dataset(records)]
    return [s for s, _ in pairs], [label for _, label in pairs]


def train_two_stages(
    init: Path,
    train: tuple[list, list[int]],
    validation: tuple[list, list[int]],
    out: Path,
    seconds: float,
    epochs: float,
    *,
    stage1_epochs: float = 3,
    stage1_share: float = 0.2,
    learning_rate: float = 3e-4,
    stage2_train_vision: bool = False,
) -> tuple[Path, float]:
    """Stage 1 (captioning on the level-3 texts; everything trains, as nothing is pretrained), then stage 2
    (the classifier; tower frozen as the recipe, unless `stage2_train_vision`: a tower initialised at random
    keeps learning), within `seconds`. Returns the checkpoint and the training time."""
    from mmsieve.training.train import TrainConfig, train_classifier

    def level3(data: tuple[list, list[int]]) -> tuple[list, list[int]]:
        kept = [(s, y) for s, y in zip(*data) if y == 3]
        return [s for s, _ in kept], [y for _, y in kept]

    stage1 = train_classifier(
        init,
        level3(train),
        level3(validation),
        out / "stage1",
        TrainConfig(
            objective="align",
            epochs=stage1_epochs,
            learning_rate=1e-3,
            batch_size=32,
            train_vision=True,
            train_llm=True,
            warmup_ratio=0.05,
            max_seconds=seconds * stage1_share,
        ),
    )
    stage2 = train_classifier(
        out / "stage1",
        train,
        validation,
        out / "model",
        TrainConfig(
            epochs=epochs,
            learning_rate=learning_rate,
            train_vision=stage2_train_vision,
            batch_size=32,
            warmup_ratio=0.05,
            max_seconds=max(seconds - stage1.train_seconds, 10),
        ),
    )
    return out / "model", stage1.train_seconds + stage2.train_seconds


def train_demo_model(out: Path, minutes: float = 3.0, images: int = 1000, verbose: bool = True) -> dict[str, Any]:
    """Generate data, train for at most `minutes`, evaluate on unseen test images, write the card; return a report."""
    import json

    from mmsieve.models.tiny import build_tiny_unifilter
    from mmsieve.training.contrastive import ContrastiveGenerator
    from mmsieve.training.records import to_dataset
    from mmsieve.training.workflow import split_by_source

    generator = ContrastiveGenerator(seed=0)
    train_records, test_records = generator.easyvqa("train", images), generator.easyvqa("test", images // 3)
    (out / "synth" / "data").mkdir(parents=True, exist_ok=True)
    to_dataset(train_records).to_parquet(str(out / "synth" / "data" / "train-00000-of-00001.parquet"))
    samples, labels = samples_of(train_records)
    test = samples_of(test_records)
    train, validation = split_by_source(samples, labels, validation_fraction=0.1)
    models = out / "models"
    init = build_tiny_unifilter(models / "init", **EASYVQA_MODEL)
    if verbose:
        print(
            f"\n== training a demo classifier from random init on synthetic shapes ({len(samples)} texts, <= {minutes} min)"
        )
    checkpoint, seconds = train_two_stages(
        init,
        train,
        validation,
        models / "unifilter-easyvqa-demo",
        minutes * 60,
        12,
        stage1_epochs=8,
        stage1_share=0.15,
    )
    results, card = evaluate_and_card(
        checkpoint,
        test,
        n_train_texts=len(train[0]),
        hyperparameters={"model": EASYVQA_MODEL, "budget_minutes": minutes},
        summary=(
            "A DEMO model trained from random initialisation on synthetic shapes (easy-vqa) in a few minutes on a CPU: "
            "it judges whether a caption names the right shape and colour. It is not an image-text quality model."
        ),
    )
    from mmsieve.training.workflow import training_report

    overall = results["overall"]
    report = training_report(checkpoint, card, seconds, results)
    (out / "models" / "demo_training.json").write_text(json.dumps(report, indent=2) + "\n")
    if verbose:
        print(
            f"  trained in {seconds:.0f} s; on unseen test images: accuracy {overall['accuracy']:.3f}, "
            f"Spearman {overall['spearman']:.3f}, MAE {overall['mae']:.3f}\n  checkpoint {checkpoint}, card {card}"
        )
    report["test_records"] = test_records
    return report


def evaluate_and_card(
    checkpoint: Path, test: tuple[list, list[int]], *, n_train_texts: int, hyperparameters: dict, summary: str
) -> tuple[dict[str, Any], Path]:
    """Evaluate an easy-vqa classifier on unseen test images and write its report and model card next to it."""
    from mmsieve.training.workflow import FROM_SCRATCH_STAGES, evaluate_checkpoint, write_card

    results = evaluate_checkpoint(checkpoint, *test)
    card = write_card(
        checkpoint,
        results,
        repo_id="mmsieve/unifilter-easyvqa-demo",
        eval_dataset="easy-vqa",
        eval_dataset_name=f"easy-vqa test split: images never seen in training ({len(test[0])} texts)",
        stages=FROM_SCRATCH_STAGES,
        training_data=f"easy-vqa train images with offline contrastive texts at four levels ({n_train_texts} texts)",
        hyperparameters=hyperparameters,
        summary=summary,
        limitations=[
            "Knows only 64x64 images of one coloured shape; its scores on real photos mean nothing.",
            "Random initialisation: no pretrained language or vision knowledge.",
        ],
    )
    return results, card


def write_caption_source(records: list[Any], folder: Path) -> Path:
    """Generated caption records as a COCO-style source (`image`, `caption`, `label`, `generator`) to filter."""
    from datasets import Dataset, Features, Image, Value

    rows = {
        "image": [{"bytes": r.images[0], "path": f"{r.source_id}.png"} for r in records],
        "caption": [r.text for r in records],
        "label": [r.label for r in records],
        "generator": [r.generator for r in records],
    }
    features = Features(
        {"image": Image(), "caption": Value("string"), "label": Value("int64"), "generator": Value("string")}
    )
    folder.mkdir(parents=True, exist_ok=True)
    Dataset.from_dict(rows, features=features).to_parquet(str(folder / "data.parquet"))
    return folder
