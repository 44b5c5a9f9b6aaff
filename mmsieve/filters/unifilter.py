"""UniFilter quality scores for captions, interleaved documents and conversations.

`UniFilterScorer` adds the official classifier's score to every sample; `UniFilterFilter` keeps the
samples above a threshold or the top fraction of the run. Loads the released checkpoints
(`weizhiwang/UniFilter-Qwen2.5-1.5B`, `weizhiwang/UniFilter-Qwen3-0.6B`) or ours, by Hub id or path.

Columns: `unifilter_score` (the raw float, nominally 0-3, unclamped; for a classification head the
expected class, or P(class 1) for a binary head, as the official script), `unifilter_class`
(`round(clamp(x, 0, 3))`, or the argmax), `unifilter_probs` (class probabilities for
classification heads), `unifilter_error` (why a sample has no score: `reason: detail`).

Fast path: images are decoded and resized in a thread pool while the model runs the previous batch;
each batch is length-sorted and split by a token budget (not a fixed count) so padding stays small;
the vision tower runs once over all images of a micro-batch; bf16 + SDPA/flash-attention on CUDA.

Example:
    >>> scorer = UniFilterScorer("weizhiwang/UniFilter-Qwen3-0.6B")
    >>> ds = ds.map(scorer, batched=True, batch_size=256)  # doctest: +SKIP
    >>> # on 4 GPUs: ds.map(scorer, batched=True, with_rank=True, num_proc=4)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmsieve import reasons
from mmsieve.filters.score_filter import ModelScoreFilter
from mmsieve.filters.unifilter_inputs import (
    CAPTION_MAX_IDS,
    DOCUMENT_MAX_IDS,
    DOCUMENT_MAX_IMAGES,
    Overflow,
    ScoringSequence,
    caption_sequence,
    document_sequence,
    sample_parts,
    token_budget_batches,
)
from mmsieve.images import DecodePool
from mmsieve.models.sequences import assemble_inputs
from mmsieve.sample import Sample
from mmsieve.steps import Columns, SampleScorer


SCORE, CLASS, PROBS, ERROR = "unifilter_score", "unifilter_class", "unifilter_probs", "unifilter_error"


@dataclass
class Prepared:
    """A batch ready for the model: one sequence per sample and the decoded pixels of every image used."""

    sequences: list[ScoringSequence]
    pixels: dict[tuple[int, int], Any]  # (sample position, image index) -> float tensor [3, S, S]


class UniFilterScorer(SampleScorer):
    """Adds UniFilter scores to every sample and drops none.

    Args:
        model: a Hub id or local path of a UniFilter checkpoint (official format), or a loaded `UniFilterModel`.
        vision_tower: override `config.mm_vision_tower` (a Hub id or a local copy of SigLIP).
        batch_size: samples per step batch (the window sorted by length).
        max_batch_tokens: token budget of one forward pass (items x longest expanded sequence).
        max_length_ratio: a pass holds no item shorter than its longest by more than this (padding cap).
        caption_max_ids / max_images / max_ids: the official limits (75 ids for captions; 10 images
            and 6,000 ids for documents).
        overflow: `skip` (official: no score, with a reason) or `truncate` documents over the limits.
        device / dtype: force a device or dtype (default: the rank's GPU in bf16, else CPU in fp32).
        workers: image-decoding threads.
    """

    name = "🔬 UniFilter"
    _requires_dependencies = [("torch", "torch"), ("transformers", "transformers"), ("PIL", "pillow")]

    def __init__(
        self,
        model: Any,
        *,
        vision_tower: str | None = None,
        batch_size: int = 128,
        max_batch_tokens: int = 16_384,
        max_length_ratio: float = 1.25,
        caption_max_ids: int = CAPTION_MAX_IDS,
        max_images: int = DOCUMENT_MAX_IMAGES,
        max_ids: int = DOCUMENT_MAX_IDS,
        overflow: Overflow = "skip",
        device: str | None = None,
        dtype: str | None = None,
        workers: int | None = None,
    ):
        super().__init__(batch_size=batch_size)
        if overflow not in ("skip", "truncate"):
            raise ValueError(f"overflow must be 'skip' or 'truncate', got {overflow!r}")
        loaded = None if isinstance(model, str) else model  # an already loaded UniFilterModel (e.g. while training)
        self.model_name = model if loaded is None else loaded.name_or_path
        self.vision_tower = vision_tower
        self.max_batch_tokens, self.max_length_ratio = max_batch_tokens, max_length_ratio
        self.caption_max_ids = caption_max_ids
        self.max_images, self.max_ids, self.overflow = max_images, max_ids, overflow
        self.device, self.dtype, self.workers = device, dtype, workers
        self._model: Any = loaded
        self._pool: DecodePool | None = None

    # -- lazy resources ---------------------------------------------------------------------------
    @property
    def model(self) -> Any:
        """The loaded `UniFilterModel` (loaded on first use, on the device of this task's rank)."""
        if self._model is None:
            import torch

            from mmsieve.models import UniFilterModel, pick_device

            device = torch.device(self.device) if self.device else pick_device(self.rank)
            dtype = getattr(torch, self.dtype) if self.dtype else None
            self._model = UniFilterModel.from_pretrained(
                self.model_name, vision_tower=self.vision_tower, device=device, dtype=dtype
            )
        return self._model

    @property
    def pool(self) -> DecodePool:
        if self._pool is None:
            self._pool = DecodePool(self.workers)
        return self._pool

    def _transient_attributes(self) -> tuple[str, ...]:
        return ("_model", "_pool")

    def output_features(self) -> dict[str, Any]:
        from datasets import List, Value

        return {
            SCORE: Value("float32"),
            CLASS: Value("int32"),
            PROBS: List(Value("float32")),
            ERROR: Value("string"),
        }

    def parameters(self) -> dict[str, Any]:
        """The settings in force, for stats.json and dataset cards."""
        return {
            "model": self.model_name,
            "vision_tower": self.vision_tower,
            "caption_max_ids": self.caption_max_ids,
            "max_images": self.max_images,
            "max_ids": self.max_ids,
            "overflow": self.overflow,
        }

    # -- CPU side: decode, tokenize ---------------------------------------------------------------
    def prepare(self, samples: list[Sample]) -> Prepared:
        """Decode every image at the model's input size and build each sample's official sequence."""
        import numpy as np
        import torch

        model = self.model
        size = model.image_size
        mean = np.asarray(model.image_mean, dtype=np.float32)[:, None, None]
        std = np.asarray(model.image_std, dtype=np.float32)[:, None, None]
        wanted = [(i, k) for i, s in enumerate(samples) for k, im in enumerate(s.images) if im is not None]
        decoded = self.pool.decode_many(
            [samples[i].images[k].data for i, k in wanted], size=(size, size), resize="exact"
        )
        results = dict(zip(wanted, decoded))

        def tokenize(text: str) -> list[int]:
            return model.tokenizer(text, add_special_tokens=False)["input_ids"]

        sequences: list[ScoringSequence] = []
        pixels: dict[tuple[int, int], Any] = {}
        for i, sample in enumerate(samples):
            sequence = self._sequence(i, sample, results, tokenize)
            sequences.append(sequence)
            for k in sequence.images:
                array = np.asarray(results[(i, k)].image, dtype=np.float32).transpose(2, 0, 1) / 255.0
                pixels[(i, k)] = torch.from_numpy((array - mean) / std)
        return Prepared(sequences, pixels)

    def _sequence(self, i: int, sample: Sample, results: dict[tuple[int, int], Any], tokenize: Any) -> ScoringSequence:
        model = self.model
        bos, eos = model.bos_token_id, model.eos_token_id
        for k, image in enumerate(sample.images):
            if image is None:
                return ScoringSequence(reason=reasons.IMAGE_MISSING, detail=f"image {k} is empty (None)")
            if not results[(i, k)].ok:
                return ScoringSequence(reason=results[(i, k)].reason, detail=f"image {k}: {results[(i, k)].detail}")
        if sample.kind == "caption":
            if not sample.images:
                return ScoringSequence(reason=reasons.IMAGE_MISSING, detail="the caption has no image")
            if sample.text is None:
                return ScoringSequence(reason=reasons.TEXT_MISSING, detail="the caption is None")
            return caption_sequence(sample.text, tokenize, bos, eos, self.caption_max_ids)
        usable = [min(results[(i, k)].width, results[(i, k)].height) > 1 for k in range(len(sample.images))]
        return document_sequence(
            sample_parts(sample, usable),
            tokenize,
            bos,
            eos,
            max_images=self.max_images,
            max_ids=self.max_ids,
            overflow=self.overflow,
        )

    # -- the model ----------------------------------------------------------------------------------
    def compute(self, samples: list[Sample], prepared: Any = None) -> Columns:
        import torch

        prepared = prepared if prepared is not None else self.prepare(samples)
        model = self.model
        sequences = prepared.sequences
        scorable = [i for i, s in enumerate(sequences) if s.reason is None]
        lengths = [
            min(sequences[i].expanded_length(model.num_image_tokens), model.max_length or 10**9) for i in scorable
        ]
        logits: dict[int, Any] = {}
        for group in token_budget_batches(lengths, self.max_batch_tokens, max_length_ratio=self.max_length_ratio):
            items = [scorable[g] for g in group]
            with torch.inference_mode():
                batch_logits = self._forward(items, sequences, prepared.pixels)
            for item, row in zip(items, batch_logits):
                logits[item] = row
        return self._readout(sequences, logits)

    def _forward(self, items: list[int], sequences: list[ScoringSequence], pixels: dict) -> Any:
        """Logits `[len(items), num_labels]` for the given samples: one vision pass, one decoder pass."""
        import torch

        model = self.model
        keys = [(i, k) for i in items for k in sequences[i].images]
        image_embeds: dict[tuple[int, int], Any] = {}
        if keys:
            stacked = torch.stack([pixels[key] for key in keys])
            if model.device.type == "cuda":
                stacked = stacked.pin_memory()  # page-locked, so the copy below overlaps with compute
            stacked = stacked.to(model.device, model.dtype, non_blocking=True)
            for key, embeds in zip(keys, model.encode_images(stacked)):  # [N, T, H]
                image_embeds[key] = embeds
        slots = [image_embeds[(i, k)] for i in items for k in sequences[i].images]
        rows = [sequences[i].ids for i in items]
        inputs, mask, _ = assemble_inputs(rows, slots, model.embed_tokens, model.max_length)  # [B, L, H], [B, L]
        return model.classify(inputs, mask).float().cpu()

    def _readout(self, sequences: list[ScoringSequence], logits: dict[int, Any]) -> Columns:
        import torch

        out: Columns = {SCORE: [], CLASS: [], PROBS: [], ERROR: []}
        for i, sequence in enumerate(sequences):
            if i not in logits:
                out[SCORE].append(None)
                out[CLASS].append(None)
                out[PROBS].append(None)
                out[ERROR].append(f"{sequence.reason}: {sequence.detail}")
                continue
            row = logits[i]
            if row.numel() == 1:  # the released regression head: the raw float, nominally 0-3
                score = float(row[0])
                out[SCORE].append(score)
                out[CLASS].append(int(round(min(max(score, 0.0), 3.0))))
                out[PROBS].append(None)
            else:
                probs = torch.softmax(row, dim=-1)
                classes = torch.arange(len(probs), dtype=probs.dtype)
                score = float(probs[1]) if len(probs) == 2 else float((probs * classes).sum())
                out[SCORE].append(score)
                out[CLASS].append(int(probs.argmax()))
                out[PROBS].append([float(p) for p in probs])
            out[ERROR].append(None)
        return out


class UniFilterFilter(ModelScoreFilter):
    """Keeps samples whose UniFilter score reaches `threshold`, or the top `keep_fraction` of the run.

    Dropped rows carry `low_unifilter_score`, or the reason they could not be scored. Every row keeps
    its score columns. `keep_fraction` takes two passes (score, then cut at the quantile): `run_steps`
    and `mmsieve score --keep-fraction` do both.

    Example:
        >>> f = UniFilterFilter("weizhiwang/UniFilter-Qwen3-0.6B", threshold=2.0)
        >>> f.scorer.model_name
        'weizhiwang/UniFilter-Qwen3-0.6B'
    """

    name = "🔬 UniFilter filter"

    scorer_class = UniFilterScorer
    score_column = SCORE
    score_error_column = ERROR
