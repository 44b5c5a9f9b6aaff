"""Image embedders for near-duplicate detection and decontamination: decoded images in, unit vectors out.

Every embedder turns RGB images into L2-normalised float32 rows, so cosine similarity is a dot product and one
threshold search serves them all. Build one from a spec with `parse_embedder`:

    sscd:PATH_OR_URL_OR_ID   SSCD, FineVision's preprocessing (squash to 320x320)    default threshold 0.95
    sscd288:PATH_OR_URL_OR_ID   SSCD, shorter side 288 (SSCD's DISC evaluation)       default threshold 0.95
    clip:ID / siglip:ID      the image tower of a CLIP / SigLIP / SigLIP2 checkpoint    default threshold 0.95
    phash / dhash            64-bit perceptual hashes as +-1/8 vectors                  hamming <= 4 (cosine 0.875)

An SSCD PATH is a `.torchscript.pt` (the official files, run as is), a safetensors folder or a Hub id; a URL is
downloaded once (see `mmsieve.models.sscd.load_sscd`). 0.95 is the threshold FineVision used for SSCD: it flags
near-exact copies only. SSCD's own operating point for `sscd_disc_mixup` is 0.75 (a copy at 90% precision on DISC),
which also catches crops and edits (`SSCD_DISC_THRESHOLD`).

Models load on first use (nothing heavy in `__init__`) on `pick_device()` (a worker's GPU, else the CPU) and are
dropped when an embedder is pickled, so datatrove can ship it to workers.

Example:
    >>> embedder = parse_embedder("phash")
    >>> vectors, reasons = embedder.embed_bytes([b"not an image"])
    >>> vectors.shape, reasons
    ((0, 64), ['image_unidentified'])
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
from PIL import Image

from mmsieve.dedup.perceptual import NBITS, dhash, hamming_to_cosine, hash_to_vector, phash
from mmsieve.images import DecodedImage, DecodePool
from mmsieve.models.dual_encoder import ImagePreprocessing
from mmsieve.models.sscd import IMAGENET_MEAN, IMAGENET_STD


FINEVISION_THRESHOLD = 0.95  # FineVision's SSCD cosine for "same image" (decontamination against 66 test sets)
SSCD_DISC_THRESHOLD = 0.75  # SSCD README: sscd_disc_mixup cosine > 0.75 is a copy at 90% precision on DISC2021
HASH_MAX_HAMMING = 4  # perceptual hashes: near-duplicates differ in at most this many of 64 bits
SPECS = "sscd:PATH_OR_URL_OR_HUB_ID, sscd288:PATH_OR_URL_OR_HUB_ID, clip:HUB_ID_OR_PATH, siglip:HUB_ID_OR_PATH, phash, dhash"

# FineVision's / SSCD's torchvision transforms: Resize([320, 320]) or Resize(288) (bilinear), ToTensor, Normalize.
SSCD_PREPROCESSING: dict[str, ImagePreprocessing] = {
    name: ImagePreprocessing(
        resize=resize, size=size, crop=None, mean=IMAGENET_MEAN, std=IMAGENET_STD, resample=Image.Resampling.BILINEAR
    )
    for name, resize, size in (("square320", "exact", (320, 320)), ("short288", "shortest", 288))
}


class ImageEmbedder(ABC):
    """Turns decoded RGB images into unit-norm float32 vectors; cosine similarity = dot product.

    Attributes:
        name: the spec it was built from, e.g. "sscd:/models/sscd_disc_mixup.torchscript.pt", "phash".
        default_threshold: the cosine at or above which two images count as duplicates.

    Example:
        >>> embedder = PerceptualHashEmbedder("dhash")
        >>> embedder.embed([Image.new("RGB", (64, 48))]).shape
        (1, 64)
    """

    name: str
    default_threshold: float
    _transient: tuple[str, ...] = ("_model", "_device")  # dropped when pickled, rebuilt on first use
    _model: Any = None
    _device: Any = None
    _dim: int | None = None

    @abstractmethod
    def decode_options(self) -> dict[str, Any]:
        """Keyword arguments for `mmsieve.images.decode_image` that yield images at the size this embedder wants."""

    @abstractmethod
    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """[n, dim] float32 unit rows for decoded RGB images (resized here if not at the decode size)."""

    @property
    def dim(self) -> int:
        """The vector dimension (embeds one blank image the first time, which loads the model)."""
        if self._dim is None:
            self._dim = int(self.embed([Image.new("RGB", (64, 64), (128, 128, 128))]).shape[1])
        return self._dim

    def embed_bytes(
        self, datas: Sequence[bytes | None], pool: DecodePool | None = None
    ) -> tuple[np.ndarray, list[str | None]]:
        """Decode and embed encoded images; bad bytes never raise.

        Returns:
            The vectors of the decodable images in input order ([n_ok, dim]), and per input its decode reason
            code (e.g. "image_truncated"), None when it was embedded.

        Example:
            >>> vectors, reasons = parse_embedder("dhash").embed_bytes([None])
            >>> vectors.shape, reasons
            ((0, 64), ['image_missing'])
        """
        datas = list(datas)
        if pool is None:
            with DecodePool() as own:
                decoded = self.decode(datas, own)
        else:
            decoded = self.decode(datas, pool)
        return self.embed([d.image for d in decoded if d.ok]), [d.reason for d in decoded]

    def decode(self, datas: list[bytes | None], pool: DecodePool) -> list[DecodedImage]:
        """Decode encoded images in `pool` at this embedder's size (reasons instead of exceptions)."""
        return pool.decode_many(datas, **self.decode_options())

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.dim), np.float32)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in self._transient:
            state.pop(name, None)
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _decode_options(pre: ImagePreprocessing) -> dict[str, Any]:
    """`decode_image` arguments for a preprocessing; NaFlex gets a shortest side covering any patch grid."""
    resample = Image.Resampling(pre.resample)
    if pre.resize == "patches":
        side = pre.patch_size * math.ceil(math.sqrt(pre.max_num_patches))  # no grid's shorter side exceeds it
        return {"size": side, "resize": "shortest", "resample": resample}
    return {"size": pre.size, "resize": pre.resize, "resample": resample}


def _fit(image: Image.Image, pre: ImagePreprocessing) -> Image.Image:
    """`image` (RGB) at the preprocessing's resize size (before any crop), as `decode_image` would make it."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    w, h = image.size
    if pre.resize == "patches":
        target = pre.patch_grid_size(w, h)
    elif pre.resize == "shortest":
        side = min(w, h)  # the same rounding as decode_image
        target = (max(1, round(w * pre.size / side)), max(1, round(h * pre.size / side)))
    else:
        target = (pre.size, pre.size) if isinstance(pre.size, int) else tuple(pre.size)
    return image if image.size == target else image.resize(target, Image.Resampling(pre.resample))


def _batches(keys: Sequence[Any], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped by equal key (same tensor shape), in chunks of at most `batch_size`."""
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    for indices in groups.values():
        for start in range(0, len(indices), batch_size):
            yield indices[start : start + batch_size]


class SSCDEmbedder(ImageEmbedder):
    """SSCD copy-detection descriptors (512-d for `sscd_disc_mixup`), FineVision's choice for image dedup.

    Args:
        model: a `.torchscript.pt` path, an http(s) URL to one, a safetensors folder or a Hub id.
        preprocessing: "square320" squashes every image to 320x320 (FineVision; batches any mix of sizes);
            "short288" resizes the shorter side to 288 keeping the aspect ratio (SSCD's DISC evaluation; images are
            batched by equal size, so mixed sizes run in small batches).
        batch_size: images per forward pass.
        device: default `pick_device()`; on CUDA the forward runs under float16 autocast (GeM's pow stays float32).
        name: the spec to report (default "sscd:MODEL" / "sscd288:MODEL").

    Example:
        >>> embedder = SSCDEmbedder("/models/sscd_disc_mixup.torchscript.pt")  # doctest: +SKIP
        >>> vectors, reasons = embedder.embed_bytes(jpeg_bytes)  # [n_ok, 512]  # doctest: +SKIP
    """

    default_threshold = FINEVISION_THRESHOLD

    def __init__(
        self,
        model: str,
        preprocessing: Literal["square320", "short288"] = "square320",
        batch_size: int = 32,
        device: Any = None,
        *,
        name: str | None = None,
    ) -> None:
        if preprocessing not in SSCD_PREPROCESSING:
            raise ValueError(f"preprocessing must be one of {sorted(SSCD_PREPROCESSING)}, got {preprocessing!r}")
        self.checkpoint = str(model)
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.device = device
        self.name = name or f"{'sscd' if preprocessing == 'square320' else 'sscd288'}:{model}"

    def _load(self) -> Any:
        if self._model is None:
            import torch

            from mmsieve.models.devices import pick_device
            from mmsieve.models.sscd import load_sscd

            self._device = torch.device(self.device) if self.device is not None else pick_device()
            self._model = load_sscd(self.checkpoint, self._device)
        return self._model

    def decode_options(self) -> dict[str, Any]:
        return _decode_options(SSCD_PREPROCESSING[self.preprocessing])

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        if len(images) == 0:
            return self._empty()
        model, pre = self._load(), SSCD_PREPROCESSING[self.preprocessing]
        fitted = [_fit(image, pre) for image in images]
        cuda = self._device.type == "cuda"
        out: np.ndarray | None = None
        for indices in _batches([image.size for image in fitted], self.batch_size):
            pixels = torch.from_numpy(np.stack([pre.to_array(fitted[i]) for i in indices]))  # [B, 3, H, W]
            if cuda:
                pixels = pixels.pin_memory().to(self._device, non_blocking=True)
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
                vectors = torch.nn.functional.normalize(model(pixels).float(), dim=-1).cpu().numpy()
            if out is None:
                out = np.empty((len(images), vectors.shape[1]), np.float32)
            out[indices] = vectors
        return out


class ClipEmbedder(ImageEmbedder):
    """Image embeddings of a transformers CLIP / SigLIP / SigLIP2 checkpoint (through `DualEncoder`).

    Semantic rather than copy detection: at 0.95 it also matches re-shot or lightly edited images.

    Args:
        model_id: a Hub id or local folder, e.g. "openai/clip-vit-base-patch32", "google/siglip-base-patch16-224".
        batch_size: images per forward pass.
        device: default `pick_device()` (bf16 on CUDA, fp32 on the CPU; see `DualEncoder.from_pretrained`).
        name: the spec to report (default "clip:MODEL_ID").

    Example:
        >>> embedder = ClipEmbedder("google/siglip-base-patch16-224")  # doctest: +SKIP
        >>> embedder.embed([image]).shape  # doctest: +SKIP
        (1, 768)
    """

    default_threshold = FINEVISION_THRESHOLD

    def __init__(self, model_id: str, batch_size: int = 64, device: Any = None, *, name: str | None = None) -> None:
        self.model_id = str(model_id)
        self.batch_size = batch_size
        self.device = device
        self.name = name or f"clip:{model_id}"

    def _load(self) -> Any:
        if self._model is None:
            from mmsieve.models.dual_encoder import DualEncoder

            self._model = DualEncoder.from_pretrained(self.model_id, device=self.device)
            self._device = self._model.device
        return self._model

    def decode_options(self) -> dict[str, Any]:
        """The checkpoint's resize (loads the model). SigLIP2 NaFlex sizes each image to its own patch grid, so
        this decodes a little larger and `embed` finishes the resize; `embed_bytes` decodes each at its grid size."""
        return _decode_options(self._load().preprocessing)

    def decode(self, datas: list[bytes | None], pool: DecodePool) -> list[DecodedImage]:
        return self._load().decode(datas, pool)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        if len(images) == 0:
            return self._empty()
        encoder = self._load()
        pre = encoder.preprocessing
        fitted = [_fit(image, pre) for image in images]
        # Equal tensor shapes per batch: CLIP crops to one size, SigLIP squashes, NaFlex pads patches to one count.
        keys = [pre.crop or (None if pre.resize == "patches" else image.size) for image in fitted]
        out = np.empty((len(images), 0), np.float32)
        for indices in _batches(keys, self.batch_size):
            vectors = encoder.embed_images(**encoder.pixel_inputs([fitted[i] for i in indices])).numpy()
            if out.shape[1] == 0:
                out = np.empty((len(images), vectors.shape[1]), np.float32)
            out[indices] = vectors
        return out


class PerceptualHashEmbedder(ImageEmbedder):
    """64-bit pHash or dHash as +-1/8 vectors: dot = 1 - hamming / 32 (see `mmsieve.dedup.perceptual`).

    No model: fast, catches re-encoded and resized copies, not crops or edits. The default threshold is
    hamming <= 4, i.e. cosine >= 0.875.

    Example:
        >>> embedder = PerceptualHashEmbedder("phash")
        >>> embedder.hashes([Image.new("RGB", (32, 32))]) == [phash(Image.new("RGB", (32, 32)))]
        True
    """

    default_threshold = hamming_to_cosine(HASH_MAX_HAMMING)
    _SIZES = {"phash": (32, 32), "dhash": (9, 8)}  # the hashes' own resize, done by the decoder

    def __init__(self, kind: Literal["phash", "dhash"] = "phash") -> None:
        if kind not in self._SIZES:
            raise ValueError(f"kind must be 'phash' or 'dhash', got {kind!r}")
        self.kind = kind
        self.name = kind

    @property
    def dim(self) -> int:
        return NBITS

    def decode_options(self) -> dict[str, Any]:
        return {"size": self._SIZES[self.kind], "resize": "exact", "resample": Image.Resampling.LANCZOS}

    def hashes(self, images: Sequence[Image.Image]) -> list[int]:
        """The 64-bit hashes of images."""
        function = phash if self.kind == "phash" else dhash
        return [function(image) for image in images]

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        if len(images) == 0:
            return self._empty()
        return np.stack([hash_to_vector(bits) for bits in self.hashes(images)])


def parse_embedder(spec: str, device: Any = None, batch_size: int | None = None) -> ImageEmbedder:
    """The embedder a spec names; nothing is loaded until first use.

    Args:
        spec: "sscd:PATH_OR_URL_OR_HUB_ID", "sscd288:...", "clip:ID", "siglip:ID", "phash" or "dhash".
        device: passed to model-based embedders (default: `pick_device()` at load time).
        batch_size: images per forward pass (default: the embedder's).

    Raises:
        ValueError: an unknown spec (one line listing the accepted forms).

    Example:
        >>> parse_embedder("sscd:/models/sscd_disc_mixup.torchscript.pt")
        SSCDEmbedder('sscd:/models/sscd_disc_mixup.torchscript.pt')
        >>> parse_embedder("dhash").default_threshold
        0.875
    """
    spec = str(spec).strip()
    kind, _, target = spec.partition(":")
    batch = {} if batch_size is None else {"batch_size": batch_size}
    if kind in ("phash", "dhash") and not target:
        return PerceptualHashEmbedder(kind)  # type: ignore[arg-type]
    if kind in ("sscd", "sscd288") and target:
        preprocessing = "square320" if kind == "sscd" else "short288"
        return SSCDEmbedder(target, preprocessing, device=device, name=spec, **batch)
    if kind in ("clip", "siglip") and target:
        return ClipEmbedder(target, device=device, name=spec, **batch)
    raise ValueError(f"unknown image embedder {spec!r}: expected one of {SPECS}")


__all__ = [
    "FINEVISION_THRESHOLD",
    "HASH_MAX_HAMMING",
    "SSCD_DISC_THRESHOLD",
    "ClipEmbedder",
    "ImageEmbedder",
    "PerceptualHashEmbedder",
    "SSCDEmbedder",
    "parse_embedder",
]
