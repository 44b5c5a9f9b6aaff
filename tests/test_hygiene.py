"""The hygiene checks on a bad-input corpus: every case gets a precise reason, nothing raises."""

from __future__ import annotations

import pytest

from mmsieve import reasons
from mmsieve.demo.corpus import BROKEN_IMAGE_REASONS
from mmsieve.filters import HygieneConfig, HygieneFilter, approx_tokens, hygiene_checks
from mmsieve.sample import ImageRef, Sample, Turn


def _one(sample: Sample, **config) -> tuple[bool, str | None, str | None]:
    cols = hygiene_checks([sample], HygieneConfig(**config))
    return cols["keep"][0], cols["mmsieve_reason"][0], cols["mmsieve_detail"][0]


@pytest.mark.parametrize("name", sorted(BROKEN_IMAGE_REASONS))
def test_each_broken_image_gets_its_reason(broken, name):
    image = None if broken[name] is None else ImageRef(data=broken[name], path=name)
    keep, reason, detail = _one(Sample.caption("x", image, "A photo."))
    assert reason == BROKEN_IMAGE_REASONS[name], detail
    assert keep is (BROKEN_IMAGE_REASONS[name] is None)
    if not keep:
        assert detail


def test_good_photos_are_kept(photos):
    samples = [Sample.caption(n, ImageRef(data=b), "A real photo.") for n, b in photos.items()]
    assert all(hygiene_checks(samples)["keep"])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (None, reasons.TEXT_MISSING),
        ("", reasons.TEXT_EMPTY),
        ("  \n\t", reasons.TEXT_EMPTY),
        ("x" * 1_000_000, reasons.TEXT_TOO_LONG),
        ("bad \ud800 surrogate", reasons.TEXT_INVALID_UNICODE),
    ],
)
def test_text_cases(photos, text, reason):
    keep, got, _ = _one(Sample.caption("x", ImageRef(data=photos["chelsea"]), text))
    assert (keep, got) == (False, reason)


def test_text_bounds_in_chars_and_tokens(photos):
    sample = Sample.caption("x", ImageRef(data=photos["chelsea"]), "A cat, sitting.")
    assert approx_tokens("A cat, sitting.") == 5
    assert _one(sample, min_tokens=6)[1] == reasons.TEXT_TOO_SHORT
    assert _one(sample, max_tokens=4)[1] == reasons.TEXT_TOO_LONG
    assert _one(sample, min_chars=20)[1] == reasons.TEXT_TOO_SHORT
    assert _one(sample, max_chars=10)[1] == reasons.TEXT_TOO_LONG
    assert _one(sample, min_tokens=5, max_tokens=5)[0] is True


def test_image_size_and_aspect(photos):
    sample = Sample.caption("x", ImageRef(data=photos["chelsea"]), "A cat.")  # 451x300
    assert _one(sample, min_side=301)[1] == reasons.IMAGE_TOO_SMALL
    assert _one(sample, max_aspect_ratio=1.4)[1] == reasons.IMAGE_ASPECT_RATIO
    assert _one(sample, max_pixels=451 * 300 - 1)[1] == reasons.IMAGE_TOO_MANY_PIXELS
    assert _one(sample, min_side=300, max_aspect_ratio=1.51, max_pixels=451 * 300)[0] is True


def test_interleaved_image_counts(photos):
    img = ImageRef(data=photos["coffee"])
    none = Sample.interleaved("d0", [], ["Text only."])
    fifty = Sample.interleaved("d50", [img] * 50, ["Gallery.", *range(50)])
    ok = Sample.interleaved("ok", [img, img], ["Intro.", 0, "Middle.", 1])
    assert _one(none)[1] == reasons.TOO_FEW_IMAGES
    assert _one(fifty)[1] == reasons.TOO_MANY_IMAGES
    assert _one(fifty, max_images=50)[0] is True
    assert _one(ok)[0] is True


def test_interleaved_bad_image_is_located(photos, broken):
    doc = Sample.interleaved(
        "d", [ImageRef(data=photos["coffee"]), ImageRef(data=broken["truncated_jpeg"])], ["A", 0, 1]
    )
    keep, reason, detail = _one(doc)
    assert (keep, reason) == (False, reasons.IMAGE_TRUNCATED)
    assert detail.startswith("image 1")


def test_conversation_turn_bounds(photos):
    img = [ImageRef(data=photos["camera"])]
    turns = [Turn("What is the man holding?", "A camera.")] * 3
    assert _one(Sample.conversation("c", img, []))[1] == reasons.TOO_FEW_TURNS
    assert _one(Sample.conversation("c", img, turns), max_turns=2)[1] == reasons.TOO_MANY_TURNS
    assert _one(Sample.conversation("c", img, [Turn(" ", "")]))[1] == reasons.TEXT_EMPTY
    long_turn = Turn("Describe it.", "word " * 9000)
    assert _one(Sample.conversation("c", img, [long_turn]))[1] == reasons.TEXT_TOO_LONG
    assert _one(Sample.conversation("c", [], turns))[0] is True  # text-only conversations are allowed
    assert _one(Sample.conversation("c", img, turns))[0] is True


def test_invalid_source_rows_keep_their_reason():
    step = HygieneFilter()
    bad = Sample.invalid("r", "interleaved", reasons.MALFORMED_ROW, "images has 2 entries, texts has 3")
    cols = step.process([bad])
    assert cols["keep"] == [False]
    assert cols["mmsieve_reason"] == [reasons.MALFORMED_ROW]
    assert cols["mmsieve_detail"] == ["images has 2 entries, texts has 3"]


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="max_aspect_ratio"):
        HygieneConfig(max_aspect_ratio=0.5)
    with pytest.raises(ValueError, match="min_side"):
        HygieneConfig(min_side=-1)
