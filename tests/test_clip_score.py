"""CLIP score with tiny random CLIP / SigLIP / SigLIP2 models built offline: exact cosines, both surfaces, bad input."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from mmsieve import reasons
from mmsieve.filters.clip_score import ClipScoreScorer, clip_score_columns, image_text_pairs
from mmsieve.hub.sources import open_source
from mmsieve.images import decode_image
from mmsieve.models.dual_encoder import DualEncoder, ImagePreprocessing
from mmsieve.models.tiny_dual_encoder import (
    IMAGE_SIZE,
    TEXT_LENGTH,
    build_tiny_clip,
    build_tiny_siglip,
    build_tiny_siglip2,
)
from mmsieve.runner import run_steps
from mmsieve.sample import ImageRef, Sample, Turn


FAMILIES = ["clip", "siglip", "siglip2"]
BUILDERS = {"clip": build_tiny_clip, "siglip": build_tiny_siglip, "siglip2": build_tiny_siglip2}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_dual_encoders")
    return {family: build(root / family) for family, build in BUILDERS.items()}


@pytest.fixture(scope="session")
def encoders(tiny_models: dict[str, Path]) -> dict[str, DualEncoder]:
    return {family: DualEncoder.from_pretrained(path, device="cpu") for family, path in tiny_models.items()}


@pytest.fixture(scope="session")
def small_photos(photos: dict[str, bytes]) -> dict[str, bytes]:
    """The demo photos already at the models' input size, as lossless PNG: no resize on either path."""
    out = {}
    for name, data in photos.items():
        image = Image.open(io.BytesIO(data)).convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        out[name] = buffer.getvalue()
    return out


CAPTIONS = ["a photo of a cat", "a cup of coffee on a table", "a rocket launching into the sky", "an astronaut"]


def _scores(encoder: DualEncoder, samples: list[Sample], **kwargs) -> dict[str, list]:
    return clip_score_columns(samples, encoder, **kwargs)


@pytest.mark.parametrize("family", FAMILIES)
def test_scores_equal_the_cosine_of_the_hf_processor_path(family, tiny_models, encoders, small_photos):
    """Tolerance 1e-4: on images already at the model's size neither path resizes, so the only
    differences are float32 rounding in normalisation and matmul order (seen: < 1e-7)."""
    from transformers import AutoModel, AutoProcessor

    names = list(small_photos)[: len(CAPTIONS)]
    samples = [Sample.caption(n, ImageRef(data=small_photos[n]), c) for n, c in zip(names, CAPTIONS)]
    ours = np.array(_scores(encoders[family], samples)["clip_score"])

    model = AutoModel.from_pretrained(tiny_models[family], use_safetensors=True).eval()
    processor = AutoProcessor.from_pretrained(tiny_models[family])
    images = [Image.open(io.BytesIO(small_photos[n])).convert("RGB") for n in names]
    # SigLIP was trained on texts padded to max_length; NaFlex's processor defaults override the config's patching.
    text_kwargs = {
        "padding": "max_length" if family != "clip" else True,
        "truncation": True,
        "max_length": TEXT_LENGTH,
    }
    image_kwargs = {"max_num_patches": 16, "patch_size": 8} if family == "siglip2" else {}
    inputs = processor(images=images, text=CAPTIONS, return_tensors="pt", **text_kwargs, **image_kwargs)
    with torch.inference_mode():
        image_features = model.get_image_features(
            **{k: v for k, v in inputs.items() if k.startswith("pixel") or k == "spatial_shapes"}
        ).pooler_output
        text_features = model.get_text_features(
            **{k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        ).pooler_output
    reference = torch.nn.functional.cosine_similarity(image_features, text_features).numpy()
    assert np.all(np.abs(ours) <= 1.0)
    np.testing.assert_allclose(ours, reference, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_one_at_a_time_and_captions_differ(family, encoders, photos):
    from mmsieve.demo.corpus import demo_captions

    captions = demo_captions()
    samples = [Sample.caption(n, ImageRef(data=photos[n]), captions[n]["good"]) for n in photos]
    batched = _scores(encoders[family], samples, batch_size=64)["clip_score"]
    single = [_scores(encoders[family], [s], batch_size=1)["clip_score"][0] for s in samples]
    assert all(-1.0 <= s <= 1.0 for s in batched)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    # The eos post-processor gotcha: without it CLIP pools every caption at the same position.
    chelsea = ImageRef(data=photos["chelsea"])
    variants = [Sample.caption(str(k), chelsea, captions["chelsea"][k]) for k in ("good", "brief", "wrong")]
    assert len(set(_scores(encoders[family], variants)["clip_score"])) == 3


def test_long_text_is_truncated_not_fatal(encoders, photos):
    sample = Sample.caption("long", ImageRef(data=photos["coffee"]), "coffee " * 100_000)
    for encoder in encoders.values():
        assert -1.0 <= _scores(encoder, [sample])["clip_score"][0] <= 1.0


def test_interleaved_pairs_and_aggregates(encoders, photos):
    refs = [ImageRef(data=photos[n]) for n in ("coffee", "chelsea", "rocket", "astronaut")]
    segments = ["An intro.", 0, "A cup of coffee.", 1, 2, "  ", "A cat and a rocket.", 3]
    doc = Sample.interleaved("doc", refs, segments)
    pairs, verdict = image_text_pairs(doc)
    assert verdict is None
    # following text segment (blank ones skipped), else the preceding one
    assert pairs == [
        (0, "A cup of coffee."),
        (1, "A cat and a rocket."),
        (2, "A cat and a rocket."),
        (3, "A cat and a rocket."),
    ]
    encoder = encoders["clip"]
    expected = _scores(encoder, [Sample.caption(str(k), refs[k], text) for k, text in pairs])["clip_score"]
    for aggregate, combine in [("mean", np.mean), ("min", min), ("max", max), ("all", min), ("any", max)]:
        out = _scores(encoder, [doc], aggregate=aggregate)
        np.testing.assert_allclose(out["clip_scores"][0], expected, atol=1e-6)
        assert out["clip_score"][0] == pytest.approx(float(combine(expected)), abs=1e-6)
        assert out["clip_score_error"] == [None]


def test_conversation_scores_each_image_against_the_user_questions(encoders, photos):
    refs = [ImageRef(data=photos["coffee"]), ImageRef(data=photos["chelsea"])]
    turns = [Turn("What is on the table?", "A cup."), Turn(" ", "Nothing."), Turn("Is there a cat?", "Yes.")]
    conversation = Sample.conversation("c", refs, turns)
    questions = "What is on the table?\nIs there a cat?"
    assert image_text_pairs(conversation)[0] == [(0, questions), (1, questions)]
    encoder = encoders["siglip"]
    out = _scores(encoder, [conversation], aggregate="min")
    expected = _scores(encoder, [Sample.caption(str(k), ref, questions) for k, ref in enumerate(refs)])["clip_score"]
    np.testing.assert_allclose(out["clip_scores"][0], expected, atol=1e-6)
    assert out["clip_score"][0] == pytest.approx(min(expected), abs=1e-6)


def test_unscorable_samples_get_none_and_a_reason(encoders, photos, broken):
    good = ImageRef(data=photos["coffee"])
    samples = [Sample.caption(name, None if d is None else ImageRef(data=d), "A photo.") for name, d in broken.items()]
    samples += [
        Sample.caption("no_text", good, None),
        Sample.caption("blank_text", good, "   "),
        Sample.interleaved("no_image_doc", [], ["Only text."]),
        Sample.interleaved("text_free_doc", [good], [0]),
        Sample.interleaved("one_broken", [good, ImageRef(data=broken["truncated_jpeg"])], ["A.", 0, "B.", 1]),
        Sample.conversation("no_question", [good], [Turn("", "An answer.")]),
        Sample.caption("good", good, "A cup of coffee."),
    ]
    out = _scores(encoders["clip"], samples)
    codes = {s.id: (e.split(":")[0] if e else None) for s, e in zip(samples, out["clip_score_error"])}
    score = dict(zip((s.id for s in samples), out["clip_score"]))
    error = dict(zip((s.id for s in samples), out["clip_score_error"]))
    for name, data in broken.items():
        # the corrupt ones fail; odd-but-valid images (CMYK, 16-bit, 1x1, ...) still score
        expected = decode_image(data).reason
        assert codes[name] == expected
        assert (score[name] is None) == (expected is not None)
    assert codes["no_text"] == reasons.TEXT_MISSING
    assert codes["blank_text"] == codes["no_question"] == reasons.TEXT_EMPTY
    assert codes["no_image_doc"] == reasons.IMAGE_MISSING
    assert codes["text_free_doc"] == reasons.TEXT_MISSING
    assert codes["one_broken"] == reasons.IMAGE_TRUNCATED and "image 1:" in error["one_broken"]
    assert codes["good"] is None and out["clip_score"][-1] is not None


def test_naflex_grid_matches_siglip2_processor():
    from transformers.models.siglip2.image_processing_pil_siglip2 import get_image_size_for_max_num_patches

    prep = ImagePreprocessing("patches", None, None, (0.5,) * 3, (0.5,) * 3, patch_size=16, max_num_patches=256)
    for width, height in [(640, 480), (1, 5000), (224, 224), (3000, 20), (33, 17)]:
        expected_h, expected_w = get_image_size_for_max_num_patches(height, width, 16, 256)
        assert prep.patch_grid_size(width, height) == (expected_w, expected_h)


def _caption_parquet(folder: Path, photos: dict[str, bytes], broken: dict[str, bytes | None]) -> Path:
    from datasets import Dataset, Features, Image, Value

    from mmsieve.demo.corpus import demo_captions

    captions = demo_captions()
    rows = {"image": [], "caption": []}
    for name, data in photos.items():
        rows["image"].append({"bytes": data, "path": f"{name}.jpg"})
        rows["caption"].append(captions[name]["good"])
    for name in ("truncated_jpeg", "random_bytes"):
        rows["image"].append({"bytes": broken[name], "path": f"{name}.bin"})
        rows["caption"].append(f"A broken image: {name}.")
    features = Features({"image": Image(), "caption": Value("string")})
    folder.mkdir(parents=True)
    dataset = Dataset.from_dict(rows, features=features)
    for k in range(2):
        dataset.shard(2, k, contiguous=True).to_parquet(str(folder / f"part-{k:05d}.parquet"))
    return folder


def test_map_and_datatrove_agree(tiny_models, photos, broken, tmp_path):
    source = _caption_parquet(tmp_path / "source", photos, broken)
    ds = open_source(str(source))
    mapped = ds.map(ClipScoreScorer(str(tiny_models["clip"]), batch_size=4), batched=True, batch_size=5)
    stats = run_steps(str(source), tmp_path / "out", [ClipScoreScorer(str(tiny_models["clip"]))], tasks=2, workers=1)
    kept = datasets.load_dataset("parquet", data_dir=str(tmp_path / "out" / "kept"), split="train")
    assert stats["kept"] == len(kept) == len(ds)
    assert kept.features["clip_score"] == datasets.Value("float32")
    by_caption = {c: (s, e) for c, s, e in zip(kept["caption"], kept["clip_score"], kept["clip_score_error"])}
    for caption, score, error in zip(mapped["caption"], mapped["clip_score"], mapped["clip_score_error"]):
        other_score, other_error = by_caption[caption]
        assert (error or None) == other_error  # the map surface stores "" for no error
        if score is None:
            assert other_score is None and error.startswith(("image_truncated:", "image_unidentified:"))
        else:
            assert other_score == pytest.approx(score, abs=1e-6)
    assert stats["steps"][0]["parameters"] == {
        "model": str(tiny_models["clip"]),
        "aggregate": "mean",
        "score": "cosine",
    }


def test_step_is_lazy_and_pickles_before_and_after_use(tiny_models, photos):
    scorer = ClipScoreScorer(str(tiny_models["siglip"]), aggregate="max")
    assert scorer._encoder is None and scorer._pool is None  # nothing loaded in __init__
    sample = Sample.caption("a", ImageRef(data=photos["coffee"]), "A cup of coffee.")
    fresh = pickle.loads(pickle.dumps(scorer))
    first = scorer.process([sample])["clip_score"]
    assert scorer._encoder is not None
    clone = pickle.loads(pickle.dumps(scorer))
    assert clone._encoder is None and clone._pool is None and clone.aggregate == "max"
    assert clone.process([sample])["clip_score"] == fresh.process([sample])["clip_score"] == first
    assert set(scorer.output_features()) == {"clip_score", "clip_scores", "clip_score_error"}


def test_bad_arguments():
    with pytest.raises(ValueError, match="aggregate"):
        ClipScoreScorer("some/model", aggregate="median")
