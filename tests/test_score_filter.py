"""ScoreFilter: thresholds, keep-fraction in two passes, unscorable samples, both surfaces."""

from __future__ import annotations

from typing import Any

import datasets
import pytest

from mmsieve.filters.score_filter import ScoreFilter, top_fraction_threshold
from mmsieve.hub.sources import open_source
from mmsieve.runner import run_steps
from mmsieve.sample import Sample
from mmsieve.steps import Columns, SampleScorer


class CaptionLengthScorer(SampleScorer):
    """A model-free scorer for testing: the caption length in characters (None without a caption)."""

    name = "📏 caption length"

    def __init__(self, batch_size: int = 4):
        super().__init__(batch_size=batch_size)
        self.calls = 0

    def prepare(self, samples: list[Sample]) -> Any:
        return [len(s.text) if s.text else None for s in samples]

    def compute(self, samples: list[Sample], prepared: Any = None) -> Columns:
        self.calls += 1
        lengths = prepared if prepared is not None else self.prepare(samples)
        errors = [None if n else "text_empty: no caption to measure" for n in lengths]
        return {"caption_length": [float(n) if n else None for n in lengths], "caption_length_error": errors}

    def output_features(self) -> dict[str, Any]:
        return {"caption_length": datasets.Value("float32"), "caption_length_error": datasets.Value("string")}


def test_top_fraction_threshold():
    assert top_fraction_threshold([0.1, 0.9, 0.5, None, 0.7], 0.4) == 0.7
    assert top_fraction_threshold([3.0, 1.0, 2.0], 1.0) == 1.0
    with pytest.raises(ValueError):
        top_fraction_threshold([None], 0.5)
    with pytest.raises(ValueError):
        top_fraction_threshold([1.0], 0.0)


def test_threshold_on_samples_and_existing_columns():
    f = ScoreFilter("caption_length", threshold=5, scorer=CaptionLengthScorer(), error_column="caption_length_error")
    samples = [
        Sample.caption("a", None, "long caption"),
        Sample.caption("b", None, "abc"),
        Sample.caption("c", None, ""),
    ]
    samples.append(Sample.caption("d", None, "x", caption_length=99.0))  # already scored: not recomputed
    cols = f.process(samples)
    assert cols["keep"] == [True, False, False, True]
    assert cols["mmsieve_reason"] == [None, "low_caption_length", "text_empty", None]
    assert cols["mmsieve_detail"][1] == "caption_length 3.0000 < 5.0000"
    assert cols["caption_length"] == [12.0, 3.0, None, 99.0]


def test_keep_fraction_needs_a_fit():
    f = ScoreFilter("caption_length", keep_fraction=0.5, scorer=CaptionLengthScorer())
    with pytest.raises(RuntimeError, match="whole run"):
        f.process([Sample.caption("a", None, "text")])
    assert f.fit([1.0, 4.0, 3.0, 2.0]) == 3.0
    assert f.process([Sample.caption("a", None, "abc"), Sample.caption("b", None, "ab")])["keep"] == [True, False]
    with pytest.raises(ValueError):
        ScoreFilter("x", threshold=1, keep_fraction=0.5)


def test_keep_fraction_two_passes_in_run_steps(caption_source, tmp_path):
    scorer = CaptionLengthScorer()
    stats = run_steps(
        str(caption_source), tmp_path / "o", [ScoreFilter("caption_length", keep_fraction=0.25, scorer=scorer)]
    )
    ds = open_source(str(caption_source))
    lengths = sorted((len(c) for c in ds["caption"] if c), reverse=True)
    kept = datasets.load_dataset("parquet", data_dir=str(tmp_path / "o" / "kept"), split="train")
    removed = datasets.load_dataset("parquet", data_dir=str(tmp_path / "o" / "removed"), split="train")
    assert stats["rows_in"] == len(ds) == len(kept) + len(removed) == stats["kept"] + stats["removed"]
    assert len(kept) == round(0.25 * len(ds))
    assert min(kept["caption_length"]) == lengths[len(kept) - 1]
    assert stats["removed_by_reason"]["low_caption_length"] == len(ds) - len(kept) - 1
    assert stats["steps"][-1]["parameters"]["threshold"] == lengths[len(kept) - 1]


def test_both_surfaces_agree(caption_source, tmp_path):
    f = ScoreFilter("caption_length", threshold=40, scorer=CaptionLengthScorer(batch_size=3))
    mapped = open_source(str(caption_source)).map(f, batched=True, batch_size=5)
    run_steps(str(caption_source), tmp_path / "o", [f], tasks=2)
    kept = datasets.load_dataset("parquet", data_dir=str(tmp_path / "o" / "kept"), split="train")
    assert sorted(kept["caption"]) == sorted(c for c, k in zip(mapped["caption"], mapped["keep"]) if k)
    assert sorted(kept["caption_length"]) == sorted(s for s, k in zip(mapped["caption_length"], mapped["keep"]) if k)


def test_map_types_columns_even_when_the_first_batch_has_no_score():
    ds = datasets.Dataset.from_dict({"image": [None] * 4, "caption": ["", "", "abc", "abcd"]})
    mapped = ds.map(CaptionLengthScorer(), batched=True, batch_size=2)
    assert mapped.features["caption_length"] == datasets.Value("float32")
    assert mapped["caption_length"] == [None, None, 3.0, 4.0]
    assert mapped["caption_length_error"][:2] == ["text_empty: no caption to measure"] * 2
