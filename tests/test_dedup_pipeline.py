"""Near-duplicate removal and decontamination end to end: real photos, real parquet, both surfaces, the CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import pytest
from PIL import Image

from mmsieve.cli import main
from mmsieve.dedup.contamination_index import BenchmarkSpec, ContaminationIndex, build_index, load_benchmarks
from mmsieve.dedup.decontaminate import DecontaminationFilter
from mmsieve.dedup.embedders import parse_embedder
from mmsieve.dedup.near_duplicates import deduplicate
from mmsieve.dedup.run import run_dedup
from mmsieve.dedup.text_overlap import NgramIndex
from mmsieve.demo.corpus import image_cell, save_shards
from mmsieve.runner import run_steps


ORIGINALS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field")
LONG_QUESTION = "Which instrument on the left side of the laboratory bench is used to measure the temperature?"


def _jpeg(data: bytes, *, quality: int = 85, scale: float = 1.0) -> bytes:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    if scale != 1.0:
        image = image.resize((int(image.width * scale), int(image.height * scale)), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _captions(folder: Path, rows: list[tuple[bytes, str, str]], extra: dict | None = None, shards: int = 2) -> Path:
    features = {"image": datasets.Image(), "caption": datasets.Value("string"), "source": datasets.Value("string")}
    columns = {"image": [], "caption": [], "source": []}
    for k, (data, caption, source) in enumerate(rows):
        columns["image"].append(image_cell(data, f"{k}.jpg"))
        columns["caption"].append(caption)
        columns["source"].append(source)
    for name, values in (extra or {}).items():
        columns[name] = values
        features[name] = datasets.Value("float32")
    return save_shards(columns, datasets.Features(features), folder, shards=shards)


@pytest.fixture(scope="module")
def copies_source(photos, tmp_path_factory) -> Path:
    """Six different photos, then a re-encoded copy of astronaut and a resized copy of coffee (rows 6, 7)."""
    rows = [(photos[name], f"A photo: {name}.", "original") for name in ORIGINALS]
    rows.append((_jpeg(photos["astronaut"], quality=40), "The astronaut again.", "copy/reencoded"))
    rows.append((_jpeg(photos["coffee"], scale=0.5), "The coffee again.", "copy/resized"))
    return _captions(tmp_path_factory.mktemp("copies"), rows)


def _removed(out: Path) -> list[dict]:
    return datasets.load_dataset("parquet", data_dir=str(out / "removed"), split="train").to_list()


def test_dedup_removes_planted_copies_with_the_same_result_for_1_and_3_tasks(copies_source, tmp_path):
    results = {}
    for tasks in (1, 3):
        stats = run_dedup([str(copies_source)], tmp_path / f"t{tasks}", "phash", tasks=tasks, workers=1)
        assert stats["rows_in"] == 8 == stats["kept"] + stats["removed"]
        assert stats["removed_by_reason"] == {"near_duplicate": 2}
        assert stats["dedup"]["clusters"] == 2 and stats["dedup"]["duplicates"] == 2
        removed = sorted(_removed(tmp_path / f"t{tasks}"), key=lambda r: r["source"])
        assert [r["source"] for r in removed] == ["copy/reencoded", "copy/resized"]
        assert [r["dup_of"] for r in removed] == ["0", "1"]  # the originals: the smallest ids
        assert all(r["mmsieve_reason"] == "near_duplicate" and r["dup_similarity"] > 0.8 for r in removed)
        kept = datasets.load_dataset("parquet", data_dir=str(tmp_path / f"t{tasks}" / "kept"), split="train")
        assert kept.features["image"] == datasets.Image()  # the viewer still shows pictures
        keepers = [r for r in kept.to_list() if r["dup_cluster"] is not None]
        assert sorted(r["caption"] for r in keepers) == ["A photo: astronaut.", "A photo: coffee."]
        results[tasks] = [(r["source"], r["dup_of"], r["dup_cluster"]) for r in removed]
    assert results[1] == results[3]


def test_the_best_scored_sample_of_a_cluster_is_kept(photos, tmp_path):
    rows = [(photos["astronaut"], "An astronaut.", "original"), (photos["coffee"], "Coffee.", "original")]
    rows.append((_jpeg(photos["astronaut"], quality=50), "A better caption of the astronaut.", "copy"))
    source = _captions(tmp_path / "src", rows, extra={"unifilter_score": [1.0, 2.0, 2.9]}, shards=1)
    stats = run_dedup([str(source)], tmp_path / "out", "phash")  # quality column detected: unifilter_score
    (removed,) = _removed(tmp_path / "out")
    assert removed["source"] == "original" and removed["dup_of"] == "2"
    assert stats["removed"] == 1


def test_dedup_across_datasets_keeps_the_first_datasets_sample(photos, tmp_path):
    first = _captions(tmp_path / "first", [(photos[n], n, "first") for n in ("astronaut", "coffee")], shards=1)
    second_rows = [
        (_jpeg(photos["coffee"], quality=45), "coffee copy", "second"),
        (photos["rocket"], "rocket", "second"),
    ]
    second = _captions(tmp_path / "second", second_rows, shards=1)
    results = run_dedup([str(first), str(second)], tmp_path / "out", "phash")
    assert set(results) == {"first", "second"}
    assert results["first"]["removed"] == 0
    assert results["second"]["removed_by_reason"] == {"near_duplicate": 1}
    (removed,) = _removed(tmp_path / "out" / "second")
    assert removed["caption"] == "coffee copy" and removed["dup_of"] == "first:1"


def test_dataset_map_surface_matches_the_pipeline(copies_source, tmp_path):
    ds = datasets.load_dataset("parquet", data_dir=str(copies_source), split="train")
    ds = ds.cast_column("image", datasets.Image(decode=False))
    marked = deduplicate(ds, "phash")
    dropped = [r["source"] for r in marked.to_list() if not r["keep"]]
    assert sorted(dropped) == ["copy/reencoded", "copy/resized"]
    assert {r["mmsieve_reason"] for r in marked.to_list() if not r["keep"]} == {"near_duplicate"}


def test_ngram_index_finds_planted_questions_and_ignores_template_phrasing():
    items = [
        ("bench", str(k), f"What is the color of the {obj} in the image?") for k, obj in enumerate("abcdefghij" * 4)
    ]
    items.append(("bench", "unique", LONG_QUESTION))
    index = NgramIndex.build(items, n=8)
    assert index.match(f"User: {LONG_QUESTION.lower()} Assistant: the thermometer") == (
        "bench",
        "unique",
        9,
    )  # 16 words: 9 8-grams
    assert index.match("what is the color of the a in the image? red") is None  # a template shared by 40 items
    assert index.match("Which instrument is used") is None  # shorter than n words: never matched
    assert index.match("A cat sleeps on a warm windowsill in the afternoon sun.") is None


@pytest.fixture(scope="module")
def benchmark_index(photos, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    columns = {
        "image": [image_cell(photos[n], f"{n}.jpg") for n in ("camera", "rocket", "hubble_deep_field")],
        "question": [LONG_QUESTION, "What is in the picture?", "How many galaxies are visible?"],
        "answer": ["the thermometer", "a rocket", "many"],
        "question_id": ["q0", "q1", "q2"],
    }
    features = datasets.Features(
        {"image": datasets.Image(), **{k: datasets.Value("string") for k in ("question", "answer", "question_id")}}
    )
    bench = save_shards(columns, features, root / "bench", shards=1)
    spec = BenchmarkSpec(name="toybench", repo=str(bench), split="train")
    meta = build_index([spec], parse_embedder("phash"), root / "index", n=8)
    assert meta["items"] == 3 and meta["images"] == 3 and meta["embedder"] == "phash"
    return root / "index"


def test_decontamination_drops_image_and_text_matches(photos, benchmark_index, tmp_path):
    rows = [
        (_jpeg(photos["rocket"], quality=50), "A rocket on the launch pad.", "leak/image"),
        (photos["astronaut"], f"Q: {LONG_QUESTION} A: the thermometer", "leak/text"),
        (photos["coffee"], "A cup of coffee on a saucer.", "clean"),
        (photos["chelsea"], "What is in the picture?", "clean/short-question"),
    ]
    source = _captions(tmp_path / "src", rows, shards=1)
    stats = run_steps(str(source), tmp_path / "out", [DecontaminationFilter(str(benchmark_index))], tasks=2)
    assert stats["rows_in"] == 4 and stats["removed_by_reason"] == {"contaminated": 2}
    assert stats["contamination"] == {"toybench": {"image": 1, "text": 1, "total": 2}}
    removed = {r["source"]: r for r in _removed(tmp_path / "out")}
    assert removed["leak/image"]["contaminated_with"] == "toybench/q1"
    assert removed["leak/image"]["contamination_kind"] == "image"
    assert removed["leak/image"]["contamination_similarity"] > 0.8
    assert removed["leak/text"]["contaminated_with"] == "toybench/q0"
    assert removed["leak/text"]["contamination_kind"] == "text"
    kept = datasets.load_dataset("parquet", data_dir=str(tmp_path / "out" / "kept"), split="train")
    assert all(s is not None and s < 0.8 for s in kept["contamination_similarity"])  # every row gets its similarity

    # the Dataset.map surface gives the same verdicts
    ds = datasets.load_dataset("parquet", data_dir=str(source), split="train").cast_column(
        "image", datasets.Image(decode=False)
    )
    marked = ds.map(DecontaminationFilter(str(benchmark_index)), batched=True, batch_size=3)
    assert [r["keep"] for r in marked.to_list()] == [False, False, True, True]


def test_index_round_trip_and_errors(benchmark_index, tmp_path):
    index = ContaminationIndex.load(benchmark_index)
    assert len(index.vectors) == 3 and index.label(0) == "toybench/q0"
    again = ContaminationIndex.load(str(benchmark_index))
    assert again.search_images(index.vectors.vectors())[1].tolist() == [0, 1, 2]
    with pytest.raises(FileNotFoundError, match="not a contamination index"):
        ContaminationIndex.load(tmp_path)


def test_shipped_benchmark_list():
    specs = load_benchmarks()
    names = [s.name for s in specs]
    assert len(specs) == 69 and len(set(names)) == 69
    assert sum(s.repo.startswith("lmms-lab/") for s in specs[:66]) == 66
    assert len({s.repo for s in specs[:66]}) == 38  # FineVision's 38 repos -> 66 test sets
    assert {"MMStar", "MathVista", "OCRBench"} <= set(names)
    assert [s.name for s in load_benchmarks(names=["MMStar"])] == ["MMStar"]
    with pytest.raises(ValueError, match="unknown benchmarks"):
        load_benchmarks(names=["NotABenchmark"])


def test_cli_dedup_build_index_decontaminate(copies_source, benchmark_index, photos, tmp_path, capsys):
    assert main(["dedup", "--input", str(copies_source), "--output", str(tmp_path / "d"), "--embedder", "phash"]) == 0
    assert json.loads((tmp_path / "d" / "stats.json").read_text())["removed_by_reason"] == {"near_duplicate": 2}
    bench_yaml = tmp_path / "bench.yaml"
    bench_yaml.write_text(
        f"benchmarks:\n  - {{name: toybench, repo: {benchmark_index.parent / 'bench'}, split: train}}\n"
    )
    index = tmp_path / "idx"
    assert main(["build-index", "--output", str(index), "--embedder", "phash", "--benchmarks", str(bench_yaml)]) == 0
    out = tmp_path / "c"
    assert main(["decontaminate", "--input", str(copies_source), "--output", str(out), "--index", str(index)]) == 0
    # rocket, camera and hubble_deep_field are benchmark images
    assert json.loads((out / "stats.json").read_text())["removed_by_reason"] == {"contaminated": 3}
    capsys.readouterr()
    assert main(["dedup", "--input", str(copies_source), "--output", str(tmp_path / "e"), "--embedder", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmsieve dedup: error:") and "\n" not in err
    assert (
        main(["decontaminate", "--input", str(copies_source), "--output", str(out / "x"), "--index", str(tmp_path)])
        == 2
    )


def test_dedup_runs_with_a_tiny_sscd_checkpoint(copies_source, tmp_path):
    from mmsieve.models.tiny import build_tiny_sscd

    checkpoint = build_tiny_sscd(tmp_path / "sscd", torchscript=True)
    for spec in (f"sscd:{checkpoint}", f"sscd:{checkpoint / 'model.torchscript.pt'}"):
        out = tmp_path / f"out{len(spec)}"
        stats = run_dedup([str(copies_source)], out, spec, threshold=0.999, tasks=2)
        assert stats["rows_in"] == 8 == stats["kept"] + stats["removed"]
        assert stats["dedup"]["embedder"] == spec and stats["dedup"]["images"] == 8
