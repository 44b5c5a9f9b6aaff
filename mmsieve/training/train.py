"""Train a UniFilter-format quality classifier with the transformers `Trainer` (accelerate underneath).

Recipe (UniFilter, `LLaVA/scripts/v1_5/train_classifier.sh`): stage 1 aligns the projector with a
captioning loss (tower and LLM frozen); stage 2 trains the classifier (MSE on 0-3, or cross-entropy
over 4 labels) with the tower frozen and the LLM and projector trained; optional LoRA through peft.
Evaluation every epoch, the best checkpoint by validation accuracy kept, and `resume=True` continues
from the last checkpoint after an interruption. bf16 and gradient checkpointing on CUDA, fp32 on CPU.
The result is saved in the official format, so the scorer (and the official code) loads it.

Example:
    >>> result = train_classifier("init/", train, validation, "out/", TrainConfig(epochs=3))  # doctest: +SKIP
    >>> result.metrics["accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mmsieve.sample import Sample


@dataclass
class TrainConfig:
    """Hyperparameters. Defaults follow the released stage-2 recipe where it fits a single machine."""

    objective: Literal["classify", "align"] = "classify"
    epochs: float = 10.0
    learning_rate: float = 2e-5
    batch_size: int = 32
    gradient_accumulation: int = 1
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    scheduler: str = "cosine"
    seed: int = 0
    max_seconds: float | None = None  # stop (after evaluating and saving) once training has run this long
    train_vision: bool = False
    train_llm: bool = False  # stage 1 only: also train the LLM (a model initialised at random)
    lora: bool = False
    lora_rank: int = 16
    lora_alpha: int = 32
    logging_steps: int = 20
    extra: dict[str, Any] = field(default_factory=dict)  # any other TrainingArguments field


@dataclass
class TrainResult:
    """Where the checkpoint went, its validation metrics, how long training took, and what was skipped."""

    checkpoint: Path
    metrics: dict[str, Any]
    train_seconds: float
    skipped: dict[str, int]
    history: list[dict[str, Any]]


def featurize(
    model: Any, samples: Sequence[Sample], labels: Sequence[int], batch_size: int = 256
) -> tuple[list[Any], dict[str, int]]:
    """Examples built exactly as the scorer builds its inputs; unusable samples are counted by reason, not kept.

    Images shared by several samples (one image, four quality levels) are decoded once.
    """
    from mmsieve.filters.unifilter import UniFilterScorer
    from mmsieve.training.model import Example

    scorer = UniFilterScorer(model)
    examples, skipped, cache = [], {}, {}
    for start in range(0, len(samples), batch_size):
        chunk = list(samples[start : start + batch_size])
        prepared = scorer.prepare(chunk)
        for i, (sample, sequence) in enumerate(zip(chunk, prepared.sequences)):
            if sequence.reason is not None:
                skipped[sequence.reason] = skipped.get(sequence.reason, 0) + 1
                continue
            pixels = []
            for k in sequence.images:
                key = hashlib.blake2b(sample.images[k].data, digest_size=16).digest()
                pixels.append(cache.setdefault(key, prepared.pixels[(i, k)]))
            examples.append(Example(sequence.ids, pixels, int(labels[start + i]), sample.kind))
    scorer.pool.close()
    return examples, skipped


def _metrics_fn(kinds: Sequence[str]) -> Any:
    from mmsieve.training.evaluation import evaluate_predictions
    from mmsieve.training.model import classes_from_logits, scores_from_logits

    def compute(prediction: Any) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        classes = classes_from_logits(logits)
        results = evaluate_predictions(
            scores_from_logits(logits).tolist(),
            prediction.label_ids.tolist(),
            kinds,
            classes.tolist() if classes is not None else None,
        )
        overall = results["overall"]
        return {
            k: float(overall[k]) for k in ("accuracy", "macro_f1", "mae", "spearman") if overall.get(k) is not None
        }

    return compute


def _time_budget_callback(seconds: float) -> Any:
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        """Stops training early enough that the final evaluation and save still fit in `seconds` (the best model is
        kept): the last evaluation's duration, plus a margin for saving, is reserved."""

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()
            self.reserve = 0.0

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
            runtime = (metrics or {}).get("eval_runtime")
            if runtime is not None:
                self.reserve = 1.5 * float(runtime) + 2.0

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if time.perf_counter() - self.start + self.reserve > seconds:
                control.should_training_stop = True
                control.should_evaluate = True
                control.should_save = True
            return control

    return TimeBudget()


def _stderr_logger() -> Any:
    from transformers import TrainerCallback

    class StderrLogs(TrainerCallback):
        """Training logs (loss, eval metrics) as one line each on stderr, so stdout stays the command's result."""

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
        ) -> None:
            if logs and state.is_world_process_zero:
                shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in logs.items()}
                print(f"[step {state.global_step}] {shown}", file=sys.stderr, flush=True)

    return StderrLogs()


def _checkpointing(enabled: bool) -> dict[str, bool]:
    """Gradient (activation) checkpointing under whichever name this transformers version uses."""
    from transformers import TrainingArguments

    if not enabled:
        return {}
    fields = TrainingArguments.__dataclass_fields__
    return {"activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing": True}


def _apply_lora(wrapper: Any, config: TrainConfig) -> None:
    """LoRA adapters on the decoder's linear layers; the projector and the score head train fully."""
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, target_modules=targets)
    wrapper.classifier.model = get_peft_model(wrapper.classifier.model, lora)
    wrapper.classifier.model.mm_projector.requires_grad_(True)
    wrapper.classifier.score.requires_grad_(True)


def train_classifier(
    init: str | Path,
    train: tuple[Sequence[Sample], Sequence[int]],
    validation: tuple[Sequence[Sample], Sequence[int]],
    output: str | Path,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    vision_tower: str | None = None,
) -> TrainResult:
    """Train from the UniFilter-format checkpoint `init` and save the best model (by validation accuracy) to `output`.

    Args:
        init: an official-format checkpoint to start from (ours, `build_unifilter_from_base`, or a tiny random one).
        train / validation: samples with their 0-3 labels.
        output: receives the final checkpoint (official format) and `checkpoints/` (Trainer state, for resuming).
        config: hyperparameters.
        resume: continue from the last checkpoint in `output/checkpoints` (after an interruption).
        vision_tower: override the checkpoint's tower id or path.
    """
    import torch
    from transformers import Trainer, TrainingArguments, set_seed

    from mmsieve.models import UniFilterModel
    from mmsieve.models.unifilter import SHIPPED_TOWER
    from mmsieve.training.model import ExampleDataset, UniFilterForTraining, collate_examples

    config = config or TrainConfig()
    set_seed(config.seed)
    out = Path(output)
    model = UniFilterModel.from_pretrained(init, vision_tower=vision_tower)
    tower_source = str(model.config.mm_vision_tower)
    train_examples, skipped_train = featurize(model, *train)
    eval_examples, skipped_eval = featurize(model, *validation)
    if not train_examples or not eval_examples:
        raise ValueError(f"nothing to train on: skipped {skipped_train} (train), {skipped_eval} (validation)")
    wrapper = UniFilterForTraining(model, config.objective, config.train_vision, config.train_llm).train()
    if config.lora:
        _apply_lora(wrapper, config)
    cuda = model.device.type == "cuda"
    per_epoch = math.ceil(len(train_examples) / (config.batch_size * config.gradient_accumulation))
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        lr_scheduler_type=config.scheduler,
        warmup_steps=int(config.warmup_ratio * per_epoch * config.epochs),
        weight_decay=config.weight_decay,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=config.objective == "classify",
        metric_for_best_model="accuracy" if config.objective == "classify" else "loss",
        greater_is_better=config.objective == "classify",
        bf16=cuda and torch.cuda.is_bf16_supported(),
        logging_steps=config.logging_steps,
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        seed=config.seed,
        use_cpu=not cuda,
        disable_tqdm=True,
        **_checkpointing(cuda and config.objective == "classify"),
        **config.extra,
    )
    trainer = Trainer(
        model=wrapper,
        args=args,
        train_dataset=ExampleDataset(train_examples),
        eval_dataset=ExampleDataset(eval_examples),
        data_collator=collate_examples,
        compute_metrics=_metrics_fn([e.kind for e in eval_examples]) if config.objective == "classify" else None,
        callbacks=[_time_budget_callback(config.max_seconds)] if config.max_seconds else None,
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(_stderr_logger())
    started = time.perf_counter()
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*")) if resume else []
    trainer.train(resume_from_checkpoint=str(checkpoints[-1]) if checkpoints else None)
    train_seconds = time.perf_counter() - started
    metrics = trainer.evaluate()
    if config.lora:  # back to the plain decoder, so the checkpoint has the official keys
        wrapper.classifier.model = wrapper.classifier.model.merge_and_unload()
    wrapper.eval()
    model.classifier.requires_grad_(False)
    ship = Path(tower_source).exists() or tower_source == SHIPPED_TOWER  # a local tower: nobody else can fetch it
    model.save_pretrained(out, ship_vision_tower=ship)
    (out / "training_config.json").write_text(_json({"config": asdict(config), "init": str(init)}))
    return TrainResult(out, metrics, train_seconds, {**skipped_train, **skipped_eval}, trainer.state.log_history)


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, default=str) + "\n"
