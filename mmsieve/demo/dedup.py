"""The demo's dedup and decontamination stages: planted copies and planted benchmark images, then caught.

The set: every captioned scikit-image photo, plus edited copies of some of them (re-encoded at JPEG quality
40, resized to half, cropped by 3% per side), plus a few easy-vqa *test* images with captions. The
"benchmark" is the easy-vqa test split (its images, questions and answers). The embedder is pHash: no
model weights are needed, and it is what catches re-encodes and resizes in practice (SSCD, the FineVision
embedder, also survives heavier edits; its weights are not reachable offline).

Example:
    >>> report = run_dedup_stage(Path("demo_output"))  # doctest: +SKIP
    >>> report["dedup"]["caught"], report["dedup"]["planted"]  # doctest: +SKIP
    (9, 9)
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

from mmsieve.demo.corpus import demo_captions, demo_photos, image_cell, save_shards


COPIED = ("astronaut", "coffee", "chelsea")
PLANTED_TEST_IMAGES = 4
EMBEDDER = "phash"
_EDIT_NAMES = ("reencoded", "resized", "cropped")


def _edits(data: bytes) -> dict[str, bytes]:
    """Three edited copies of a JPEG: re-encoded, resized to half, cropped 3% per side."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size

    def jpeg(im: Image.Image, quality: int = 85) -> bytes:
        buffer = io.BytesIO()
        im.save(buffer, "JPEG", quality=quality)
        return buffer.getvalue()

    dx, dy = int(w * 0.03), int(h * 0.03)
    return {
        "reencoded": jpeg(image, quality=40),
        "resized": jpeg(image.resize((w // 2, h // 2), Image.Resampling.BICUBIC)),
        "cropped": jpeg(image.crop((dx, dy, w - dx, h - dy))),
    }


def build_easyvqa_benchmark(folder: Path, limit: int | None = None) -> Path:
    """The easy-vqa test split as a benchmark dataset (one row per question; images shared by questions).

    Example:
        >>> build_easyvqa_benchmark(Path("demo_output/sources/easyvqa_test_benchmark"))  # doctest: +SKIP
    """
    import easy_vqa
    from datasets import Features, Value
    from datasets import Image as ImageFeature

    questions, answers, image_ids = easy_vqa.get_test_questions()
    paths = easy_vqa.get_test_image_paths()
    rows: dict[str, list[Any]] = {"image": [], "question": [], "answer": [], "question_id": [], "image_id": []}
    for number, (question, answer, image_id) in enumerate(zip(questions, answers, image_ids)):
        if limit is not None and image_id >= limit:
            continue
        rows["image"].append({"bytes": Path(paths[image_id]).read_bytes(), "path": f"{image_id}.png"})
        rows["question"].append(question)
        rows["answer"].append(answer)
        rows["question_id"].append(str(number))
        rows["image_id"].append(int(image_id))
    features = Features(
        {
            "image": ImageFeature(),
            "question": Value("string"),
            "answer": Value("string"),
            "question_id": Value("string"),
            "image_id": Value("int64"),
        }
    )
    return save_shards(rows, features, folder, shards=1)


def build_captions_with_copies(folder: Path, test_images: list[tuple[int, bytes]]) -> tuple[Path, dict[str, int]]:
    """Caption pairs: the photos, edited copies of `COPIED`, and planted benchmark images. Returns the folder and
    the planted counts.

    Example:
        >>> build_captions_with_copies(Path("out/src"), [])[1]  # doctest: +SKIP
        {'copies': 9, 'test_images': 0}
    """
    from datasets import Features, Value
    from datasets import Image as ImageFeature

    photos, captions = demo_photos(), demo_captions()
    rows: dict[str, list[Any]] = {"image": [], "caption": [], "source": []}
    for name, data in photos.items():
        rows["image"].append(image_cell(data, f"{name}.jpg"))
        rows["caption"].append(captions[name]["good"])
        rows["source"].append("skimage")
    copies = 0
    for name in COPIED:
        for edit, data in _edits(photos[name]).items():
            rows["image"].append(image_cell(data, f"{name}_{edit}.jpg"))
            rows["caption"].append(captions[name]["good"])
            rows["source"].append(f"planted/copy/{edit}")
            copies += 1
    for image_id, data in test_images:
        rows["image"].append(image_cell(data, f"easyvqa_test_{image_id}.png"))
        rows["caption"].append("A simple drawing of a coloured shape on a white background.")
        rows["source"].append(f"planted/easy-vqa-test/{image_id}")
    features = Features({"image": ImageFeature(), "caption": Value("string"), "source": Value("string")})
    return save_shards(rows, features, folder), {"copies": copies, "test_images": len(test_images)}


def run_dedup_stage(out: Path, verbose: bool = True) -> dict[str, Any]:
    """Dedup the planted copies away, build the easy-vqa benchmark index, decontaminate; report what was caught.

    Example:
        >>> run_dedup_stage(Path("demo_output"))["decontamination"]["caught"]  # doctest: +SKIP
        4
    """
    import easy_vqa

    from mmsieve.dedup.contamination_index import BenchmarkSpec, build_index
    from mmsieve.dedup.decontaminate import DecontaminationFilter
    from mmsieve.dedup.embedders import parse_embedder
    from mmsieve.dedup.run import run_dedup
    from mmsieve.runner import run_steps

    paths = easy_vqa.get_test_image_paths()
    picks = [0, 7, 13, 21][:PLANTED_TEST_IMAGES]
    planted_images = [(i, Path(paths[i]).read_bytes()) for i in picks]
    source, planted = build_captions_with_copies(out / "sources" / "captions_with_copies", planted_images)
    dedup = run_dedup([str(source)], out / "captions_dedup", EMBEDDER, tasks=2, overwrite=True)
    benchmark = build_easyvqa_benchmark(out / "sources" / "easyvqa_test_benchmark")
    spec = BenchmarkSpec(name="easy-vqa", repo=str(benchmark), split="train", image_id_column="image_id")
    index_folder = out / "benchmark_index"
    meta = build_index([spec], parse_embedder(EMBEDDER), index_folder)
    decont = run_steps(
        str(out / "captions_dedup" / "kept"),
        out / "captions_decontaminated",
        [DecontaminationFilter(str(index_folder))],
        tasks=2,
        overwrite=True,
    )
    import datasets

    removed = datasets.load_dataset("parquet", data_dir=str(out / "captions_dedup" / "removed"), split="train")
    by_edit = {edit: sum(src == f"planted/copy/{edit}" for src in removed["source"]) for edit in _EDIT_NAMES}
    report = {
        "embedder": EMBEDDER,
        "dedup": {
            "rows_in": dedup["rows_in"],
            "planted": planted["copies"],
            "caught": dedup["removed_by_reason"].get("near_duplicate", 0),
            "caught_by_edit": {edit: f"{n}/{len(COPIED)}" for edit, n in by_edit.items()},
            "clusters": dedup["dedup"]["clusters"],
            "threshold": dedup["dedup"]["threshold"],
        },
        "decontamination": {
            "index_items": meta["items"],
            "index_images": meta["images"],
            "rows_in": decont["rows_in"],
            "planted": planted["test_images"],
            "caught": decont["removed_by_reason"].get("contaminated", 0),
            "by_benchmark": decont.get("contamination", {}),
        },
    }
    if verbose:
        d, c = report["dedup"], report["decontamination"]
        print(f"\n== dedup ({EMBEDDER}, cosine >= {d['threshold']:.3f}) over {d['rows_in']} captions")
        print(
            f"  planted edited copies {d['planted']}, removed as near_duplicate {d['caught']} ({d['clusters']} clusters); "
            f"caught by edit {d['caught_by_edit']} (pHash misses crops; SSCD is built for them)"
        )
        print(f"  outputs: {out / 'captions_dedup'}/kept, removed (dup_of, dup_cluster, dup_similarity)")
        print(
            f"== decontamination against the easy-vqa test split ({c['index_images']} images, {c['index_items']} questions)"
        )
        print(f"  planted test images {c['planted']}, removed as contaminated {c['caught']}: {c['by_benchmark']}")
        print(f"  outputs: {out / 'captions_decontaminated'}/kept, removed (contaminated_with)")
    return report
