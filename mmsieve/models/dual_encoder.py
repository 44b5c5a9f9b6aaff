"""CLIP / SigLIP / SigLIP2 dual encoders from transformers, fed by mmsieve's fast image decoding.

`DualEncoder.from_pretrained` loads any transformers dual encoder (`CLIPModel`, `SiglipModel`,
`Siglip2Model`, ...) by Hub id or local path with `AutoModel` + `AutoTokenizer` +
`AutoImageProcessor`: safetensors only, never remote code. The image processor is read, not run:
its numbers (size, resize mode, crop, mean/std, resample filter) become an `ImagePreprocessing`, and
pixels come from `mmsieve.images.decode_image` (libjpeg draft decoding, one resize, in a thread pool)
instead of the slow per-image HF processor:

- CLIP: the shortest edge resized to `size["shortest_edge"]`, then a center crop to `crop_size`;
- SigLIP (and the fixed-resolution SigLIP2 checkpoints, which are `SiglipModel`s): an exact square resize;
- SigLIP2 NaFlex (`Siglip2Model`): the aspect-preserving size that fits `max_num_patches`, cut into
  patches and padded, with `pixel_attention_mask` and `spatial_shapes`, as `Siglip2ImageProcessor`.

Texts are tokenized by the model's own tokenizer, truncated to the model's maximum length (CLIP 77,
SigLIP 64) and padded as each model was trained: CLIP to the longest text with an attention mask
(it pools at the eos token), SigLIP/SigLIP2 to exactly `max_length` (they pool at the last position).
The device is chosen at load time (`mmsieve.models.devices`): CUDA in bf16 when available (the GPU of
`rank` or `LOCAL_RANK`), else CPU in fp32. Embeddings come back L2-normalised, float32, on the CPU.

Example:
    >>> encoder = DualEncoder.from_pretrained("openai/clip-vit-base-patch32")  # doctest: +SKIP
    >>> images = [d.image for d in encoder.decode([jpeg_bytes])]  # doctest: +SKIP
    >>> image_emb = encoder.embed_images(**encoder.pixel_inputs(images))  # doctest: +SKIP
    >>> text_emb = encoder.embed_texts(["a photo of a cat"])  # doctest: +SKIP
    >>> (image_emb @ text_emb.T).item()  # the cosine similarity  # doctest: +SKIP
    0.29
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmsieve.images import DecodedImage, DecodePool


_TEXT_INPUTS = ("input_ids", "attention_mask", "position_ids")
_PAD_TO_MAX_LENGTH = ("siglip", "siglip2")  # families trained on texts padded to max_length, pooled at the end
_CHARS_PER_TOKEN_BOUND = 32  # texts are cut to max_length * this many characters before tokenizing


def _get(config: Any, key: str) -> Any:
    """A key of a size dict, whether it is a plain dict or transformers' `SizeDict`."""
    if config is None:
        return None
    return config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)


@dataclass(frozen=True)
class ImagePreprocessing:
    """How a checkpoint wants its pixels, read from its image processor config.

    Args:
        resize: "shortest" (CLIP: shortest edge, then `crop`), "exact" (SigLIP: squash to `size`) or
            "patches" (SigLIP2 NaFlex: native aspect ratio within `max_num_patches` patches).
        size: the `decode_image` size: the shortest edge (int) or (width, height); None for "patches".
        crop: (width, height) of the center crop, or None.
        mean / std: per-channel normalisation after rescaling.
        rescale: the factor from 0-255 values to the normalisation's scale (1/255).
        resample: the PIL resampling filter of the resize.
        patch_size / max_num_patches: the NaFlex patching ("patches" only).

    Example:
        >>> from transformers import CLIPImageProcessor
        >>> ImagePreprocessing.from_image_processor(CLIPImageProcessor()).crop
        (224, 224)
    """

    resize: str
    size: int | tuple[int, int] | None
    crop: tuple[int, int] | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale: float = 1 / 255
    resample: int = int(Image.Resampling.BICUBIC)
    patch_size: int | None = None
    max_num_patches: int | None = None

    @classmethod
    def from_image_processor(cls, processor: Any) -> ImagePreprocessing:
        """Read the numbers of a transformers image processor (CLIP, SigLIP, SigLIP2 and alike)."""
        size, crop_size = getattr(processor, "size", None), getattr(processor, "crop_size", None)
        rescale = (
            float(getattr(processor, "rescale_factor", 1 / 255)) if getattr(processor, "do_rescale", True) else 1.0
        )
        if getattr(processor, "do_normalize", True):
            mean = tuple(float(v) for v in np.broadcast_to(processor.image_mean, 3))
            std = tuple(float(v) for v in np.broadcast_to(processor.image_std, 3))
        else:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        resample = int(getattr(processor, "resample", None) or Image.Resampling.BICUBIC)
        common = {"mean": mean, "std": std, "rescale": rescale, "resample": resample}
        max_num_patches, patch_size = (
            getattr(processor, "max_num_patches", None),
            getattr(processor, "patch_size", None),
        )
        if max_num_patches and patch_size and not _get(size, "height"):
            patches = {"patch_size": int(patch_size), "max_num_patches": int(max_num_patches)}
            return cls(resize="patches", size=None, crop=None, **common, **patches)
        crop = None
        if getattr(processor, "do_center_crop", False) and crop_size is not None:
            crop = (int(_get(crop_size, "width")), int(_get(crop_size, "height")))
        shortest, longest = _get(size, "shortest_edge"), _get(size, "longest_edge")
        height, width = _get(size, "height"), _get(size, "width")
        if shortest and not longest:
            return cls(resize="shortest", size=int(shortest), crop=crop, **common)
        if height and width:
            return cls(resize="exact", size=(int(width), int(height)), crop=crop, **common)
        raise ValueError(
            f"unsupported image processor size {size!r} ({type(processor).__name__}): mmsieve's dual encoder "
            "supports shortest_edge (+ center crop), height/width, and SigLIP2 max_num_patches"
        )

    def decode(self, datas: Sequence[bytes | None], pool: DecodePool) -> list[DecodedImage]:
        """Decode encoded images straight to the model's resize size (before crop), in `pool`."""
        resample = Image.Resampling(self.resample)
        if self.resize != "patches":
            return pool.decode_many(datas, size=self.size, resize=self.resize, resample=resample)
        # NaFlex: the target size depends on each image's own size, read from its header first.
        results: list[DecodedImage] = pool.probe_many(datas, verify=False)
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, probe in enumerate(results):
            if probe.ok:
                by_size[self.patch_grid_size(probe.width, probe.height)].append(i)
        for size, indices in by_size.items():
            decoded = pool.decode_many([datas[i] for i in indices], size=size, resize="exact", resample=resample)
            for i, result in zip(indices, decoded):
                results[i] = result
        return results

    def patch_grid_size(self, width: int, height: int) -> tuple[int, int]:
        """NaFlex: the (width, height) in whole patches closest to the image's aspect ratio within
        `max_num_patches` (the same binary search as `Siglip2ImageProcessor`)."""
        patch, budget = self.patch_size, self.max_num_patches

        def scaled(scale: float, side: int) -> int:
            return max(patch, math.ceil(side * scale / patch) * patch)

        low, high = 1e-6, 100.0
        while high - low >= 1e-5:
            scale = (low + high) / 2
            if (scaled(scale, height) // patch) * (scaled(scale, width) // patch) <= budget:
                low = scale
            else:
                high = scale
        return scaled(low, width), scaled(low, height)

    def to_array(self, image: Image.Image) -> np.ndarray:
        """One decoded RGB image as normalised float32 (3, H, W), center-cropped when configured."""
        if self.crop is not None and image.size != self.crop:
            (w, h), (cw, ch) = image.size, self.crop
            left, top = (w - cw) // 2, (h - ch) // 2  # as transformers' center_crop (zero-padded if smaller)
            image = image.crop((left, top, left + cw, top + ch))
        pixels = np.asarray(image, dtype=np.float32) * np.float32(self.rescale)
        pixels = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))

    def batch(self, images: Sequence[Image.Image]) -> dict[str, Any]:
        """The model's pixel inputs for decoded images: `pixel_values` (and NaFlex's mask and shapes)."""
        import torch

        arrays = [self.to_array(image) for image in images]
        if self.resize != "patches":
            return {"pixel_values": torch.from_numpy(np.stack(arrays))}  # (B, 3, H, W)
        patch, budget = self.patch_size, self.max_num_patches
        values = np.zeros((len(arrays), budget, 3 * patch * patch), np.float32)  # (B, max_num_patches, p*p*3)
        mask = np.zeros((len(arrays), budget), np.int32)
        shapes = np.zeros((len(arrays), 2), np.int64)
        for b, array in enumerate(arrays):
            _, h, w = array.shape
            rows, cols = h // patch, w // patch
            # (3, H, W) -> (rows, cols, p, p, 3) -> (rows * cols, p * p * 3), as Siglip2's convert_image_to_patches
            patches = array.reshape(3, rows, patch, cols, patch).transpose(1, 3, 2, 4, 0).reshape(rows * cols, -1)
            values[b, : len(patches)] = patches
            mask[b, : len(patches)] = 1
            shapes[b] = (rows, cols)
        return {
            "pixel_values": torch.from_numpy(values),
            "pixel_attention_mask": torch.from_numpy(mask),
            "spatial_shapes": torch.from_numpy(shapes),
        }


class DualEncoder:
    """An image tower and a text tower sharing one embedding space (CLIP, SigLIP, SigLIP2).

    Build it with `from_pretrained`. `decode` + `pixel_inputs` turn encoded bytes into model inputs;
    `embed_images` / `embed_texts` return L2-normalised float32 CPU tensors, so a dot product is the
    cosine similarity.

    Args:
        model: a transformers model with `get_image_features` and `get_text_features`.
        tokenizer: its tokenizer.
        preprocessing: its image preprocessing (see `ImagePreprocessing.from_image_processor`).
        device / dtype: where the model lives; inputs are moved there.
    """

    def __init__(self, model: Any, tokenizer: Any, preprocessing: ImagePreprocessing, device: Any, dtype: Any):
        self.model = model
        self.tokenizer = tokenizer
        self.preprocessing = preprocessing
        self.device = device
        self.dtype = dtype
        self.family = model.config.model_type
        text_config = getattr(model.config, "text_config", model.config)
        limits = [getattr(text_config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
        self.max_text_length = min(int(n) for n in limits if n and n < 1_000_000)
        self.pad_to_max_length = self.family in _PAD_TO_MAX_LENGTH

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        device: Any = None,
        dtype: Any = None,
        rank: int | None = None,
        revision: str | None = None,
    ) -> DualEncoder:
        """Load a dual encoder by Hub id or local folder (safetensors only, no remote code).

        Args:
            name_or_path: e.g. "openai/clip-vit-base-patch32", "google/siglip-so400m-patch14-384", a folder.
            device: a torch device; default: CUDA (the GPU of `rank` / `LOCAL_RANK`) if available, else CPU.
            dtype: default bf16 on CUDA, fp32 on CPU.
            rank: worker rank used to pick the GPU when `device` is None.
            revision: a Hub revision (branch, tag or commit).

        Raises:
            ValueError: the checkpoint is not a dual encoder, or its image processor is not supported.
        """
        import torch
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        from mmsieve.models.devices import pick_attn_implementation, pick_device, pick_dtype

        device = torch.device(device) if device is not None else pick_device(rank)
        dtype = dtype or pick_dtype(device)
        source = str(name_or_path)
        model = AutoModel.from_pretrained(
            source,
            revision=revision,
            use_safetensors=True,
            trust_remote_code=False,
            dtype=dtype,
            attn_implementation=pick_attn_implementation(device, dtype),
        )
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise ValueError(
                f"{source} loads as {type(model).__name__}, not a dual encoder with image and text towers "
                "(expected a CLIP, SigLIP or SigLIP2 checkpoint)"
            )
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=False)
        image_processor = AutoImageProcessor.from_pretrained(source, revision=revision, trust_remote_code=False)
        model = model.to(device=device, dtype=dtype).eval()
        return cls(model, tokenizer, ImagePreprocessing.from_image_processor(image_processor), device, dtype)

    def decode(self, datas: Sequence[bytes | None], pool: DecodePool | None = None) -> list[DecodedImage]:
        """Decode encoded images at the model's resize size in `pool` (a private pool when None).

        Failures come back as `DecodedImage`s with a reason code; nothing raises on bad bytes.
        """
        if pool is not None:
            return self.preprocessing.decode(datas, pool)
        with DecodePool() as own_pool:
            return self.preprocessing.decode(datas, own_pool)

    def pixel_inputs(self, images: Sequence[Image.Image]) -> dict[str, Any]:
        """The model's CPU pixel inputs for decoded RGB images (crop + normalise [+ patchify]).

        CPU work only (thread-safe): run it ahead of `embed_images`, e.g. in a prefetch thread.
        """
        return self._pinned(self.preprocessing.batch(images))

    def text_inputs(self, texts: Sequence[str]) -> dict[str, Any]:
        """The model's token inputs, truncated to its maximum length and padded as it was trained.

        CPU work only (thread-safe): run it ahead of `embed_tokens`.
        """
        limit = self.max_text_length * _CHARS_PER_TOKEN_BOUND  # tokenize a huge text's head only
        tokens = self.tokenizer(
            [text[:limit] for text in texts],
            padding="max_length" if self.pad_to_max_length else "longest",
            truncation=True,
            max_length=self.max_text_length,
            return_tensors="pt",
        )
        return self._pinned({name: value for name, value in tokens.items() if name in _TEXT_INPUTS})

    def _pinned(self, tensors: dict[str, Any]) -> dict[str, Any]:
        """Page-locked copies on CUDA, so the copies to the GPU can overlap compute."""
        if self.device.type != "cuda":
            return tensors
        return {name: tensor.pin_memory() for name, tensor in tensors.items()}

    def _to_device(self, tensor: Any, floating: bool = False) -> Any:
        return tensor.to(self.device, dtype=self.dtype if floating else None, non_blocking=True)

    def embed_images(self, pixel_values: Any, **extra: Any) -> Any:
        """L2-normalised float32 image embeddings (B, D) on the CPU.

        Args:
            pixel_values: (B, 3, H, W) from `pixel_inputs` (NaFlex: (B, patches, p*p*3)).
            **extra: the other entries of `pixel_inputs` (NaFlex's `pixel_attention_mask`, `spatial_shapes`).
        """
        import torch

        inputs = {"pixel_values": self._to_device(pixel_values, floating=True)}
        inputs.update({name: self._to_device(value) for name, value in extra.items()})
        with torch.inference_mode():
            features = _pooled(self.model.get_image_features(**inputs))
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()

    def embed_texts(self, texts: Sequence[str]) -> Any:
        """L2-normalised float32 text embeddings (B, D) on the CPU; texts are truncated to the model's length."""
        return self.embed_tokens(**self.text_inputs(texts))

    def embed_tokens(self, **text_inputs: Any) -> Any:
        """L2-normalised float32 text embeddings (B, D) on the CPU, from `text_inputs`."""
        import torch

        inputs = {name: self._to_device(value) for name, value in text_inputs.items()}
        with torch.inference_mode():
            features = _pooled(self.model.get_text_features(**inputs))
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()


def _pooled(output: Any) -> Any:
    """The projected embedding: transformers 5 returns an output object, transformers 4 a tensor."""
    return output if hasattr(output, "ndim") else output.pooler_output


__all__ = ["DualEncoder", "ImagePreprocessing"]
