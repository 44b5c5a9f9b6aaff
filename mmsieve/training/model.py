"""`UniFilterForTraining`: the classifier plus its SigLIP tower as one module the transformers `Trainer` can train.

Two objectives, as the UniFilter recipe:
- `classify` (stage 2): MSE on the 0-3 label (the released recipe, `num_labels == 1`) or cross-entropy
  over 4 labels, read at the last attended position; the LLM and the projector train, the tower is frozen.
- `align` (stage 1): next-token captioning loss through the tied input embeddings (no LM head is
  needed), only the projector trains.

Batches come from `collate_examples`: pre-expansion ids (image slots = -200, padded), their lengths,
every image's pixels in slot order, and labels.

Example:
    >>> wrapper = UniFilterForTraining(model, objective="classify")  # doctest: +SKIP
    >>> out = wrapper(**collate_examples(examples))  # doctest: +SKIP
    >>> out["loss"].backward()  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from mmsieve.models.sequences import IGNORE_INDEX, IMAGE_TOKEN_INDEX, assemble_inputs
from mmsieve.models.unifilter import UniFilterModel, image_features


Objective = Literal["classify", "align"]
_PAD = -1  # filler after a row's end in `input_ids` (lengths say where each row stops)


@dataclass
class Example:
    """One training example: pre-expansion ids with image slots, the pixels of each slot, its label and kind."""

    ids: list[int]
    pixels: list[torch.Tensor]
    label: int
    kind: str = "caption"


class ExampleDataset(torch.utils.data.Dataset):
    """A list of `Example`s as a torch dataset (the Trainer's train/eval datasets)."""

    def __init__(self, examples: Sequence[Example]):
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]


def collate_examples(examples: Sequence[Example]) -> dict[str, torch.Tensor]:
    """Batch examples: `input_ids [B, Lmax]` (padded with -1), `lengths [B]`, `pixel_values [N, 3, S, S]`, `labels [B]`."""
    longest = max(len(e.ids) for e in examples)
    input_ids = torch.full((len(examples), longest), _PAD, dtype=torch.long)
    for b, example in enumerate(examples):
        input_ids[b, : len(example.ids)] = torch.tensor(example.ids, dtype=torch.long)
    pixels = [p for e in examples for p in e.pixels]
    return {
        "input_ids": input_ids,
        "lengths": torch.tensor([len(e.ids) for e in examples], dtype=torch.long),
        "pixel_values": torch.stack(pixels) if pixels else torch.zeros(0),
        "labels": torch.tensor([e.label for e in examples], dtype=torch.long),
    }


class UniFilterForTraining(nn.Module):
    """Trainer-facing module: frozen tower -> projector -> decoder -> score head (or captioning loss).

    Args:
        model: a loaded `UniFilterModel` (its classifier is trained in place).
        objective: `classify` (stage 2) or `align` (stage 1).
        train_vision: also train the tower (not the recipe; useful only for a tower initialised at random).
        train_llm: in stage 1, also train the LLM (not the recipe; for a model initialised at random, where the
            captioning loss is what teaches the decoder to read colours and shapes out of the image tokens).
    """

    def __init__(
        self,
        model: UniFilterModel,
        objective: Objective = "classify",
        train_vision: bool = False,
        train_llm: bool = False,
    ):
        super().__init__()
        self.classifier = model.classifier
        self.vision_tower = model.vision_tower
        self.select_layer = model.config.mm_vision_select_layer
        self.max_length = model.max_length
        self.objective = objective
        self.vision_tower.requires_grad_(train_vision)
        if objective == "align":  # stage 1: only the projector learns (the LLM too when it starts from random)
            self.classifier.requires_grad_(train_llm)
            self.classifier.model.mm_projector.requires_grad_(True)
        else:
            self.classifier.requires_grad_(True)

    def forward(
        self,
        input_ids: torch.Tensor,
        lengths: torch.Tensor,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        rows = [input_ids[b, : int(n)].tolist() for b, n in enumerate(lengths)]
        image_tokens: list[torch.Tensor] = []
        if any(IMAGE_TOKEN_INDEX in row for row in rows):
            pixels = pixel_values.to(self.vision_tower.device, self.vision_tower.dtype)
            features = image_features(self.vision_tower, pixels, self.select_layer)  # [N, P, Dv]
            image_tokens = list(self.classifier.project_image_features(features))  # N x [T, H]
        embed = self.classifier.get_input_embeddings()
        inputs, mask, token_ids = assemble_inputs(rows, image_tokens, embed, self.max_length)
        if self.objective == "align":
            hidden = self.classifier.model(inputs_embeds=inputs, attention_mask=mask).last_hidden_state
            logits = hidden[:, :-1] @ embed.weight.T  # tied embeddings as the LM head: [B, L-1, V]
            targets = token_ids[:, 1:].masked_fill(mask[:, 1:] == 0, IGNORE_INDEX)
            loss = nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX
            )
            return {"loss": loss}
        targets = None
        if labels is not None:
            targets = labels.float() if self.classifier.num_labels == 1 else labels.long()
        out = self.classifier(inputs_embeds=inputs, attention_mask=mask, labels=targets)
        result = {"logits": out.logits.float()}
        if out.loss is not None:
            result["loss"] = out.loss
        return result


def classes_from_logits(logits: Any) -> Any | None:
    """The argmax level of a classification head's `[N, num_labels]` logits; None for a regression head."""
    import numpy as np

    logits = np.asarray(logits)
    return None if logits.ndim == 1 or logits.shape[-1] == 1 else logits.argmax(-1)


def scores_from_logits(logits: Any) -> Any:
    """Scores from `[N, num_labels]` logits (numpy): the raw value, or the expected class of a softmax head."""
    import numpy as np

    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 1 or logits.shape[-1] == 1:
        return logits.reshape(-1)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return (probs * np.arange(probs.shape[-1])).sum(-1)
