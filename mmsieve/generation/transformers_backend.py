"""`TransformersBackend`: a chat model run in process, batched with left padding, with its own chat template.

An image-text-to-text checkpoint loads with `AutoModelForImageTextToText` + `AutoProcessor` and answers requests with
or without images; a text-only one (its config is no image-text-to-text architecture) loads with
`AutoModelForCausalLM` + `AutoTokenizer` and refuses requests with images.

Example:
    >>> backend = TransformersBackend("HuggingFaceTB/SmolVLM-256M-Instruct", batch_size=16)
    >>> replies = list(backend.generate([ChatRequest("k", "", "Describe the image.", [jpeg])]))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

from mmsieve.generation.requests import ChatRequest, LoadsLazily, Reply


NO_IMAGES = "this model takes no images"

_Item = tuple[ChatRequest, list[Any], int, str]  # (request, decoded PIL images, generation limit, rendered prompt)


class TransformersBackend(LoadsLazily):
    """A chat model run in process: image-text-to-text (`AutoProcessor` chat template) or text-only (`AutoTokenizer`).

    Within one `generate` call, requests are grouped by kind (with / without images) and token limit, sorted by
    prompt length (less padding) and generated in batches of `batch_size` with left padding; greedy unless
    `do_sample`. A reply that fails (undecodable image, images sent to a text-only model, a truncated reply of a
    `must_finish` request, a batch the model rejects) is an error reply of that request alone. The model loads on
    the first `generate` call, on `device` (default: this worker's GPU if any, else the CPU).

    Args:
        model: a Hub id or a local checkpoint folder.
        device: where the model runs; None picks one (`pick_device`).
        batch_size: requests per forward pass.
        max_new_tokens: the limit of a request whose `max_tokens` is None.
        do_sample, temperature, top_p: sampling; temperature and top_p are only used with `do_sample=True`.

    Example:
        >>> backend = TransformersBackend("HuggingFaceTB/SmolVLM-256M-Instruct", batch_size=16)
        >>> backend.name
        'transformers:HuggingFaceTB/SmolVLM-256M-Instruct'
    """

    _loaded = ("_model", "_processor", "_tokenizer")

    def __init__(
        self,
        model: str | Path,
        *,
        device: str | None = None,
        batch_size: int = 8,
        max_new_tokens: int = 128,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 1.0,
    ) -> None:
        self.model_path, self.name = str(model), f"transformers:{model}"
        self.device, self.batch_size, self.max_new_tokens = device, batch_size, max_new_tokens
        self.do_sample, self.temperature, self.top_p = do_sample, temperature, top_p
        self._model: Any = None
        self._processor: Any = None  # the AutoProcessor of an image-text-to-text model; None for a text-only one
        self._tokenizer: Any = None

    @property
    def takes_images(self) -> bool:
        """Whether the loaded model is image-text-to-text (loads the model).

        Example:
            >>> TransformersBackend("Qwen/Qwen2.5-0.5B-Instruct").takes_images  # doctest: +SKIP
            False
        """
        if self._model is None:
            self._load()
        return self._processor is not None

    def _load(self) -> None:
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
        )
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        from mmsieve.models.devices import pick_device, pick_dtype

        device = self.device or pick_device()
        config = AutoConfig.from_pretrained(self.model_path)
        if config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES or hasattr(config, "vision_config"):
            self._processor = AutoProcessor.from_pretrained(self.model_path)
            self._tokenizer = self._processor.tokenizer
            auto: Any = AutoModelForImageTextToText
        else:
            self._tokenizer, auto = AutoTokenizer.from_pretrained(self.model_path), AutoModelForCausalLM
        self._tokenizer.padding_side = "left"  # generation continues right after each prompt
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        model = auto.from_pretrained(self.model_path, config=config, dtype=pick_dtype(device))
        self._model = model.to(device).eval()

    def generate(self, requests: Sequence[ChatRequest]) -> Iterator[Reply]:
        """Answer `requests` in batches, in any order; a request that fails yields an error reply, never raises.

        Example:
            >>> backend = TransformersBackend("HuggingFaceTB/SmolVLM-256M-Instruct", max_new_tokens=32)
            >>> [(r.key, text) for r, text, _ in backend.generate([ChatRequest("k", "", "Say hi.")])]  # doctest: +SKIP
            [('k', 'Hi!')]
        """
        if self._model is None:
            self._load()
        ready: list[tuple[tuple[bool, int, int, int], _Item]] = []  # (kind, limit, images, prompt tokens), item
        for request in requests:
            item = self._prepare(request)
            if isinstance(item, str):
                yield request, None, item
                continue
            length = len(self._tokenizer(item[3], add_special_tokens=False).input_ids)
            ready.append(((bool(request.images), item[2], len(request.images), length), item))
        ready.sort(key=lambda pair: pair[0])  # similar lengths together: less padding
        for _, group in groupby(ready, key=lambda pair: pair[0][:2]):
            items = [item for _, item in group]
            for start in range(0, len(items), self.batch_size):
                yield from self._batch(items[start : start + self.batch_size])

    def _prepare(self, request: ChatRequest) -> _Item | str:
        """A request's decoded images, token limit and rendered prompt, or why it cannot be generated."""
        from mmsieve.images import decode_image

        if request.images and self._processor is None:
            return NO_IMAGES
        decoded = [decode_image(im) for im in request.images]
        bad = next((d for d in decoded if not d.ok), None)
        if bad is not None:
            return f"{bad.reason}: {bad.detail}"
        try:
            text = self._prompt(request)
        except Exception as error:  # e.g. a chat template with no system role
            return f"chat template failed: {type(error).__name__}: {error}"
        return request, [d.image for d in decoded], request.max_tokens or self.max_new_tokens, text

    def _batch(self, batch: list[_Item]) -> Iterator[Reply]:
        """One batch (same kind, same limit); if the model rejects it, each request is retried alone."""
        try:
            generated = self._run(batch)
        except Exception as error:  # a bad row must not end the step
            if len(batch) > 1:
                for item in batch:
                    yield from self._batch([item])
            else:
                yield batch[0][0], None, f"generation failed: {type(error).__name__}: {error}"
            return
        stops = self._stop_ids()
        for (request, _, limit, _), ids in zip(batch, generated, strict=True):
            ends = [i for i, token in enumerate(ids) if token in stops]
            if not ends and request.must_finish:
                yield request, None, f"truncated at {limit} tokens"
            else:
                yield request, self._tokenizer.decode(ids[: ends[0]] if ends else ids, skip_special_tokens=True), None

    def _run(self, batch: list[_Item]) -> list[list[int]]:
        """Generate for one batch; the new token ids of each request (a finished one ends with EOS then padding)."""
        import torch

        texts = [text for _, _, _, text in batch]
        if batch[0][1]:  # images go to the processor only in a batch of image requests
            images = [images for _, images, _, _ in batch]
            inputs = self._processor(images=images, text=texts, padding=True, return_tensors="pt")
        elif self._processor is not None:
            inputs = self._processor(text=texts, padding=True, return_tensors="pt")
        else:  # the rendered template already holds the special tokens it wants
            inputs = self._tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
        inputs = inputs.to(self._model.device)
        sampling: dict[str, Any] = {"do_sample": False}
        if self.do_sample:
            sampling = {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}
        with torch.inference_mode():
            out = self._model.generate(
                **inputs, max_new_tokens=batch[0][2], pad_token_id=self._tokenizer.pad_token_id, **sampling
            )
        return out[:, inputs["input_ids"].shape[1] :].tolist()

    def _stop_ids(self) -> set[int]:
        """The token ids that end a reply: the generation config's EOS ids, else the tokenizer's."""
        eos = self._model.generation_config.eos_token_id
        if eos is None:
            eos = self._tokenizer.eos_token_id
        return set(eos) if isinstance(eos, list) else {eos}

    def _prompt(self, request: ChatRequest) -> str:
        """The rendered chat prompt of a request: a system message only when `request.system` is set.

        Example:
            >>> backend._prompt(ChatRequest("k", "", "Hello"))  # a tiny test template  # doctest: +SKIP
            'user: Hello\\nassistant: '
        """
        messages: list[dict[str, Any]] = []
        if self._processor is None:  # text-only chat templates expect string contents
            if request.system:
                messages.append({"role": "system", "content": request.system})
            messages.append({"role": "user", "content": request.prompt})
            return self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if request.system:
            messages.append({"role": "system", "content": [{"type": "text", "text": request.system}]})
        user = [{"type": "image"} for _ in request.images] + [{"type": "text", "text": request.prompt}]
        messages.append({"role": "user", "content": user})
        return self._processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
