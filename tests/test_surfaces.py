"""One core, two surfaces: a datatrove pipeline and Dataset.map give the same decisions."""

from __future__ import annotations

import pickle
from collections import Counter

import datasets
from datatrove.executor import LocalPipelineExecutor

from mmsieve import reasons
from mmsieve.demo.corpus import BROKEN_IMAGE_REASONS
from mmsieve.documents import sample_to_document
from mmsieve.filters import HygieneFilter
from mmsieve.hub.sources import open_source
from mmsieve.runner import run_steps
from mmsieve.sample import ImageRef, Sample
from mmsieve.schemas import Schema, row_to_sample
from mmsieve.writers import SampleWriter


def _removed_by_source(ds) -> Counter:
    return Counter((s, r) for s, k, r in zip(ds["source"], ds["keep"], ds["mmsieve_reason"]) if not k)


def test_map_and_datatrove_agree(caption_source, tmp_path):
    ds = open_source(str(caption_source))
    mapped = ds.map(HygieneFilter(), batched=True, batch_size=7)  # the first batches drop nothing
    assert mapped.features["mmsieve_reason"] == datasets.Value("string")
    assert mapped.features["image"] == ds.features["image"]
    assert mapped["mmsieve_reason"][0] is None
    stats = run_steps(str(caption_source), tmp_path / "out", [HygieneFilter()], tasks=2, workers=1)
    removed = datasets.load_dataset("parquet", data_dir=str(tmp_path / "out" / "removed"), split="train")
    kept = datasets.load_dataset("parquet", data_dir=str(tmp_path / "out" / "kept"), split="train")
    assert Counter(zip(removed["source"], removed["mmsieve_reason"])) == _removed_by_source(mapped)
    assert len(kept) == sum(mapped["keep"]) == stats["kept"]
    assert stats["rows_in"] == len(ds) == stats["kept"] + stats["removed"]


def test_map_with_processes_and_indices(caption_source):
    ds = open_source(str(caption_source))
    serial = ds.map(HygieneFilter(), batched=True, batch_size=5)
    parallel = ds.map(HygieneFilter(), batched=True, batch_size=5, num_proc=2, with_indices=True)
    assert serial["keep"] == parallel["keep"]
    assert serial["mmsieve_reason"] == parallel["mmsieve_reason"]


def test_chained_map_filters_keep_the_first_reason(caption_source):
    ds = open_source(str(caption_source))
    first = ds.map(HygieneFilter(), batched=True)
    strict = first.map(HygieneFilter(min_side=10_000), batched=True)
    for before_keep, before, after_keep, after in zip(
        first["keep"], first["mmsieve_reason"], strict["keep"], strict["mmsieve_reason"]
    ):
        assert after_keep is False
        assert after == (before if not before_keep else reasons.IMAGE_TOO_SMALL)


def test_step_pickles_after_use(photos):
    step = HygieneFilter(min_side=8)
    step.process([Sample.caption("a", ImageRef(data=photos["coffee"]), "Coffee.")])
    clone = pickle.loads(pickle.dumps(step))
    assert clone.config == step.config
    assert clone.process([Sample.caption("a", ImageRef(data=photos["coffee"]), "Coffee.")])["keep"] == [True]


def test_bad_input_corpus_end_to_end(tmp_path, photos, broken):
    """Every bad input through a real datatrove run: no crash, a precise reason, rows in = kept + removed."""
    schema = Schema.for_format("caption")
    expected: dict[str, str | None] = {}
    samples: list[Sample] = []

    def add(case: str, sample: Sample, reason: str | None) -> None:
        sample.meta["case"] = case
        samples.append(sample)
        expected[case] = reason

    for name, data in broken.items():
        image = None if data is None else ImageRef(data=data, path=name)
        add(name, Sample.caption(name, image, "A photo."), BROKEN_IMAGE_REASONS[name])
    chelsea = ImageRef(data=photos["chelsea"])
    add("empty_caption", Sample.caption("e", chelsea, ""), reasons.TEXT_EMPTY)
    add("1mb_caption", Sample.caption("m", chelsea, "x" * 1_000_000), reasons.TEXT_TOO_LONG)
    add("lone_surrogate", Sample.caption("s", chelsea, "caf\udce9"), reasons.TEXT_INVALID_UNICODE)
    missing = row_to_sample({"image": {"bytes": photos["coffee"], "path": "c.jpg"}, "case": "x"}, schema, "mc")
    add("missing_column", missing, reasons.MISSING_COLUMN)
    add("good", Sample.caption("g", chelsea, "A tabby cat."), None)

    features = datasets.Features(
        {"image": datasets.Image(), "caption": datasets.Value("string"), "case": datasets.Value("string")}
    )
    removed_writer = SampleWriter(str(tmp_path / "removed"), schema, _with_reason(features), with_reason=True)
    kept_writer = SampleWriter(str(tmp_path / "kept"), schema, features)
    docs = [sample_to_document(s) for s in samples]
    executor = LocalPipelineExecutor(
        [docs, HygieneFilter(exclusion_writer=removed_writer), kept_writer],
        tasks=1,
        logging_dir=str(tmp_path / "logs"),
    )
    executor.run()
    kept = datasets.load_dataset("parquet", data_dir=str(tmp_path / "kept"), split="train")
    removed = datasets.load_dataset("parquet", data_dir=str(tmp_path / "removed"), split="train")
    assert len(kept) + len(removed) == len(samples)
    assert set(kept["case"]) == {case for case, reason in expected.items() if reason is None}
    assert dict(zip(removed["case"], removed["mmsieve_reason"])) == {
        c: r for c, r in expected.items() if r is not None
    }
    assert all(removed["mmsieve_detail"])
    assert isinstance(kept.features["image"], datasets.Image)
    assert kept[0]["image"].size  # decodes back to a PIL image
    surrogate_row = removed[removed["case"].index("lone_surrogate")]
    assert surrogate_row["caption"] == "caf\ufffd"


def _with_reason(features: datasets.Features) -> datasets.Features:
    return datasets.Features(
        {**features, "mmsieve_reason": datasets.Value("string"), "mmsieve_detail": datasets.Value("string")}
    )


def test_build_pipeline_runs_under_a_plain_executor(caption_source, tmp_path):
    from mmsieve.readers import SampleReader
    from mmsieve.runner import build_pipeline

    pipeline = build_pipeline(SampleReader(str(caption_source)), tmp_path / "out", [HygieneFilter()])
    LocalPipelineExecutor(pipeline, tasks=2, workers=2, logging_dir=str(tmp_path / "logs")).run()
    kept = datasets.load_dataset("parquet", data_dir=str(tmp_path / "out" / "kept"), split="train")
    removed = datasets.load_dataset("parquet", data_dir=str(tmp_path / "out" / "removed"), split="train")
    assert len(kept) + len(removed) == len(open_source(str(caption_source)))
    assert set(removed["mmsieve_reason"]) >= {reasons.IMAGE_TRUNCATED, reasons.TEXT_EMPTY}
