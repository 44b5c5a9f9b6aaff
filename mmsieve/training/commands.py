"""`mmsieve synth`, `mmsieve train` and `mmsieve eval`: build four-level data, train a classifier, evaluate it.

mmsieve synth --output synth/ --source easyvqa                      # offline, no teacher
mmsieve synth --output synth/ --source my_captions/ --generator teacher --endpoint http://localhost:8000 --model Qwen/Qwen2.5-VL-7B-Instruct
mmsieve train --data synth/ --init CHECKPOINT --output my-filter/ --epochs 3
mmsieve eval --model my-filter/ --data synth_test/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_commands(sub: Any, positive: Any) -> None:
    """Register the three subcommands on the `mmsieve` parser's subparsers."""
    synth = sub.add_parser(
        "synth",
        help="generate four-level training data (offline contrastive edits, or a teacher model)",
        description=(
            "Write texts at four quality levels (3 accurate and specific, 2 accurate but generic, 1 partly wrong or "
            "badly written, 0 unrelated, spam or garbled) for real images, as a parquet dataset: image(s), text, kind, "
            "label, generator, source_id. --source easyvqa uses the easy-vqa shapes (offline); any other source is a "
            "caption or interleaved dataset whose texts are taken as level 3."
        ),
    )
    synth.add_argument("--output", "-o", required=True, metavar="DIR", help="receives data/<split>-*.parquet")
    synth.add_argument("--source", default="easyvqa", help="easyvqa (default), or a dataset: Hub id or local shards")
    synth.add_argument("--split", default="train", help="split to read and to name the output (default train)")
    synth.add_argument("--generator", choices=("contrastive", "teacher"), default="contrastive")
    synth.add_argument("--endpoint", default=None, help="teacher: OpenAI-compatible server URL (vLLM, SGLang, TGI...)")
    synth.add_argument(
        "--model", default=None, help="teacher: model name at --endpoint, or a local/Hub VLM in-process"
    )
    synth.add_argument("--concurrency", type=positive, default=16, help="teacher: parallel requests (default 16)")
    synth.add_argument("--limit", type=positive, default=None, metavar="N", help="use only the first N images/rows")
    synth.add_argument("--per-level", type=positive, default=1, help="texts per level per image (default 1)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    train = sub.add_parser(
        "train",
        help="train a UniFilter-format quality classifier on four-level data",
        description=(
            "Train from an official-format checkpoint (--init) on `mmsieve synth` output. The validation split holds "
            "out whole images (by source_id). Writes the checkpoint (loads with `mmsieve score --model DIR`), "
            "eval_results.json, confusion_matrix.png and a model card (README.md)."
        ),
    )
    train.add_argument("--data", required=True, help="training data: `mmsieve synth` output (folder or Hub id)")
    train.add_argument("--validation", default=None, help="validation data (default: hold out --validation-fraction)")
    train.add_argument("--validation-fraction", type=float, default=0.1, help="held-out share of images (0.1)")
    train.add_argument("--init", required=True, metavar="CHECKPOINT", help="official-format UniFilter checkpoint")
    train.add_argument("--output", "-o", required=True, metavar="DIR")
    train.add_argument("--objective", choices=("classify", "align"), default="classify", help="stage 2 or stage 1")
    train.add_argument("--epochs", type=float, default=3.0)
    train.add_argument("--lr", type=float, default=2e-5, help="learning rate (recipe: 2e-5; 1e-3 for stage 1)")
    train.add_argument("--batch-size", type=positive, default=32)
    train.add_argument("--max-minutes", type=float, default=None, help="stop (after evaluating) after this long")
    train.add_argument("--lora", action="store_true", help="LoRA on the decoder (merged into the checkpoint)")
    train.add_argument("--train-vision", action="store_true", help="also train the tower (random-init models only)")
    train.add_argument("--train-llm", action="store_true", help="stage 1: also train the LLM (random-init models)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in DIR/checkpoints")
    train.add_argument("--repo-id", default=None, help="Hub id used in the model card's examples (default: DIR name)")

    evaluate = sub.add_parser(
        "eval",
        help="evaluate a classifier on labelled four-level data",
        description="Accuracy, macro-F1, MAE, Spearman and the confusion matrix, overall and per kind.",
    )
    evaluate.add_argument("--model", required=True, metavar="ID_OR_PATH", help="UniFilter-format checkpoint")
    evaluate.add_argument("--data", required=True, help="labelled data: `mmsieve synth` output (folder or Hub id)")
    evaluate.add_argument("--split", default=None, help="split of --data (default: the only one, or train)")
    evaluate.add_argument("--output", "-o", default=None, metavar="DIR", help="write eval_results.json + the PNG here")


def run_synth(args: argparse.Namespace) -> dict[str, Any]:
    """Generate the data and write it as parquet; returns counts by level and generator."""
    from collections import Counter

    from mmsieve.training.contrastive import ContrastiveGenerator, easyvqa_seeds
    from mmsieve.training.records import CaptionSeed, DocumentSeed, to_dataset

    out = Path(args.output)
    easyvqa = args.source == "easyvqa"
    failed = 0
    if args.generator == "teacher":
        seeds = (
            easyvqa_seeds(args.split, args.limit)
            if easyvqa
            else _seeds_from_source(args.source, args.split, args.limit)
        )
        records, failed = _teacher_records(args, seeds, out)
    elif easyvqa:  # the generator builds its own seeds, with the facts its level-1/0 edits need
        records = ContrastiveGenerator(args.seed, per_level=args.per_level).easyvqa(args.split, args.limit)
    else:
        seeds = _seeds_from_source(args.source, args.split, args.limit)
        generator = ContrastiveGenerator(args.seed, per_level=args.per_level)
        captions = [s for s in seeds if isinstance(s, CaptionSeed)]
        documents = [s for s in seeds if isinstance(s, DocumentSeed)]
        records = generator.captions(captions) + generator.documents(documents)
    (out / "data").mkdir(parents=True, exist_ok=True)
    to_dataset(records).to_parquet(str(out / "data" / f"{args.split}-00000-of-00001.parquet"))
    report = {
        "rows": len(records),
        "failed": failed,
        "by_level": dict(sorted(Counter(r.label for r in records).items())),
        "by_generator": dict(Counter(r.generator for r in records).most_common()),
        "output": str(out / "data"),
    }
    (out / "synth_stats.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _seeds_from_source(source: str, split: str, limit: int | None) -> list[Any]:
    """Caption and document seeds from any readable source; rows without a usable image or text are skipped."""
    from mmsieve.readers import SampleReader
    from mmsieve.schemas import rows_to_samples
    from mmsieve.training.records import CaptionSeed, DocumentSeed

    dataset, schema = SampleReader(source, split=split, limit=limit).open()
    seeds: list[Any] = []
    start = 0
    for batch in dataset.iter(batch_size=256):
        n = len(next(iter(batch.values())))
        for sample in rows_to_samples(batch, schema, [str(i) for i in range(start, start + n)]):
            try:
                seeds.append((CaptionSeed if sample.kind == "caption" else DocumentSeed).from_sample(sample))
            except ValueError:
                continue  # no usable image or text: nothing to build levels from
        start += n
    return seeds


def _teacher_records(args: argparse.Namespace, seeds: list[Any], out: Path) -> tuple[list[Any], int]:
    from mmsieve.training.records import TrainingRecord
    from mmsieve.training.teacher import OpenAIBackend, TeacherGenerator, TransformersBackend, load_generated

    if not args.model:
        raise ValueError("--generator teacher needs --model (with --endpoint for a server)")
    if args.endpoint:
        backend: Any = OpenAIBackend(args.endpoint, args.model, concurrency=args.concurrency)
    else:
        backend = TransformersBackend(args.model)
    stats = TeacherGenerator(backend).generate(seeds, output_dir=out / "shards")
    dataset = load_generated(out / "shards")
    records = [_record_from_row(row, TrainingRecord) for row in dataset]
    return records, stats.failed


def _record_from_row(row: dict[str, Any], record_class: Any) -> Any:
    images = [cell["bytes"] for cell in row["images"] if cell is not None]
    counter = iter(range(len(images)))
    segments = [next(counter) if cell is not None else text for cell, text in zip(row["images"], row["texts"])]
    return record_class(
        row["id"],
        row["kind"],
        row["label"],
        row["generator"],
        row["source_id"],
        images,
        segments,
        row["original_text"],
        row.get("edit") or "",
    )


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    """Train, evaluate on the validation split, write the report and the model card."""
    from mmsieve.training.train import TrainConfig, train_classifier
    from mmsieve.training.workflow import evaluate_checkpoint, load_training_data, split_by_source, write_card

    samples, labels = load_training_data(args.data)
    if args.validation:
        train, validation = (samples, labels), load_training_data(args.validation)
    else:
        train, validation = split_by_source(samples, labels, args.validation_fraction)
    config = TrainConfig(
        objective=args.objective,
        epochs=args.epochs,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        max_seconds=args.max_minutes * 60 if args.max_minutes else None,
        lora=args.lora,
        train_vision=args.train_vision,
        train_llm=args.train_llm,
    )
    result = train_classifier(args.init, train, validation, args.output, config, resume=args.resume)
    report = {"checkpoint": str(result.checkpoint), "train_seconds": round(result.train_seconds, 1)}
    if args.objective == "classify":
        results = evaluate_checkpoint(Path(args.output), *validation)
        card = write_card(
            args.output,
            results,
            repo_id=args.repo_id or Path(args.output).name,
            eval_dataset=args.validation or f"{args.data} (held-out images)",
            training_data=f"`{args.data}` ({len(train[0])} examples)",
            hyperparameters={k: v for k, v in vars(config).items() if k != "extra"},
        )
        report.update({k: results["overall"].get(k) for k in ("accuracy", "macro_f1", "mae", "spearman")})
        report["card"] = str(card)
    return report


def run_eval(args: argparse.Namespace) -> dict[str, Any]:
    """Score labelled data with the model and report the metrics (and files, with --output)."""
    from mmsieve.training.evaluation import write_report
    from mmsieve.training.workflow import evaluate_checkpoint, load_training_data

    samples, labels = load_training_data(args.data, args.split)
    results = evaluate_checkpoint(args.model, samples, labels)
    if args.output:
        write_report(results, args.output)
    return {k: results["overall"].get(k) for k in ("accuracy", "macro_f1", "mae", "spearman", "num_samples")}
