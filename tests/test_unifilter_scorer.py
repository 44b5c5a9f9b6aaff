"""UniFilter scoring: official input assembly, batching invariance, limits, bad input, both surfaces."""

from __future__ import annotations

import io

import datasets
import pytest
from PIL import Image

from mmsieve import reasons
from mmsieve.filters.unifilter import UniFilterFilter, UniFilterScorer
from mmsieve.filters.unifilter_inputs import (
    IMAGE_TOKEN_INDEX,
    caption_sequence,
    document_sequence,
    sample_parts,
    token_budget_batches,
)
from mmsieve.hub.sources import open_source
from mmsieve.models.tiny import build_tiny_unifilter
from mmsieve.runner import run_steps
from mmsieve.sample import ImageRef, Sample, Turn


@pytest.fixture(scope="module")
def qwen2_ckpt(tmp_path_factory):
    return str(build_tiny_unifilter(tmp_path_factory.mktemp("uf") / "qwen2", llm="qwen2"))


@pytest.fixture(scope="module")
def qwen3_ckpt(tmp_path_factory):
    return str(build_tiny_unifilter(tmp_path_factory.mktemp("uf") / "qwen3", llm="qwen3"))


@pytest.fixture(scope="module")
def scorer(qwen2_ckpt):
    return UniFilterScorer(qwen2_ckpt, batch_size=8)


def _png(width: int, height: int, colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def _mixed(photos) -> list[Sample]:
    names = list(photos)
    out = []
    for k, name in enumerate(names[:6]):
        caption = "A photo of " + "something very detailed, " * (k * 3) + name
        out.append(Sample.caption(f"c{k}", ImageRef(data=photos[name]), caption))
    out.append(Sample.interleaved("d0", [ImageRef(data=photos["coffee"])], ["Coffee time.", 0, "It was good."]))
    out.append(
        Sample.interleaved(
            "d1", [ImageRef(data=photos["rocket"]), ImageRef(data=photos["moon"])], [0, "Launch.", 1, "The Moon " * 30]
        )
    )
    out.append(
        Sample.conversation(
            "v0", [ImageRef(data=photos["coins"])], [Turn("How many coins?", "24."), Turn("Old?", "Yes.")]
        )
    )
    return out


def test_golden_token_ids_for_each_kind(scorer):
    model = scorer.model
    bos, eos = model.bos_token_id, model.eos_token_id

    def tok(text: str) -> list[int]:
        return model.tokenizer(text, add_special_tokens=False)["input_ids"]

    caption = caption_sequence("A cat <image> on a mat.", tok, bos, eos)
    assert caption.ids == [bos, IMAGE_TOKEN_INDEX, *tok("\nA cat image on a mat."), eos]
    long = caption_sequence("word " * 200, tok, bos, eos)
    assert len(long.ids) == 75 and long.ids[-1] != eos  # the official hard cut at 75 ids, EOS included
    doc = document_sequence(["Intro <image>", 0, "More"], tok, bos, eos)
    assert doc.ids == [bos, *tok("Intro <image-placeholder>\n\n"), IMAGE_TOKEN_INDEX, *tok("\n\nMore"), eos]
    conversation = Sample.conversation("c", [ImageRef(data=b"x")], [Turn("Q?", "A.")])
    parts = sample_parts(conversation, [True])
    assert parts == [0, "User: Q?\nAssistant: A."]
    convo = document_sequence(parts, tok, bos, eos)
    assert convo.ids == [bos, IMAGE_TOKEN_INDEX, *tok("\n\nUser: Q?\nAssistant: A."), eos]


def test_document_limits(scorer):
    tok = scorer.model.tokenizer

    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    eleven = ["Gallery", *range(11)]
    skipped = document_sequence(eleven, ids, 1, 2)
    assert (skipped.reason, skipped.ids) == (reasons.TOO_MANY_IMAGES, [])
    truncated = document_sequence(eleven, ids, 1, 2, overflow="truncate")
    assert truncated.images == list(range(10)) and truncated.ids.count(IMAGE_TOKEN_INDEX) == 10
    too_long = document_sequence(["word " * 7000, 0], ids, 1, 2)
    assert too_long.reason == reasons.TEXT_TOO_LONG
    cut = document_sequence(["word " * 7000, 0], ids, 1, 2, overflow="truncate")
    assert len(cut.ids) == 6000 and cut.images == []
    assert document_sequence(["text only"], ids, 1, 2).reason == reasons.TOO_FEW_IMAGES


def test_one_pixel_images_are_dropped_with_their_slot(scorer, photos):
    doc = Sample.interleaved("d", [ImageRef(data=photos["coffee"]), ImageRef(data=_png(1, 40))], ["A", 0, "B", 1, "C"])
    prepared = scorer.prepare([doc])
    assert prepared.sequences[0].images == [0]
    assert prepared.sequences[0].ids.count(IMAGE_TOKEN_INDEX) == 1


def test_batched_equals_one_at_a_time(qwen2_ckpt, qwen3_ckpt, photos):
    samples = _mixed(photos)
    for ckpt in (qwen2_ckpt, qwen3_ckpt):
        batched = UniFilterScorer(ckpt, max_batch_tokens=2_000).process(samples)["unifilter_score"]
        alone = [UniFilterScorer(ckpt).process([s])["unifilter_score"][0] for s in samples]
        tight = UniFilterScorer(ckpt, max_batch_tokens=1).process(samples[::-1])["unifilter_score"][::-1]
        assert all(isinstance(x, float) for x in batched)
        assert max(abs(a - b) for a, b in zip(batched, alone)) <= 1e-5
        assert max(abs(a - b) for a, b in zip(batched, tight)) <= 1e-5
        assert len({round(x, 6) for x in batched}) > 1  # different inputs, different scores


def test_readout_columns(scorer, photos):
    cols = scorer.process([Sample.caption("a", ImageRef(data=photos["chelsea"]), "A cat.")])
    score = cols["unifilter_score"][0]
    assert cols["unifilter_class"][0] == round(min(max(score, 0), 3))
    assert cols["unifilter_probs"] == [None] and cols["unifilter_error"] == [None]


def test_classification_head_gives_probabilities(tmp_path, photos):
    ckpt = build_tiny_unifilter(tmp_path / "cls", num_labels=4)
    cols = UniFilterScorer(str(ckpt)).process([Sample.caption("a", ImageRef(data=photos["chelsea"]), "A cat.")])
    probs = cols["unifilter_probs"][0]
    assert len(probs) == 4 and abs(sum(probs) - 1) < 1e-5
    assert cols["unifilter_class"][0] == max(range(4), key=probs.__getitem__)
    assert abs(cols["unifilter_score"][0] - sum(k * p for k, p in enumerate(probs))) < 1e-5


def test_bad_images_give_a_reason_not_a_crash(scorer, photos, broken):
    samples = [
        Sample.caption("t", ImageRef(data=broken["truncated_jpeg"]), "A photo."),
        Sample.caption("n", None, "No image."),
        Sample.caption("r", ImageRef(data=broken["random_bytes"]), "Noise."),
        Sample.interleaved("d", [ImageRef(data=photos["coffee"]), ImageRef(data=broken["zero_bytes"])], ["A", 0, 1]),
        Sample.caption("ok", ImageRef(data=photos["coffee"]), "Coffee."),
    ]
    cols = scorer.process(samples)
    assert cols["unifilter_score"][:4] == [None] * 4 and isinstance(cols["unifilter_score"][4], float)
    codes = [e.split(":")[0] if e else None for e in cols["unifilter_error"]]
    assert codes == [
        reasons.IMAGE_TRUNCATED,
        reasons.IMAGE_MISSING,
        reasons.IMAGE_UNIDENTIFIED,
        reasons.IMAGE_EMPTY,
        None,
    ]


def test_token_budget_batches_cover_every_item_once():
    lengths = [5, 400, 30, 30, 1000, 7]
    batches = token_budget_batches(lengths, max_tokens=500)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) * max(lengths[i] for i in b) <= 500 or len(b) == 1 for b in batches)
    assert all(max(lengths[i] for i in b) <= 1.25 * min(lengths[i] for i in b) for b in batches)
    assert token_budget_batches([100, 90, 80, 79], max_tokens=10_000) == [[0, 1, 2], [3]]
    assert token_budget_batches([100, 90, 80, 79], max_tokens=10_000, max_length_ratio=2) == [[0, 1, 2, 3]]


def test_both_surfaces_agree_and_filter(qwen2_ckpt, photos, tmp_path):
    rows = {"image": [], "caption": []}
    for name, data in photos.items():
        rows["image"].append({"bytes": data, "path": f"{name}.jpg"})
        rows["caption"].append(f"A photo of {name}.")
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    (tmp_path / "src").mkdir()
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "src" / "data.parquet"))
    source = str(tmp_path / "src")
    mapped = open_source(source).map(UniFilterScorer(qwen2_ckpt), batched=True, batch_size=5)
    run_steps(source, tmp_path / "scored", [UniFilterScorer(qwen2_ckpt, batch_size=3)], tasks=2)
    scored = datasets.load_dataset("parquet", data_dir=str(tmp_path / "scored" / "kept"), split="train")
    by_caption = dict(zip(scored["caption"], scored["unifilter_score"]))
    assert max(abs(by_caption[c] - s) for c, s in zip(mapped["caption"], mapped["unifilter_score"])) <= 1e-5
    stats = run_steps(source, tmp_path / "top", [UniFilterFilter(qwen2_ckpt, keep_fraction=0.5)])
    kept = datasets.load_dataset("parquet", data_dir=str(tmp_path / "top" / "kept"), split="train")
    assert stats["kept"] == len(kept) == round(len(photos) / 2)
    assert min(kept["unifilter_score"]) >= sorted(mapped["unifilter_score"], reverse=True)[len(kept) - 1] - 1e-5
    assert stats["removed_by_reason"] == {"low_unifilter_score": len(photos) - len(kept)}
