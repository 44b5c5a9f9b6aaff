"""Turning pre-expansion id sequences with image slots into the decoder's input embeddings.

One function serves scoring (under `inference_mode`) and training (with gradients), so both see
exactly the same inputs: text ids are embedded, each image slot (`IMAGE_TOKEN_INDEX`) is replaced by
that image's projected tokens, rows are right-padded and cut at the checkpoint's maximum length.

Example:
    >>> embeds, mask, token_ids = assemble_inputs([[1, IMAGE_TOKEN_INDEX, 5, 2]], [image_tokens], embed)  # doctest: +SKIP
    >>> embeds.shape  # [1, 3 + T, H]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


IMAGE_TOKEN_INDEX = -200  # LLaVA's placeholder id for an image slot
IGNORE_INDEX = -100  # a position that carries no token (image tokens, padding) in `token_ids`


def assemble_inputs(
    rows: Sequence[Sequence[int]],
    image_tokens: Sequence[torch.Tensor],
    embed: Callable[[torch.Tensor], torch.Tensor],
    max_length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embed `rows` (ids with image slots) and splice in `image_tokens` (one `[T, H]` per slot, in order).

    Returns `inputs_embeds [B, L, H]` (right-padded with zeros), `attention_mask [B, L]` and `token_ids [B, L]`
    (the text id at each position, `IGNORE_INDEX` at image and padding positions, for a captioning loss).
    Rows longer than `max_length` are cut, as the official model cuts its expanded embeddings.
    """
    device = image_tokens[0].device if image_tokens else None
    text_ids = [torch.tensor([t for t in row if t != IMAGE_TOKEN_INDEX], dtype=torch.long) for row in rows]
    flat = torch.cat(text_ids) if text_ids else torch.zeros(0, dtype=torch.long)
    text_embeds = embed(flat.to(device) if device is not None else flat).split([len(t) for t in text_ids])
    images = iter(image_tokens)
    embedded, labelled = [], []
    for row, embeds in zip(rows, text_embeds):
        parts, ids, cursor = [], [], 0
        for token in row:
            if token == IMAGE_TOKEN_INDEX:
                tokens = next(images)  # [T, H]
                parts.append(tokens)
                ids.append(torch.full((len(tokens),), IGNORE_INDEX, dtype=torch.long))
            else:
                parts.append(embeds[cursor : cursor + 1])
                ids.append(torch.tensor([token], dtype=torch.long))
                cursor += 1
        sequence, sequence_ids = torch.cat(parts), torch.cat(ids)
        if max_length:
            sequence, sequence_ids = sequence[:max_length], sequence_ids[:max_length]
        embedded.append(sequence)
        labelled.append(sequence_ids)
    longest = max(len(e) for e in embedded)
    inputs = embedded[0].new_zeros((len(embedded), longest, embedded[0].shape[-1]))  # [B, L, H]
    mask = torch.zeros((len(embedded), longest), dtype=torch.long, device=inputs.device)
    token_ids = torch.full((len(embedded), longest), IGNORE_INDEX, dtype=torch.long, device=inputs.device)
    for b, (sequence, sequence_ids) in enumerate(zip(embedded, labelled)):
        inputs[b, : len(sequence)] = sequence
        mask[b, : len(sequence)] = 1
        token_ids[b, : len(sequence)] = sequence_ids.to(inputs.device)
    return inputs, mask, token_ids
