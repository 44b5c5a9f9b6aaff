"""UniFilter (arXiv 2510.15162): a LLaVA-style multimodal quality classifier, loadable from the official checkpoints.

As in `Victorwz/UniFilter` and the released `weizhiwang/UniFilter-Qwen2.5-1.5B` / `UniFilter-Qwen3-0.6B` weights:

    pixels [N, 3, S, S] -> SigLIP hidden_states[-1] (before post_layernorm)  [N, 27*27, Dv]
      -> AvgPoolProjector: AdaptiveAvgPool2d(12x12) -> Linear, GELU, Linear    [N, 144, H]
    right-padded [BOS, image tokens, text, EOS] embeds                          [B, L, H]
      -> Qwen2/Qwen3 decoder -> last attended position -> score (no bias)      [B, num_labels]

Weight names are those of `Qwen2ForSequenceClassification` plus `model.mm_projector.mlp_projector.{0,2}.*`; the
vision tower is not saved, it is loaded from `config.mm_vision_tower` (Hub id or local path). Importing this module
registers `llava_qwen` / `llava_qwen3` with `AutoConfig` and `AutoModelForSequenceClassification` (idempotent).

Example:
    >>> model = UniFilterModel.from_pretrained("weizhiwang/UniFilter-Qwen2.5-1.5B")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen2Model,
    Qwen2PreTrainedModel,
    Qwen3Config,
    Qwen3Model,
    Qwen3PreTrainedModel,
    SiglipVisionModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from mmsieve.models.devices import pick_attn_implementation, pick_device, pick_dtype


# Vision config types `SiglipVisionModel` loads: SigLIP and non-naflex SigLIP2 checkpoints (e.g.
# google/siglip2-so400m-patch14-384) are both saved as "siglip"; a vision-only save is "siglip_vision_model".
SIGLIP_MODEL_TYPES = ("siglip", "siglip_vision_model")


# ----------------------------------------------------------------------------------------------------------- configs
@dataclasses.dataclass(kw_only=True, repr=False)
class _UniFilterConfigFields:
    """The multimodal fields the official training writes into `config.json` (shared by both configs)."""

    mm_vision_tower: str | None = None
    mm_hidden_size: int | None = None
    mm_projector_type: str = "aapool_mlp"
    mm_vision_select_layer: int = -1
    mm_vision_select_feature: str = "patch"
    mm_num_image_tokens: int = 144
    mm_patch_merge_type: str = "flat"
    image_aspect_ratio: str = "pad"
    tokenizer_padding_side: str = "right"
    tokenizer_model_max_length: int | None = None
    use_mm_proj: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        if getattr(self, "id2label", None) is None:  # released models are regressors: one label unless told otherwise
            kwargs.setdefault("num_labels", 1)
        super().__post_init__(**kwargs)  # type: ignore[misc]

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()  # type: ignore[misc]
        rope = out.get("rope_parameters") or {}
        if "rope_theta" in rope:  # transformers 4.x (the official code) reads only the top-level key
            out.setdefault("rope_theta", rope["rope_theta"])
        return out


class LlavaQwenConfig(_UniFilterConfigFields, Qwen2Config):
    """Config of the Qwen2/Qwen2.5 UniFilter classifier (`model_type="llava_qwen"`).

    Example:
        >>> LlavaQwenConfig(mm_hidden_size=1152, mm_vision_tower="google/siglip-so400m-patch14-384").num_labels
        1
    """

    model_type = "llava_qwen"


class LlavaQwen3Config(_UniFilterConfigFields, Qwen3Config):
    """Config of the Qwen3 UniFilter classifier (`model_type="llava_qwen3"`).

    Example:
        >>> LlavaQwen3Config(mm_vision_tower="google/siglip2-so400m-patch14-384").model_type
        'llava_qwen3'
    """

    model_type = "llava_qwen3"


# --------------------------------------------------------------------------------------------------------- projector
class AvgPoolProjector(nn.Module):
    """The official `aapool_mlp` projector: adaptive 2D average pooling of the patch grid, then a 2-layer MLP.

    27x27 -> 12x12 adaptive pooling uses overlapping windows (of 3), so it is not a plain `AvgPool2d`.

    Example:
        >>> proj = AvgPoolProjector(vision_hidden=32, hidden=64, num_tokens=144)
        >>> proj(torch.randn(2, 729, 32)).shape
        torch.Size([2, 144, 64])
    """

    def __init__(self, vision_hidden: int, hidden: int, num_tokens: int = 144) -> None:
        super().__init__()
        grid = math.isqrt(num_tokens)
        if grid * grid != num_tokens:
            raise ValueError(f"mm_num_image_tokens must be a square number, got {num_tokens}")
        self.num_tokens = num_tokens
        self.pool = nn.AdaptiveAvgPool2d((grid, grid))
        self.mlp_projector = nn.Sequential(nn.Linear(vision_hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        n, patches, dim = features.shape  # [N, P, Dv], P = side * side
        side = math.isqrt(patches)
        if side * side != patches:
            raise ValueError(f"expected a square grid of patches, got {patches}")
        grid = features.transpose(1, 2).reshape(n, dim, side, side)  # [N, Dv, side, side]
        pooled = self.pool(grid).flatten(2).transpose(1, 2)  # [N, T, Dv]
        return self.mlp_projector(pooled)  # [N, T, H]


# ------------------------------------------------------------------------------------------------------ classifiers
class _ProjectorMixin:
    """Adds `mm_projector` to a Qwen decoder, so its weights live under `model.mm_projector.*` as in the official code."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__(config)  # type: ignore[call-arg]
        self.mm_projector = AvgPoolProjector(config.mm_hidden_size, config.hidden_size, config.mm_num_image_tokens)


class LlavaQwenModel(_ProjectorMixin, Qwen2Model):
    """Qwen2 decoder that also owns the image projector."""

    config_class = LlavaQwenConfig


class LlavaQwen3Model(_ProjectorMixin, Qwen3Model):
    """Qwen3 decoder that also owns the image projector."""

    config_class = LlavaQwen3Config


class _ClassifierMixin:
    """The UniFilter classifier head and readout, shared by the Qwen2 and Qwen3 variants."""

    base_model_prefix = "model"
    decoder_class: ClassVar[type[nn.Module]]
    # Some LLaVA-style saves also contain the (frozen) tower; it is always re-loaded from `mm_vision_tower`.
    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"vision_tower\."]

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__(config)  # type: ignore[call-arg]
        self.num_labels = config.num_labels
        self.model = self.decoder_class(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()  # type: ignore[attr-defined]

    def project_image_features(self, features: torch.Tensor) -> torch.Tensor:
        """Vision features `[N, P, Dv]` -> image token embeddings `[N, mm_num_image_tokens, H]`."""
        return self.model.mm_projector(features.to(self.score.weight.dtype))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        """Score right-padded sequences at their last attended position; loss is MSE (1 label) or cross-entropy."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.model.embed_tokens(input_ids)
        kwargs.pop("use_cache", None)
        hidden = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False, **kwargs)
        hidden = hidden.last_hidden_state  # [B, L, H]
        batch, length = hidden.shape[:2]
        if attention_mask is None:
            last = torch.full((batch,), length - 1, device=hidden.device)
        else:
            last = attention_mask.sum(dim=1).to(hidden.device, torch.long) - 1  # right padding: last non-pad position
        logits = self.score(hidden[torch.arange(batch, device=hidden.device), last])  # [B, num_labels]
        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            if self.num_labels == 1:
                loss = nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).view(-1))
            else:
                loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.long().view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)


class LlavaQwenClassifier(_ClassifierMixin, Qwen2PreTrainedModel):
    """UniFilter classifier on Qwen2/Qwen2.5 (official class name, same weight names).

    Example:
        >>> clf = LlavaQwenClassifier(LlavaQwenConfig(vocab_size=300, hidden_size=64, intermediate_size=128,
        ...     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, mm_hidden_size=32))
        >>> clf(input_ids=torch.tensor([[1, 2, 3]])).logits.shape
        torch.Size([1, 1])
    """

    config_class = LlavaQwenConfig
    decoder_class = LlavaQwenModel


class LlavaQwen3Classifier(_ClassifierMixin, Qwen3PreTrainedModel):
    """UniFilter classifier on Qwen3 (official class name, same weight names; keeps the q/k norms).

    Example:
        >>> clf = LlavaQwen3Classifier.from_pretrained("path/to/UniFilter-Qwen3-0.6B")  # doctest: +SKIP
    """

    config_class = LlavaQwen3Config
    decoder_class = LlavaQwen3Model


CLASSIFIERS: dict[str, type[nn.Module]] = {"llava_qwen": LlavaQwenClassifier, "llava_qwen3": LlavaQwen3Classifier}


def register_auto_classes() -> None:
    """Register both configs and classifiers with transformers' Auto classes (safe to call any number of times).

    Example:
        >>> register_auto_classes()
        >>> AutoConfig.for_model("llava_qwen").__class__.__name__
        'LlavaQwenConfig'
    """
    for config_class, model_class in (
        (LlavaQwenConfig, LlavaQwenClassifier),
        (LlavaQwen3Config, LlavaQwen3Classifier),
    ):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModelForSequenceClassification.register(config_class, model_class, exist_ok=True)


register_auto_classes()


# --------------------------------------------------------------------------------------------------------- the bundle
class _SiglipVisionTower(SiglipVisionModel):
    """`SiglipVisionModel` that loads quietly from a full SigLIP (image + text) checkpoint, as Google publishes them."""

    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"^text_model\.", r"^logit_(scale|bias)$"]


def _require_safetensors(name_or_path: str) -> None:
    """Refuse a local checkpoint that only has pickled weights (loading them could run arbitrary code)."""
    path = Path(name_or_path)
    if path.is_dir() and not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".ckpt"})
        found = f"only pickled weights ({', '.join(pickled)})" if pickled else "no weights"
        raise ValueError(
            f"{name_or_path} has {found}; mmsieve loads safetensors only. Convert it once in a trusted environment "
            "(load it there and call `save_pretrained`, which writes model.safetensors), then load the converted copy."
        )


def _first_id(*candidates: int | list[int] | None) -> int | None:
    for candidate in candidates:
        if isinstance(candidate, list):  # some configs list several EOS ids; the first is the one appended
            candidate = candidate[0] if candidate else None
        if candidate is not None:
            return int(candidate)
    return None


def _image_preprocessing(
    tower: str, vision_config: PretrainedConfig
) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """Image size, mean and std from the tower's `preprocessor_config.json`, else from its config (SigLIP: 0.5)."""
    from transformers.image_processing_base import ImageProcessingMixin

    try:  # the dict AutoImageProcessor reads, without building a processor (which may want torchvision)
        processor, _ = ImageProcessingMixin.get_image_processor_dict(tower)
    except (OSError, ValueError):
        processor = {}
    size = processor.get("size") or {}
    if isinstance(size, int):
        size = {"height": size}
    image_size = int(size.get("height") or size.get("shortest_edge") or vision_config.image_size)
    mean = tuple(float(x) for x in processor.get("image_mean") or (0.5, 0.5, 0.5))
    std = tuple(float(x) for x in processor.get("image_std") or (0.5, 0.5, 0.5))
    return image_size, mean, std


def image_features(vision_tower: SiglipVisionModel, pixel_values: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """SigLIP patch features `[N, P, Dv]` of encoder layer `layer` (-1: the last, BEFORE post_layernorm).

    Example:
        >>> features = image_features(tower, pixels)  # [N, 729, 1152] for so400m at 384 px  # doctest: +SKIP
    """
    if layer == -1:  # same as hidden_states[-1], without keeping every layer's activations alive
        embeds = vision_tower.embeddings(pixel_values)  # [N, P, Dv]
        return vision_tower.encoder(inputs_embeds=embeds).last_hidden_state
    return vision_tower(pixel_values=pixel_values, output_hidden_states=True).hidden_states[layer]


SHIPPED_TOWER = "vision_tower"  # mm_vision_tower value of a checkpoint that carries its own tower


def _shipped_tower(name_or_path: str, revision: str | None) -> str:
    """The `vision_tower/` folder inside a checkpoint: a local subfolder, or fetched from the Hub repo."""
    local = Path(name_or_path) / SHIPPED_TOWER
    if local.is_dir():
        return str(local)
    if Path(name_or_path).exists():
        raise ValueError(f"{name_or_path} says mm_vision_tower={SHIPPED_TOWER!r} but has no {SHIPPED_TOWER}/ folder")
    from huggingface_hub import snapshot_download

    root = snapshot_download(name_or_path, revision=revision, allow_patterns=[f"{SHIPPED_TOWER}/*"])
    return str(Path(root) / SHIPPED_TOWER)


class UniFilterModel:
    """Everything a UniFilter scorer needs, loaded once: classifier, SigLIP tower, tokenizer and image settings.

    Special tokens are those the checkpoint defines: `bos_token_id` / `eos_token_id` from the tokenizer, else from
    the config (official training registers "<s>" as BOS on Qwen); `pad_token_id` from the config, else the
    tokenizer. Any of them is None when the checkpoint defines it nowhere; the scorer then omits BOS/EOS.

    Example:
        >>> model = UniFilterModel.from_pretrained("weizhiwang/UniFilter-Qwen2.5-1.5B")  # doctest: +SKIP
        >>> image_tokens = model.encode_images(pixel_values)  # [N, 144, H]  # doctest: +SKIP
        >>> text = model.embed_tokens(input_ids)  # [L, H]  # doctest: +SKIP
        >>> scores = model.classify(inputs_embeds, attention_mask)[:, 0]  # ~0..3  # doctest: +SKIP
    """

    def __init__(
        self,
        classifier: LlavaQwenClassifier | LlavaQwen3Classifier,
        vision_tower: SiglipVisionModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        image_size: int,
        image_mean: tuple[float, ...] = (0.5, 0.5, 0.5),
        image_std: tuple[float, ...] = (0.5, 0.5, 0.5),
        name_or_path: str = "",
    ) -> None:
        self.classifier = classifier
        self.vision_tower = vision_tower
        self.tokenizer = tokenizer
        self.config = classifier.config
        self.device = classifier.device
        self.dtype = classifier.dtype
        self.name_or_path = name_or_path
        self.image_size, self.image_mean, self.image_std = image_size, image_mean, image_std
        self.num_image_tokens: int = self.config.mm_num_image_tokens
        self.num_labels: int = self.config.num_labels
        self.hidden_size: int = self.config.hidden_size
        self.max_length: int | None = self.config.tokenizer_model_max_length
        self.bos_token_id = _first_id(tokenizer.bos_token_id, self.config.bos_token_id)
        self.eos_token_id = _first_id(tokenizer.eos_token_id, self.config.eos_token_id)
        self.pad_token_id = _first_id(self.config.pad_token_id, tokenizer.pad_token_id)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        vision_tower: str | Path | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        revision: str | None = None,
    ) -> UniFilterModel:
        """Load an official-format UniFilter checkpoint (Hub id or local directory), safetensors only.

        Args:
            name_or_path: e.g. `"weizhiwang/UniFilter-Qwen3-0.6B"` or a directory written by `save_pretrained`.
            vision_tower: a SigLIP Hub id or directory to use instead of `config.mm_vision_tower`.
            device: default `pick_device()` (this worker's GPU, else CPU).
            dtype: default bfloat16 on CUDA, float32 on CPU; the tower runs in the same dtype.
            revision: branch, tag or commit of the classifier repo.

        Example:
            >>> model = UniFilterModel.from_pretrained("ckpt/unifilter", vision_tower="ckpt/siglip")  # doctest: +SKIP
        """
        name_or_path = str(name_or_path)
        _require_safetensors(name_or_path)
        config_dict, _ = PretrainedConfig.get_config_dict(name_or_path, revision=revision)
        model_type = config_dict.get("model_type")
        if model_type not in CLASSIFIERS:
            raise ValueError(
                f"{name_or_path} is not a UniFilter checkpoint: config.json has model_type={model_type!r}, "
                f"expected one of {sorted(CLASSIFIERS)} (e.g. weizhiwang/UniFilter-Qwen2.5-1.5B)."
            )
        classifier_class = CLASSIFIERS[model_type]
        config = classifier_class.config_class.from_pretrained(name_or_path, revision=revision)
        tower = str(vision_tower or config.mm_vision_tower or "")
        if not tower:
            raise ValueError(
                f"{name_or_path}: config.mm_vision_tower is empty; pass vision_tower=<SigLIP id or path>."
            )
        if vision_tower is None and tower == SHIPPED_TOWER:
            tower = _shipped_tower(name_or_path, revision)
        if config.mm_vision_select_feature != "patch":
            raise ValueError(
                f"unsupported mm_vision_select_feature={config.mm_vision_select_feature!r}; only 'patch'."
            )
        _require_safetensors(tower)
        vision_config = AutoConfig.from_pretrained(tower)
        if vision_config.model_type not in SIGLIP_MODEL_TYPES:
            raise ValueError(
                f"vision tower {tower} has model_type={vision_config.model_type!r}; UniFilter uses SigLIP or "
                "non-naflex SigLIP2 checkpoints (model_type 'siglip'), e.g. google/siglip-so400m-patch14-384."
            )
        vision_config = getattr(vision_config, "vision_config", vision_config)
        config.mm_hidden_size = config.mm_hidden_size or vision_config.hidden_size
        if vision_config.hidden_size != config.mm_hidden_size:
            raise ValueError(
                f"vision tower {tower} has hidden size {vision_config.hidden_size}, but the projector expects "
                f"mm_hidden_size={config.mm_hidden_size}: wrong tower for this checkpoint."
            )
        config.mm_vision_tower = tower  # what this model runs with, and what save_pretrained records

        device = torch.device(device) if device is not None else pick_device()
        dtype = dtype or pick_dtype(device)
        classifier, loading = classifier_class.from_pretrained(
            name_or_path,
            config=config,
            revision=revision,
            dtype=dtype,
            attn_implementation=pick_attn_implementation(device, dtype),
            use_safetensors=True,
            output_loading_info=True,
        )
        if loading["missing_keys"]:  # a score from random weights must not look like a score
            missing = sorted(loading["missing_keys"])
            raise ValueError(f"{name_or_path} lacks {len(missing)} classifier weights, e.g. {missing[:3]}")
        vision_model = _SiglipVisionTower.from_pretrained(
            tower, dtype=dtype, attn_implementation="sdpa", use_safetensors=True
        )
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision, padding_side="right")
        image_size, mean, std = _image_preprocessing(tower, vision_config)
        return cls(
            classifier.to(device).eval(),
            vision_model.to(device).eval().requires_grad_(False),
            tokenizer,
            image_size=image_size,
            image_mean=mean,
            image_std=std,
            name_or_path=name_or_path,
        )

    @torch.inference_mode()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixels `[N, 3, S, S]` (normalized) -> image token embeddings `[N, num_image_tokens, H]`.

        Features are the output of encoder layer `mm_vision_select_layer` (-1: the last, before post_layernorm).
        """
        pixel_values = pixel_values.to(self.device, self.vision_tower.dtype, non_blocking=True)
        features = image_features(self.vision_tower, pixel_values, self.config.mm_vision_select_layer)
        return self.classifier.project_image_features(features)  # [N, T, H]

    @torch.inference_mode()
    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids `[...]` -> embeddings `[..., H]` on the model's device."""
        return self.classifier.get_input_embeddings()(ids.to(self.device, non_blocking=True))

    @torch.inference_mode()
    def classify(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Right-padded embeddings `[B, L, H]` and mask `[B, L]` -> float32 logits `[B, num_labels]`."""
        out = self.classifier(
            inputs_embeds=inputs_embeds.to(self.device, self.dtype, non_blocking=True),
            attention_mask=attention_mask.to(self.device, torch.long, non_blocking=True),
        )
        return out.logits.float()

    def save_pretrained(self, path: str | Path, *, ship_vision_tower: bool = False) -> Path:
        """Write the official format: config.json, model.safetensors (no tower weights), tokenizer files.

        With `ship_vision_tower=True` (a tower trained or initialised here, not downloadable elsewhere) the
        tower is saved in `path/vision_tower/` and `mm_vision_tower` says `"vision_tower"`; `from_pretrained`
        then loads it from the checkpoint itself, local or on the Hub.

        Example:
            >>> model.save_pretrained("out/unifilter")  # doctest: +SKIP
        """
        path = Path(path)
        recorded = self.config.mm_vision_tower
        if ship_vision_tower:
            self.vision_tower.save_pretrained(path / SHIPPED_TOWER)
            processor = {
                "image_processor_type": "SiglipImageProcessor",
                "do_resize": True,
                "size": {"height": self.image_size, "width": self.image_size},
                "resample": 3,
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "image_mean": list(self.image_mean),
                "image_std": list(self.image_std),
            }
            (path / SHIPPED_TOWER / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
            self.config.mm_vision_tower = SHIPPED_TOWER
        try:
            self.classifier.save_pretrained(path)
        finally:
            self.config.mm_vision_tower = recorded
        self.tokenizer.save_pretrained(path)
        return path

    def __repr__(self) -> str:
        kind, tower = type(self.classifier).__name__, self.config.mm_vision_tower
        return (
            f"UniFilterModel({self.name_or_path!r}, {kind}, tower={tower!r}, device={self.device}, dtype={self.dtype})"
        )
