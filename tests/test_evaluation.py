"""Evaluation metrics (the `quality_metric` evaluate module), the report files and the model card."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from huggingface_hub import EvalResult, ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from PIL import Image
from scipy.stats import spearmanr
from sklearn.metrics import f1_score

from mmsieve.hub.cards import MODEL_CARD_TEMPLATE, render_model_card
from mmsieve.training.evaluation import (
    QUALITY_METRIC_PATH,
    class_from_score,
    evaluate_predictions,
    load_quality_metric,
    write_report,
)
from mmsieve.training.levels import LEVELS


# Raw regression outputs, with negatives, values over 3 and exact halves (Python rounds halves to even).
SCORES = [-0.7, 0.4, 0.5, 1.49, 1.5, 2.2, 2.5, 2.51, 3.8, 0.9]
LABELS = [0, 0, 1, 1, 2, 2, 3, 3, 3, 2]
KINDS = ["caption", "interleaved", "caption", "conversation", "interleaved", "caption", "caption", "interleaved",
         "conversation", "caption"]  # fmt: skip
# round(clamp(x, 0, 3)):  0    0    0    1     2    2    2    3     3    1
CLASSES = [0, 0, 0, 1, 2, 2, 2, 3, 3, 1]


def test_class_from_score_rounds_and_clamps():
    assert [class_from_score(s) for s in SCORES] == CLASSES
    assert class_from_score(-12.0) == 0 and class_from_score(9.9) == 3 and class_from_score(3.0) == 3


def test_metric_module_loads_offline_by_path():
    import evaluate

    metric = evaluate.load(str(QUALITY_METRIC_PATH), keep_in_memory=True)
    assert metric.compute(predictions=[0.2, 2.6, 3.4], references=[0, 3, 3])["accuracy"] == 1.0
    assert load_quality_metric() is load_quality_metric()  # loaded once


def test_metrics_match_hand_computed_values():
    metrics = evaluate_predictions(SCORES, LABELS)["overall"]
    # correct: idx 0, 1, 3, 4, 5, 7, 8 -> 7 of 10
    assert metrics["accuracy"] == pytest.approx(0.7)
    assert metrics["num_samples"] == 10 and metrics["num_unscored"] == 0
    assert metrics["mae"] == pytest.approx(sum(abs(s - y) for s, y in zip(SCORES, LABELS)) / 10)
    assert metrics["mae"] == pytest.approx((0.7 + 0.4 + 0.5 + 0.49 + 0.5 + 0.2 + 0.5 + 0.49 + 0.8 + 1.1) / 10)
    assert metrics["macro_f1"] == pytest.approx(f1_score(LABELS, CLASSES, average="macro"))
    # per level F1: 0 -> 2*1*(2/3)/(5/3) = 0.8; 1 -> 2*.5*.5/1 = 0.5; 2 -> 2*(2/3)*(2/3)/(4/3) = 2/3; 3 -> 0.8
    assert metrics["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3 + 0.8) / 4)
    assert metrics["spearman"] == pytest.approx(spearmanr(SCORES, LABELS).statistic)
    assert metrics["confusion_matrix"] == [
        [2, 0, 0, 0],
        [1, 1, 0, 0],
        [0, 1, 2, 0],
        [0, 0, 1, 2],
    ]
    json.dumps(metrics)  # plain Python values only


def test_confusion_matrix_is_four_by_four_when_levels_are_missing():
    metrics = evaluate_predictions([3.2, 2.9], [3, 3])["overall"]
    assert metrics["confusion_matrix"] == [[0] * 4, [0] * 4, [0] * 4, [0, 0, 0, 2]]
    assert metrics["accuracy"] == 1.0 and metrics["macro_f1"] == 1.0
    assert metrics["spearman"] is None  # constant labels


def test_per_kind_breakdown():
    results = evaluate_predictions(SCORES, LABELS, kinds=KINDS)
    assert list(results["per_kind"]) == ["caption", "interleaved", "conversation"]  # mmsieve's KINDS order
    caption = results["per_kind"]["caption"]
    rows = [i for i, kind in enumerate(KINDS) if kind == "caption"]  # 0, 2, 5, 6, 9
    assert caption["num_samples"] == 5
    assert caption["accuracy"] == pytest.approx(2 / 5)  # idx 0 and 5 right
    assert caption["mae"] == pytest.approx(sum(abs(SCORES[i] - LABELS[i]) for i in rows) / 5)
    assert sum(results["per_kind"][k]["num_samples"] for k in results["per_kind"]) == 10
    assert evaluate_predictions(SCORES, LABELS)["per_kind"] == {}
    other = evaluate_predictions([1.0, 2.0], [1, 2], kinds=["screenshot", "caption"])["per_kind"]
    assert list(other) == ["caption", "screenshot"]


def test_constant_predictions_and_unscored_rows():
    metrics = evaluate_predictions([1.0] * 4, [0, 1, 2, 3])["overall"]
    assert metrics["spearman"] is None
    assert metrics["accuracy"] == 0.25 and metrics["mae"] == pytest.approx(1.0)
    results = evaluate_predictions([None, float("nan"), 2.0], [1, 2, 2], kinds=["caption", "caption", "interleaved"])
    assert results["overall"]["num_samples"] == 1 and results["overall"]["num_unscored"] == 2
    caption = results["per_kind"]["caption"]
    assert caption["num_samples"] == 0 and caption["accuracy"] is None and caption["confusion_matrix"] is None


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="labels"):
        evaluate_predictions([1.0, 2.0], [1])
    with pytest.raises(ValueError, match="kinds"):
        evaluate_predictions([1.0, 2.0], [1, 2], kinds=["caption"])
    with pytest.raises(ValueError, match="0..3"):
        evaluate_predictions([1.0], [4])


def test_write_report(tmp_path):
    results = evaluate_predictions(SCORES, LABELS, kinds=KINDS)
    paths = write_report(results, tmp_path / "report")
    assert json.loads(paths["eval_results"].read_text()) == results
    assert paths["confusion_matrix"].name == "confusion_matrix.png"
    with Image.open(paths["confusion_matrix"]) as image:
        image.verify()
    with Image.open(paths["confusion_matrix"]) as image:
        assert image.format == "PNG"
        assert 300 <= image.width <= 2000 and 300 <= image.height <= 2000
    assert 5_000 < paths["confusion_matrix"].stat().st_size < 500_000
    # a report of a subset with no scored samples still renders
    empty = evaluate_predictions([None], [1])
    assert write_report(empty, tmp_path / "empty")["confusion_matrix"].exists()


def _card(**kwargs) -> ModelCard:
    results = evaluate_predictions(SCORES, LABELS, kinds=KINDS)
    defaults = {
        "repo_id": "someone/unifilter-tiny",
        "base_model": ["Qwen/Qwen3-0.6B", "google/siglip2-so400m-patch14-384"],
        "results": results,
        "eval_dataset": "someone/shapes-eval",
        "eval_dataset_name": "Synthetic shapes (eval)",
        "train_datasets": ["someone/shapes-train"],
        "training_data": "Rendered shapes with captions at four quality levels.",
        "stages": ["projector alignment (LLM frozen)", "classifier (LLM + projector, MSE on levels)"],
        "hyperparameters": {"learning_rate": 2e-5, "epochs": 10, "mm_num_image_tokens": 144},
        "limitations": ["Trained on synthetic shapes only."],
    }
    return render_model_card(**{**defaults, **kwargs})


def test_model_card_metadata_and_model_index_round_trip(tmp_path):
    assert MODEL_CARD_TEMPLATE.is_file()
    card = _card()
    path = tmp_path / "README.md"
    card.save(path)
    text = path.read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["library_name"] == "transformers" and front["license"] == "apache-2.0"
    assert {"mmsieve", "unifilter", "quality-classifier"} <= set(front["tags"])
    assert front["base_model"] == ["Qwen/Qwen3-0.6B", "google/siglip2-so400m-patch14-384"]
    name, eval_results = model_index_to_eval_results(front["model-index"])
    assert name == "unifilter-tiny"
    assert all(isinstance(r, EvalResult) for r in eval_results)
    by_name = {r.metric_name: r for r in eval_results}
    assert by_name["Accuracy"].metric_type == "accuracy" and by_name["Accuracy"].metric_value == pytest.approx(0.7)
    assert by_name["Macro F1"].metric_type == "f1" and by_name["Macro F1"].metric_args == {"average": "macro"}
    assert by_name["Spearman"].metric_type == "spearmanr" and by_name["MAE"].metric_type == "mae"
    assert by_name["Accuracy (caption)"].metric_value == pytest.approx(0.4)
    assert {r.dataset_type for r in eval_results} == {"someone/shapes-eval"}
    assert {r.dataset_split for r in eval_results} == {"test"}
    reloaded = ModelCard.load(path)
    assert len(reloaded.data.eval_results) == len(eval_results)


def test_model_card_body():
    text = str(_card())
    assert 'UniFilterScorer("someone/unifilter-tiny")' in text and "ds.map(" in text
    assert "mmsieve score --model someone/unifilter-tiny" in text
    assert "import mmsieve" in text and "AutoModelForSequenceClassification" in text
    for lv in LEVELS:
        assert f"| {lv.value} | {lv.name} | {lv.definition} |" in text
    assert "| `learning_rate` | 2e-05 |" in text
    assert "| all | 10 | 0.700 |" in text and "| caption | 5 | 0.400 |" in text
    assert "| **3 good** | 0 | 0 | 1 | 2 |" in text
    assert "![confusion matrix](confusion_matrix.png)" in text
    assert "Trained on synthetic shapes only." in text and "Random initialisation" not in text
    assert "arXiv:2510.15162" in text and "@article{" in text


def test_model_card_without_base_model_or_results():
    card = render_model_card(repo_id="someone/random-init", limitations=["Trained on synthetic shapes."])
    text = str(card)
    assert "Random initialisation" in text and "random initialisation" in text
    assert "No evaluation results" in text
    front = yaml.safe_load(text.split("---\n")[1])
    assert "model-index" not in front and "base_model" not in front
    with pytest.raises(ValueError, match="eval_dataset"):
        render_model_card(repo_id="someone/x", results=evaluate_predictions(SCORES, LABELS))


def test_model_card_spearman_undefined_is_left_out_of_model_index():
    card = _card(results=evaluate_predictions([1.0] * 4, [0, 1, 2, 3]))
    _, eval_results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert "spearmanr" not in {r.metric_type for r in eval_results}
    assert "| all | 4 | 0.250 | " in str(card) and "n/a" in str(card)


def test_model_card_leaks_no_token(monkeypatch):
    token = "hf_" + "Abc123" * 6
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", token)
    text = str(_card(hyperparameters={"learning_rate": 1e-4, "hub_token": token, "push_to_hub_token": "secret"}))
    assert token not in text and "hub_token" not in text and "secret" not in text
    assert "learning_rate" in text
    with pytest.raises(ValueError, match="token"):
        _card(training_data=f"made with {token}")


def test_metric_values_are_finite_floats_or_none():
    metrics = evaluate_predictions(SCORES, LABELS)["overall"]
    for key in ("accuracy", "macro_f1", "mae", "spearman"):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key])


def test_classification_heads_are_judged_by_their_argmax():
    # p = (0.1, 0.3, 0.0, 0.6) has expected level 2.1, which rounds to 2, but the head's answer is 3
    scores, labels = [2.1, 0.4], [3, 0]
    by_rounding = evaluate_predictions(scores, labels)["overall"]
    by_argmax = evaluate_predictions(scores, labels, classes=[3, 0])["overall"]
    assert by_rounding["accuracy"] == 0.5 and by_argmax["accuracy"] == 1.0
    assert by_argmax["mae"] == by_rounding["mae"]  # MAE and Spearman stay on the continuous score
    assert by_argmax["confusion_matrix"][3][3] == 1
