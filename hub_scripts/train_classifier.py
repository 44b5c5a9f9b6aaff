"""Train a UniFilter-format quality classifier, evaluate it, publish it: four-level data -> train -> eval -> Hub.

The data has four quality levels per image (3 accurate and specific, 2 accurate but generic, 1 partly wrong
or badly written, 0 unrelated or garbled). By default it is generated offline: the contrastive generator
edits texts about the easy-vqa shapes (`--images` training images; the evaluation uses easy-vqa test images
never seen in training). `--data` takes `mmsieve synth` output instead (a folder or a Hub dataset id), e.g.
contrastive or teacher texts about your own images, evaluated on `--test-data` or on held-out images.

`--init scratch` (default) trains the small easy-vqa architecture from random weights in two stages
(captioning, then classification); `--init CHECKPOINT` fine-tunes an official-format UniFilter checkpoint
(stage 2 only, vision tower frozen). Training stops after `--minutes` (after evaluating). The checkpoint,
`eval_results.json`, `confusion_matrix.png` and the model card (README.md) go to OUTPUT/model/; `--push-to`
publishes them (safetensors only) so that `UniFilterScorer("me/my-filter")` and `mmsieve score` load it.

    python hub_scripts/train_classifier.py --output easyvqa-filter/ --images 1000 --minutes 5 \\
        --push-to me/unifilter-easyvqa-demo

    mmsieve synth --source my/captions --output synth/
    python hub_scripts/train_classifier.py --data synth/ --init weizhiwang/UniFilter-Qwen2.5-1.5B \\
        --output my-filter/ --minutes 120 --push-to me/my-filter

Training runs here (on this machine's GPU when there is one); no datatrove executor is involved.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import guarded

from mmsieve.arguments import positive
from mmsieve.training.train import TrainConfig, train_classifier
from mmsieve.training.workflow import (
    FROM_SCRATCH_STAGES,
    evaluate_checkpoint,
    load_training_data,
    split_by_source,
    training_report,
    write_card,
)


def build_parser() -> argparse.ArgumentParser:
    """The recipe's options."""
    parser = argparse.ArgumentParser(
        prog=Path(__file__).name, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data", "--input", default=None, metavar="SRC", help="`mmsieve synth` output (default: easy-vqa)"
    )
    group.add_argument("--test-data", default=None, metavar="SRC", help="evaluation data (default: held-out images)")
    group.add_argument("--images", type=positive, default=1000, help="easy-vqa: training images (default 1000)")
    group.add_argument("--validation-fraction", type=float, default=0.1, help="held-out share of images (0.1)")
    group = parser.add_argument_group("training")
    group.add_argument("--init", default="scratch", metavar="CHECKPOINT", help="scratch (default) or a checkpoint")
    group.add_argument("--output", "-o", required=True, metavar="DIR", help="receives synth/, model/, report.json")
    group.add_argument("--minutes", type=float, default=5.0, help="training time budget (default 5)")
    group.add_argument("--epochs", type=float, default=None, help="epochs (default: 12 from scratch, 3 fine-tuning)")
    group.add_argument(
        "--lr", type=float, default=None, help="learning rate (default: 3e-4 scratch, 2e-5 fine-tuning)"
    )
    group.add_argument("--batch-size", type=positive, default=32, help="examples per step (default 32)")
    group.add_argument("--seed", type=int, default=0, help="data and training seed (default 0)")
    group = parser.add_argument_group("publishing")
    group.add_argument("--push-to", default=None, metavar="REPO_ID", help="publish the checkpoint as a Hub model")
    group.add_argument("--private", action="store_true", help="create the model repo private")
    return parser


Data = tuple[list[Any], list[int]]


def easyvqa_data(out: Path, images: int, seed: int) -> tuple[Data, Data]:
    """Generate four-level texts for easy-vqa train and test images, save them under `out/synth`, return both."""
    from mmsieve.demo.training import samples_of
    from mmsieve.training.contrastive import ContrastiveGenerator
    from mmsieve.training.records import to_dataset

    generator = ContrastiveGenerator(seed=seed)
    records = {"train": generator.easyvqa("train", images), "test": generator.easyvqa("test", max(4, images // 3))}
    (out / "synth" / "data").mkdir(parents=True, exist_ok=True)
    for split, rows in records.items():
        to_dataset(rows).to_parquet(str(out / "synth" / "data" / f"{split}-00000-of-00001.parquet"))
    return samples_of(records["train"]), samples_of(records["test"])


def train(args: argparse.Namespace, train_data: Data, validation: Data, out: Path) -> tuple[Path, float]:
    """Train within the time budget; returns the checkpoint folder and the training seconds."""
    seconds = args.minutes * 60
    if args.init == "scratch":
        from mmsieve.demo.training import EASYVQA_MODEL, train_two_stages
        from mmsieve.models.tiny import build_tiny_unifilter

        init = build_tiny_unifilter(out / "init", seed=args.seed, **EASYVQA_MODEL)
        epochs, lr = args.epochs or 12, args.lr or 3e-4
        return train_two_stages(init, train_data, validation, out, seconds, epochs, learning_rate=lr)
    config = TrainConfig(
        epochs=args.epochs or 3,
        learning_rate=args.lr or 2e-5,
        batch_size=args.batch_size,
        max_seconds=seconds,
        seed=args.seed,
    )
    result = train_classifier(args.init, train_data, validation, out / "model", config)
    return result.checkpoint, result.train_seconds


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    """Run the recipe; returns the exit code (0, or 2 with one line on stderr for a fixable error)."""
    args = build_parser().parse_args(argv)
    out = Path(args.output)
    if args.data:
        samples, labels = load_training_data(args.data)
        data_name = args.data
        train_data, held_out = split_by_source(samples, labels, args.validation_fraction)
        test = load_training_data(args.test_data) if args.test_data else held_out
        test_name = args.test_data or f"{args.data} (held-out images)"
    else:
        everything, test = easyvqa_data(out, args.images, args.seed)
        data_name, test_name = "easy-vqa (contrastive texts)", "easy-vqa test images"
        train_data, held_out = split_by_source(*everything, args.validation_fraction)
    print(f"training on {len(train_data[0])} texts, validating on {len(held_out[0])}, testing on {len(test[0])}")

    checkpoint, seconds = train(args, train_data, held_out, out)
    results = evaluate_checkpoint(checkpoint, *test)
    scratch = args.init == "scratch"
    is_hub_id = not scratch and not Path(args.init).exists()
    card = write_card(
        checkpoint,
        results,
        repo_id=args.push_to or out.name,
        eval_dataset=test_name,
        base_model=args.init if is_hub_id else None,
        stages=FROM_SCRATCH_STAGES if scratch else None,
        training_data=f"{data_name}: {len(train_data[0])} texts at four quality levels",
        hyperparameters={k: v for k, v in vars(args).items() if k not in ("push_to", "private", "output")},
        limitations=["Trained from random initialisation: no pretrained knowledge."] if scratch else (),
    )
    overall = results["overall"]
    report = training_report(checkpoint, card, seconds, results)
    print(f"trained in {seconds:.0f} s; test accuracy {overall['accuracy']:.3f}, Spearman {overall['spearman']}")
    if args.push_to:
        from mmsieve.hub.publish import push_model

        pushed = push_model(checkpoint, args.push_to, private=args.private)
        report["pushed"] = {k: pushed[k] for k in ("url", "commit", "files")}
        print(f"pushed:  {pushed['url']}")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
