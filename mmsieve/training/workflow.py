"""The steps around training that the CLI, the benchmark and the demo share.

Load generated training data, split it without leaking an image across splits, evaluate a checkpoint
through the same scorer users run, and write the evaluation report and the model card next to the
checkpoint.

Example:
    >>> samples, labels = load_training_data("synth/")  # doctest: +SKIP
    >>> train, validation = split_by_source(samples, labels, validation_fraction=0.1)  # doctest: +SKIP
    >>> results = evaluate_checkpoint("out/", *validation)  # doctest: +SKIP
    >>> write_card("out/", results, repo_id="me/my-filter", eval_dataset="synth")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmsieve.sample import Sample


def load_training_data(source: str, split: str | None = None) -> tuple[list[Sample], list[int]]:
    """Samples and labels from generated data (`mmsieve synth` output: a folder, a file or a Hub id)."""
    from mmsieve.hub.sources import open_source
    from mmsieve.training.records import row_to_training_sample

    dataset = open_source(source, split=split)
    pairs = [row_to_training_sample(row) for row in dataset]
    return [s for s, _ in pairs], [label for _, label in pairs]


def split_by_source(
    samples: Sequence[Sample], labels: Sequence[int], validation_fraction: float = 0.1
) -> tuple[tuple[list[Sample], list[int]], tuple[list[Sample], list[int]]]:
    """(train, validation), split by `source_id` so all texts of one image land in the same split.

    Deterministic: the split of a source depends only on its id.
    """

    def held_out(sample: Sample) -> bool:
        key = str(sample.meta.get("source_id") or sample.id)
        return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 16**8 < validation_fraction

    train: tuple[list[Sample], list[int]] = ([], [])
    validation: tuple[list[Sample], list[int]] = ([], [])
    for sample, label in zip(samples, labels):
        target = validation if held_out(sample) else train
        target[0].append(sample)
        target[1].append(label)
    return train, validation


def score_samples(
    checkpoint: str | Path | Any, samples: Sequence[Sample], batch_size: int = 128
) -> tuple[list[float | None], list[int | None]]:
    """`unifilter_score` and `unifilter_class` of every sample, through the scorer users run (prefetching, batching)."""
    from mmsieve.filters.unifilter import UniFilterScorer

    scorer = UniFilterScorer(
        checkpoint if not isinstance(checkpoint, Path) else str(checkpoint), batch_size=batch_size
    )
    batches = [list(samples[i : i + batch_size]) for i in range(0, len(samples), batch_size)]
    scores: list[float | None] = []
    classes: list[int | None] = []
    for _, columns in scorer.process_stream(batches):
        scores.extend(columns["unifilter_score"])
        classes.extend(columns["unifilter_class"])
    return scores, classes


def evaluate_checkpoint(
    checkpoint: str | Path | Any, samples: Sequence[Sample], labels: Sequence[int]
) -> dict[str, Any]:
    """Accuracy, macro-F1, MAE, Spearman and the confusion matrix of `checkpoint` on labelled samples, per kind too."""
    from mmsieve.training.evaluation import evaluate_predictions

    scores, classes = score_samples(checkpoint, samples)
    return evaluate_predictions(scores, list(labels), [s.kind for s in samples], classes)


def write_card(
    checkpoint: str | Path,
    results: dict[str, Any],
    *,
    repo_id: str,
    eval_dataset: str,
    eval_dataset_name: str | None = None,
    base_model: str | Sequence[str] | None = None,
    training_data: str = "",
    hyperparameters: dict[str, Any] | None = None,
    limitations: Sequence[str] = (),
    summary: str | None = None,
    stages: Sequence[str] | None = None,
) -> Path:
    """Write `eval_results.json`, `confusion_matrix.png` and `README.md` (the model card) into `checkpoint`."""
    import json

    from mmsieve.hub.cards import render_model_card
    from mmsieve.training.evaluation import write_report

    folder = Path(checkpoint)
    write_report(results, folder)
    config = json.loads((folder / "config.json").read_text())
    num_labels = config.get("num_labels") or len(config.get("id2label") or {"0": "LABEL_0"})
    card = render_model_card(
        repo_id=repo_id,
        base_model=base_model,
        results=results,
        eval_dataset=eval_dataset,
        eval_dataset_name=eval_dataset_name,
        training_data=training_data,
        stages=stages if stages is not None else [_stage2(num_labels)],
        hyperparameters=hyperparameters,
        limitations=limitations,
        model_type=config.get("model_type", "llava_qwen"),
        num_labels=num_labels,
        summary=summary,
    )
    card.save(folder / "README.md")
    return folder / "README.md"


def training_report(checkpoint: Path, card: Path, train_seconds: float, results: dict[str, Any]) -> dict[str, Any]:
    """The short JSON report of a training run: where the checkpoint and card are, time, headline test metrics.

    Example:
        >>> training_report(Path("m"), Path("m/README.md"), 12.34, {"overall": {"accuracy": 0.9}})["test"]["accuracy"]
        0.9
    """
    overall = results["overall"]
    return {
        "checkpoint": str(checkpoint),
        "card": str(card),
        "train_seconds": round(train_seconds, 1),
        "test": {k: overall.get(k) for k in ("accuracy", "macro_f1", "mae", "spearman", "num_samples")},
    }


def _stage2(num_labels: int) -> str:
    loss = "MSE on the 0-3 level" if num_labels == 1 else f"cross-entropy over {num_labels} levels"
    return f"stage 2: classifier ({loss}); vision tower frozen, LLM and projector trained"


FROM_SCRATCH_STAGES = [
    "stage 1: captioning loss on the level-3 texts, training the tower, projector and LLM (nothing is pretrained)",
    _stage2(4),
]
