"""Training: loss goes down, the checkpoint reloads in the scorer, resume, stage 1, LoRA, 4-label heads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmsieve.filters.unifilter import UniFilterScorer
from mmsieve.models import UniFilterModel
from mmsieve.models.tiny import build_tiny_unifilter
from mmsieve.sample import ImageRef, Sample
from mmsieve.training.train import TrainConfig, train_classifier


SIZES = {"image_size": 32, "patch_size": 8, "num_image_tokens": 16}


def _shapes() -> tuple[list[Sample], list[int]]:
    """48 examples: 12 easy-vqa images, each captioned at the four levels."""
    from easy_vqa import get_train_image_paths, get_train_questions

    questions, answers, ids = get_train_questions()
    colours = {i: a for q, a, i in zip(questions, answers, ids) if q.startswith("what color")}
    paths = get_train_image_paths()
    samples, labels = [], []
    for image_id in sorted(colours)[:12]:
        data = Path(paths[image_id]).read_bytes()
        colour = colours[image_id]
        other = "red" if colour != "red" else "blue"
        for level, text in (
            (3, f"A {colour} shape on white."),
            (2, "A shape."),
            (1, f"A {other} shape on white."),
            (0, "www.buy-now.example"),
        ):
            samples.append(Sample.caption(f"{image_id}/{level}", ImageRef(data=data), text))
            labels.append(level)
    return samples, labels


@pytest.fixture(scope="module")
def data():
    samples, labels = _shapes()
    return (samples[:36], labels[:36]), (samples[36:], labels[36:])


def _config(**overrides) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "learning_rate": 3e-3, "batch_size": 8, "logging_steps": 1, **overrides})


def test_training_reduces_the_loss_and_the_checkpoint_reloads(data, tmp_path):
    init = build_tiny_unifilter(tmp_path / "init", **SIZES)
    result = train_classifier(init, *data, tmp_path / "out", _config())
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert losses[-1] < losses[0]
    assert {"eval_accuracy", "eval_macro_f1", "eval_mae", "eval_spearman"} <= set(result.metrics)
    saved = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert "score.weight" in saved and "model.mm_projector.mlp_projector.0.weight" in saved
    assert not any(k.startswith(("vision_tower", "classifier.")) for k in saved)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "llava_qwen" and config["mm_vision_tower"] == "vision_tower"
    reloaded = UniFilterModel.from_pretrained(tmp_path / "out")  # the shipped tower is found inside the checkpoint
    scores = UniFilterScorer(reloaded).process(data[1][0])["unifilter_score"]
    assert all(isinstance(s, float) for s in scores)
    accuracy = sum(round(min(max(s, 0), 3)) == y for s, y in zip(scores, data[1][1])) / len(scores)
    assert accuracy == pytest.approx(result.metrics["eval_accuracy"])


def test_resume_after_an_interruption(data, tmp_path, monkeypatch):
    from mmsieve.training.model import UniFilterForTraining

    init = build_tiny_unifilter(tmp_path / "init", **SIZES)
    train_classifier(init, *data, tmp_path / "out", _config(epochs=1))
    first = sorted(p.name for p in (tmp_path / "out" / "checkpoints").glob("checkpoint-*"))
    assert first == ["checkpoint-5"]
    training_batches = []
    forward = UniFilterForTraining.forward

    def counting(self, input_ids, lengths, pixel_values, labels=None):
        if self.training:
            training_batches.append(1)
        return forward(self, input_ids, lengths, pixel_values, labels)

    monkeypatch.setattr(UniFilterForTraining, "forward", counting)
    train_classifier(init, *data, tmp_path / "out", _config(epochs=2), resume=True)
    assert len(training_batches) == 5  # only the second epoch ran: the first was restored, not redone
    state = json.loads((tmp_path / "out" / "checkpoints" / "checkpoint-10" / "trainer_state.json").read_text())
    assert state["global_step"] == 10


def test_stage_one_trains_only_the_projector(data, tmp_path):
    init = build_tiny_unifilter(tmp_path / "init", **SIZES)
    before = load_file(str(init / "model.safetensors"))
    train_classifier(init, *data, tmp_path / "out", _config(objective="align", epochs=1))
    after = load_file(str(tmp_path / "out" / "model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("mm_projector" in k for k in changed)


def test_lora_merges_back_into_official_keys(data, tmp_path):
    init = build_tiny_unifilter(tmp_path / "init", **SIZES)
    train_classifier(init, *data, tmp_path / "out", _config(lora=True, lora_rank=4, epochs=1))
    saved = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert set(saved) == set(load_file(str(init / "model.safetensors")))
    assert UniFilterScorer(str(tmp_path / "out")).process(data[1][0][:2])["unifilter_score"][0] is not None


def test_four_label_cross_entropy_head(data, tmp_path):
    init = build_tiny_unifilter(tmp_path / "init", num_labels=4, **SIZES)
    result = train_classifier(init, *data, tmp_path / "out", _config(epochs=1))
    assert 0 <= result.metrics["eval_accuracy"] <= 1
    probs = UniFilterScorer(str(tmp_path / "out")).process(data[1][0][:1])["unifilter_probs"][0]
    assert len(probs) == 4
