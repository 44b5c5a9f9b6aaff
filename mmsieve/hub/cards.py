"""Model cards for trained quality classifiers: YAML metadata with a `model-index`, and a readable body.

    >>> card = render_model_card(
    ...     repo_id="me/unifilter-tiny",
    ...     base_model=["Qwen/Qwen3-0.6B", "google/siglip2-so400m-patch14-384"],
    ...     results=evaluate_predictions(scores, labels, kinds),
    ...     eval_dataset="me/unifilter-eval",
    ... )  # doctest: +SKIP
    >>> card.save("checkpoint/README.md")  # doctest: +SKIP

The template is `mmsieve/model_cards/model_card.md.j2` (shipped in the package).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from mmsieve.filters.unifilter_inputs import CAPTION_MAX_IDS, DOCUMENT_MAX_IDS, DOCUMENT_MAX_IMAGES
from mmsieve.training.evaluation import level_rows
from mmsieve.training.levels import Level


MODEL_CARD_TEMPLATE = Path(__file__).resolve().parent.parent / "model_cards" / "model_card.md.j2"
TASK_TYPE = "image-text-quality-classification"
TASK_NAME = "Image-text quality classification (levels 0-3)"
TAGS = ["mmsieve", "unifilter", "data-filtering", "multimodal", "image-text", "quality-classifier"]
# (key in the results, model-index metric type, display name, metric args)
MODEL_INDEX_METRICS = (
    ("accuracy", "accuracy", "Accuracy", None),
    ("macro_f1", "f1", "Macro F1", {"average": "macro"}),
    ("mae", "mae", "MAE", None),
    ("spearman", "spearmanr", "Spearman", None),
)
_SECRET_KEY = re.compile(r"(^|_)token$|secret|password|passwd|api_key|credential", re.IGNORECASE)
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{20,}")

__all__ = ["MODEL_CARD_TEMPLATE", "render_model_card"]


def render_model_card(
    *,
    repo_id: str,
    base_model: str | Sequence[str] | None = None,
    results: Mapping[str, Any] | None = None,
    eval_dataset: str | None = None,
    eval_dataset_name: str | None = None,
    eval_split: str | None = "test",
    train_datasets: Sequence[str] = (),
    training_data: str = "",
    stages: Sequence[str] = (),
    hyperparameters: Mapping[str, Any] | None = None,
    levels: Sequence[Level] | None = None,
    limitations: Sequence[str] = (),
    license: str = "apache-2.0",
    library_name: str = "transformers",
    model_type: str = "llava_qwen3",
    num_labels: int = 1,
    model_name: str | None = None,
    summary: str | None = None,
    confusion_matrix_image: str | None = "confusion_matrix.png",
    mmsieve_version: str | None = None,
) -> ModelCard:
    """Render the model card of a UniFilter-style quality classifier.

    Args:
        repo_id: where the checkpoint lives on the Hub (`user/name`); used in the usage examples.
        base_model: the LLM and vision tower the classifier started from (Hub ids); `None` means random
            initialisation, stated in the card and its limitations.
        results: the output of `mmsieve.training.evaluation.evaluate_predictions` (overall and per kind).
        eval_dataset: Hub id (or a short type name) of the evaluation data; required with `results`.
        eval_dataset_name: its display name (default: `eval_dataset`).
        eval_split: the evaluated split.
        train_datasets: Hub ids of the training data (card metadata `datasets`).
        training_data: a paragraph describing the training data.
        stages: one line per training stage.
        hyperparameters: rendered as a key/value table. Keys that name credentials (`hub_token`, `*_secret`,
            `password`, ...) are dropped.
        levels: the quality levels shown in the label table (default: `mmsieve.training.levels.LEVELS`).
        limitations: extra limitations, listed after the general ones.
        license / library_name: card metadata. The checkpoint is in the transformers format and loads with
            `AutoModelForSequenceClassification` once `mmsieve` is imported, hence `transformers`.
        model_type: the checkpoint's `config.model_type` (`llava_qwen3` or `llava_qwen`).
        model_name: the card title and model-index name (default: the repo name).
        summary: the opening paragraph (default: a generic UniFilter description).
        confusion_matrix_image: relative path of the image `write_report` made, shown under the results
            (`None` to leave it out, e.g. when it is not uploaded).
        mmsieve_version: named in the closing line.

    Returns:
        A `huggingface_hub.ModelCard`; `card.save(path)` writes it, `card.push_to_hub(repo_id)` uploads it.

    Raises:
        ValueError: when `results` come without `eval_dataset`, the levels are incomplete, or the rendered card
            contains something that looks like a Hugging Face token.
    """
    if results is not None and not eval_dataset:
        raise ValueError("results need eval_dataset: the Hub id or name of the data they were computed on")
    model_name = model_name or repo_id.rstrip("/").split("/")[-1]
    base_models = [base_model] if isinstance(base_model, str) else list(base_model or [])
    eval_dataset_name = eval_dataset_name or eval_dataset
    card_data = ModelCardData(
        license=license,
        library_name=library_name,
        tags=list(TAGS),
        base_model=base_models or None,
        datasets=list(train_datasets) or None,
        metrics=[metric_type for _, metric_type, _, _ in MODEL_INDEX_METRICS] if results else None,
        eval_results=_eval_results(results, eval_dataset, eval_dataset_name, eval_split) if results else None,
        model_name=model_name,
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(MODEL_CARD_TEMPLATE),
        repo_id=repo_id,
        model_name=model_name,
        model_type=model_type,
        num_labels=num_labels,
        summary=summary or _default_summary(),
        base_model=base_models,
        datasets=list(train_datasets),
        training_data=training_data or "Not described.",
        stages=list(stages),
        hyperparameters=[
            (key, value) for key, value in (hyperparameters or {}).items() if not _SECRET_KEY.search(key)
        ],
        levels=level_rows(levels),
        eval_dataset_name=eval_dataset_name,
        eval_split=eval_split,
        metric_rows=_metric_rows(results) if results else [],
        confusion_matrix=results["overall"]["confusion_matrix"] if results else None,
        confusion_matrix_image=confusion_matrix_image,
        limitations=_limitations(base_models, limitations),
        mmsieve_version=mmsieve_version,
    )
    if _HF_TOKEN.search(str(card)):
        raise ValueError(
            "the model card contains what looks like a Hugging Face token (hf_...); remove it from the inputs"
        )
    return card


def _eval_results(
    results: Mapping[str, Any], dataset: str, dataset_name: str, split: str | None
) -> list[EvalResult] | None:
    subsets = [("all", results["overall"]), *results.get("per_kind", {}).items()]
    entries = []
    for subset, metrics in subsets:
        for key, metric_type, display, args in MODEL_INDEX_METRICS:
            if metrics.get(key) is None:
                continue
            entries.append(
                EvalResult(
                    task_type=TASK_TYPE,
                    task_name=TASK_NAME,
                    dataset_type=dataset,
                    dataset_name=dataset_name,
                    dataset_split=split,
                    metric_type=metric_type,
                    metric_name=display if subset == "all" else f"{display} ({subset})",
                    metric_value=round(float(metrics[key]), 4),
                    metric_args=args,
                )
            )
    return entries or None


def _metric_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    subsets = [("all", results["overall"]), *results.get("per_kind", {}).items()]
    return [
        {
            "subset": subset,
            "num_samples": metrics["num_samples"],
            **{
                key: "n/a" if metrics.get(key) is None else f"{metrics[key]:.3f}"
                for key, _, _, _ in MODEL_INDEX_METRICS
            },
        }
        for subset, metrics in subsets
    ]


def _default_summary() -> str:
    return (
        "A UniFilter-style multimodal data-quality classifier (arXiv 2510.15162): a SigLIP vision encoder, an "
        "average-pooling projector (144 tokens per image) and a small Qwen language model with a regression head. "
        "It reads an image-caption pair, an interleaved image-text document or a visual conversation and outputs "
        "one float quality score, nominally 0 (worst) to 3 (best)."
    )


def _limitations(base_models: list[str], extra: Sequence[str]) -> list[str]:
    general = [
        "A score measures fit to the level definitions above, as learned from the training labels; it does not "
        "check factual correctness beyond them, safety, or licensing of the data.",
        "Scores are regression outputs: they can fall outside 0-3, and thresholds do not transfer between "
        "checkpoints. Calibrate a threshold or keep-fraction on your own data.",
        f"Inputs over the official limits are truncated or skipped by the scorer (captions: {CAPTION_MAX_IDS} token "
        f"ids; documents: {DOCUMENT_MAX_IMAGES} images and {DOCUMENT_MAX_IDS:,} token ids by default).",
    ]
    if not base_models:
        general.insert(0, "Trained from random initialisation, without pretrained language or vision weights.")
    return [*general, *extra]
