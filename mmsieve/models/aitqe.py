"""AITQE ("Beyond Filtering", `HymanH/AITQE`): a native loader and batched generator for the official checkpoint.

The official model class (`MMForCausalLM`, `model_type="mm"`, github `hanhuang22/AITQE` `modeling_mm.py`) needs
remote code; this module rebuilds it from transformers parts so the released safetensors load unchanged:

    pixels [N, 3, 384, 384] -> SiglipVisionModel hidden_states[-2] (penultimate layer, all 729 tokens)  [N, 729, 1152]
      -> mm_projector: Linear(1152, H) -> GELU -> Linear(H, H, bias=False)                              [N, 729, H]
    [729 image slots] + text ids -> Qwen2 embeddings, slots filled with the projected features -> generate

Checkpoint keys (all of them, nothing else): `model.model.embed_tokens.weight`, `model.model.layers.{i}.*`,
`model.model.norm.weight`, `model.lm_head.weight` (the `Qwen2ForCausalLM` under `model`),
`vision_model.vision_model.{embeddings,encoder,post_layernorm,head}.*` (the `SiglipVisionModel`),
`mm_projector.0.weight`, `mm_projector.0.bias`, `mm_projector.2.weight` and `image_newline` (loaded, unused, as in
the original). The LLM config is config.json itself (the original builds Qwen2 from its own config; the unread
`language_model_name_or_path` is never fetched). The vision config and image processor come from
`vision_model_name_or_path`: a local folder, a folder of that name inside the checkpoint, else its `config.json` and
`preprocessor_config.json` (no weights) from the Hub; a `preprocessor_config.json` in the checkpoint wins.

Example:
    >>> model = load_aitqe("HymanH/AITQE")  # doctest: +SKIP
    >>> model.evaluate([image], ["a photo of a cat"])  # doctest: +SKIP
    ['{"Recaption": "...", "Overall Score": "2<Overall}']
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmsieve.models.devices import pick_attn_implementation, pick_device, pick_dtype


IMAGE_SLOT = -1  # id placeholder of an image feature position (the original's "untext_token_mask")
STOP_STRING = "<Overall>"  # inference.py's stop string in the default (non --output_all) mode
_IMG_START, _IMG_END = "<img_start>", "<img_end>"
_META_KEYS = {"model_type", "architectures", "auto_map", "_name_or_path", "transformers_version"}
_MM_KEYS = set(
    "pesudo_img_size pesudo_patch_size pooling_kernel image_token_index eos_token_index IGNORE_INDEX".split()
)
# MMConfig.__init__ defaults: what a config.json field that is absent means to the original.
# fmt: off
_LLM_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "hidden_act": "silu", "max_position_embeddings": 4096,
    "initializer_range": 0.02, "rms_norm_eps": 1e-5, "use_cache": True, "pad_token_id": 0, "bos_token_id": 1,
    "eos_token_id": 2, "tie_word_embeddings": False, "rope_theta": 10000.0, "attention_dropout": 0.0,
}
# fmt: on


def evaluation_prompt(caption: str) -> str:
    """The text AITQE reads after the image line (inference.py's question).

    Example:
        >>> evaluation_prompt("a cat").splitlines()
        ['Evaluate the caption: a cat', 'if score is low, give a short description of the image.', 'Respond using a dictionary structure.']
    """
    return (
        f"Evaluate the caption: {caption}\nif score is low, give a short description of the image.\n"
        "Respond using a dictionary structure."
    )


def postprocess_output(text: str, output_all: bool = False) -> str:
    """inference.py's post-processing of the decoded reply: strip; in the default mode replace the last char by "}".

    Example:
        >>> postprocess_output(' {"Overall Score": "2<Overall> ')
        '{"Overall Score": "2<Overall}'
    """
    text = text.strip()
    return text if output_all else text[:-1] + "}"


@dataclass
class AITQEConfig:
    """The fields of an AITQE `config.json` that shape the model (the rest stays in `raw`).

    Example:
        >>> AITQEConfig.from_dict({"hidden_size": 64, "visual_hidden_dim": 32}).language_config().hidden_size
        64
    """

    raw: dict[str, Any] = field(default_factory=dict)
    vision_model_name_or_path: str = ""
    language_model_name_or_path: str | None = None
    visual_hidden_dim: int = 1152
    image_tile_tokens: int = 729
    image_pattern: str = "<image>"
    mm_projector_type: str = "mlp"
    image_aspect_ratio: str = "square"
    pad_token_index: int | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AITQEConfig:
        """Read a config.json dict; raises on the variants the original code rejects too."""
        fields = {k: raw[k] for k in cls.__dataclass_fields__ if k != "raw" and raw.get(k) is not None}
        config = cls(raw=dict(raw), **fields)
        if config.mm_projector_type != "mlp" or config.image_aspect_ratio != "square":
            raise ValueError("AITQE supports mm_projector_type='mlp' and image_aspect_ratio='square' only")
        if config.image_pattern.count("<image>") != 1:
            raise ValueError(f"image_pattern must hold one '<image>', got {config.image_pattern!r}")
        return config

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> AITQEConfig:
        """Read `folder/config.json`, checking it is an AITQE (`model_type="mm"`) config."""
        raw = json.loads((Path(folder) / "config.json").read_text())
        if raw.get("model_type") != "mm":
            raise ValueError(f"{folder} is not an AITQE checkpoint: model_type={raw.get('model_type')!r}, want 'mm'")
        return cls.from_dict(raw)

    def language_config(self) -> Any:
        """The `Qwen2Config` of the LLM: config.json's own fields over MMConfig's defaults."""
        from transformers import Qwen2Config

        skip = _META_KEYS | _MM_KEYS | set(self.__dataclass_fields__)
        values = {**_LLM_DEFAULTS, **{k: v for k, v in self.raw.items() if k not in skip}}
        if values.get("rope_scaling") is None:
            values.pop("rope_scaling", None)
        return Qwen2Config(**values)


@dataclass
class Generated:
    """One generated reply: its new token ids (up to the one that finished it) and whether it finished.

    Example:
        >>> Generated([5, 7, 1], finished=True).ids
        [5, 7, 1]
    """

    ids: list[int]
    finished: bool  # stopped by EOS or a stop string; False when the token limit cut it


class _FinishTracker:
    """A stopping criterion (EOS ids, stop strings) that records when each row finished."""

    def __init__(self, eos_ids: set[int], stop: Any, batch: int) -> None:
        self.eos, self.stop, self.lengths = torch.tensor(sorted(eos_ids)), stop, [0] * batch

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        done = torch.isin(input_ids[:, -1], self.eos.to(input_ids.device))
        if self.stop is not None:
            done |= self.stop(input_ids, scores)
        for row in done.nonzero().flatten().tolist():
            self.lengths[row] = self.lengths[row] or input_ids.shape[1]
        return done


class _TowerKeys(nn.Module):
    """transformers 5 flattened `SiglipVisionModel`; this keeps the checkpoint's `vision_model.vision_model.*` keys."""

    def __init__(self, tower: nn.Module) -> None:
        super().__init__()
        self.vision_model = tower

    def forward(self, **inputs: Any) -> Any:
        return self.vision_model(**inputs)


class AITQEModel(nn.Module):
    """`MMForCausalLM` rebuilt natively: `model` (Qwen2ForCausalLM), `vision_model`, `mm_projector`, `image_newline`.

    `load_aitqe` builds it and sets `tokenizer`, `image_processor` and `generation_config`.

    Example:
        >>> model = load_aitqe("path/to/AITQE", device="cpu")  # doctest: +SKIP
        >>> ids = model.prompt_ids(evaluation_prompt("a cat"))  # [-1] * 729 + text ids  # doctest: +SKIP
    """

    def __init__(
        self, config: AITQEConfig, vision_config: Any, *, attn_implementation: str = "sdpa", dtype: Any = None
    ) -> None:
        from transformers import Qwen2ForCausalLM, SiglipVisionModel

        super().__init__()
        self.config, self.vision_config = config, vision_config
        llm_config = config.language_config()
        self.model = Qwen2ForCausalLM._from_config(llm_config, attn_implementation=attn_implementation, dtype=dtype)
        tower = SiglipVisionModel._from_config(vision_config, attn_implementation="sdpa", dtype=dtype)
        self.vision_model = tower if hasattr(tower, "vision_model") else _TowerKeys(tower)
        hidden = llm_config.hidden_size
        self.mm_projector = nn.Sequential(
            nn.Linear(config.visual_hidden_dim, hidden, dtype=dtype),
            nn.GELU(),
            nn.Linear(hidden, hidden, bias=False, dtype=dtype),
        )
        self.image_newline = nn.Parameter(torch.zeros(hidden, dtype=dtype))  # in the checkpoint; unused
        self.tokenizer: Any = None
        self.image_processor: Any = None
        self.generation_config: Any = None
        self._prefix: list[int] | None = None
        self._stop_criteria: dict[tuple[str, ...], Any] = {}

    @property
    def device(self) -> torch.device:
        """Where the model's weights are.

        Example:
            >>> load_aitqe("path/to/AITQE", device="cpu").device  # doctest: +SKIP
            device(type='cpu')
        """
        return self.mm_projector[0].weight.device

    @property
    def _pad_id(self) -> int:  # left padding's id (its positions are masked anyway)
        return self.config.pad_token_index if self.config.pad_token_index is not None else 0

    def prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of `<img_start>...<img_end>\\n{prompt}` as data_processor.py builds them, slots as `IMAGE_SLOT`.

        The image span becomes `image_pattern` with a newline forced after `<img_end>`; that part and the text after
        it are tokenized separately: with the default pattern, `slots + tok("\\n") + tok("\\n" + prompt)`.

        Example:
            >>> model.prompt_ids(evaluation_prompt("a cat"))[728:731]  # last slot, "\\n", "\\n"  # doctest: +SKIP
            [-1, 198, 198]
        """
        if self._prefix is None:
            pattern = self.config.image_pattern
            text = (pattern.format(0) if "{}" in pattern else pattern).replace(
                "<image>", f"{_IMG_START}{{}}{_IMG_END}"
            )
            text = re.sub(f"{_IMG_END} +", _IMG_END, text)
            text = re.sub(f"{_IMG_END}(?![ \n])", f"{_IMG_END}\n", text)
            self._prefix = []
            for part in re.split(f"({_IMG_START}.*?{_IMG_END})", text):
                if part.startswith(_IMG_START):
                    self._prefix += [IMAGE_SLOT] * self.config.image_tile_tokens
                elif part:
                    self._prefix += self._tokenize(part)
        return self._prefix + self._tokenize("\n" + prompt)

    def _tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=False).input_ids

    @torch.inference_mode()
    def pixel_values(self, images: Sequence[Any]) -> torch.Tensor:
        """RGB PIL images -> normalized pixels `[N, 3, S, S]` (the SigLIP processor), on the model's device/dtype.

        Example:
            >>> model.pixel_values([Image.new("RGB", (640, 480))]).shape  # doctest: +SKIP
            torch.Size([1, 3, 384, 384])
        """
        pixels = self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        return pixels.to(self.device, self.mm_projector[0].weight.dtype)

    @torch.inference_mode()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixels `[N, 3, S, S]` -> image slot embeddings `[N, image_tile_tokens, H]` (penultimate SigLIP layer).

        Example:
            >>> model.encode_images(model.pixel_values([image])).shape  # doctest: +SKIP
            torch.Size([1, 729, 3584])
        """
        out = self.vision_model(pixel_values=pixel_values, output_hidden_states=True)
        features = out.hidden_states[-2]
        if "siglip" not in self.config.vision_model_name_or_path.lower():  # the original drops a CLS token then
            features = features[:, 1:]
        if features.shape[1] != self.config.image_tile_tokens:
            raise ValueError(
                f"{features.shape[1]} image features, config.image_tile_tokens says {self.config.image_tile_tokens}"
            )
        return self.mm_projector(features)

    @torch.inference_mode()
    def embed(self, sequences: Sequence[Sequence[int]], features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded `inputs_embeds [B, L, H]` and `attention_mask [B, L]`; slot positions get `features[b]`.

        Example:
            >>> embeds, mask = model.embed([model.prompt_ids("hi")], model.encode_images(pixels))  # doctest: +SKIP
        """
        length = max(len(ids) for ids in sequences)
        ids = torch.full((len(sequences), length), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, length - len(seq) :], mask[row, length - len(seq) :] = torch.tensor(seq, dtype=torch.long), 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        slots = ids == IMAGE_SLOT
        if int(slots.sum()) != features.shape[0] * features.shape[1]:
            raise ValueError(f"{int(slots.sum())} image slots for {features.shape[0]} images of {features.shape[1]}")
        embeds = self.model.get_input_embeddings()(ids.clamp(min=0))
        embeds[slots] = features.to(embeds.dtype).reshape(-1, embeds.shape[-1])  # row-major: image b fills row b
        return embeds, mask

    @torch.inference_mode()
    def generate(
        self,
        sequences: Sequence[Sequence[int]],
        pixel_values: torch.Tensor,
        *,
        max_new_tokens: int = 384,
        stop_strings: Sequence[str] = (STOP_STRING,),
    ) -> list[Generated]:
        """Greedy generation for a batch (one image per sequence), left padded; stops per row at EOS or a stop string.

        Example:
            >>> ids = [model.prompt_ids(evaluation_prompt(c)) for c in ("a cat", "a dog")]  # doctest: +SKIP
            >>> model.generate(ids, model.pixel_values([cat, dog]))[0].finished  # doctest: +SKIP
            True
        """
        from transformers import StoppingCriteriaList, StopStringCriteria

        embeds, mask = self.embed(sequences, self.encode_images(pixel_values))
        config = copy.deepcopy(self.generation_config)
        config.update(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, use_cache=True)
        eos = config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        if config.pad_token_id is None:
            config.pad_token_id = self._pad_id
        key = tuple(stop_strings)
        if key and key not in self._stop_criteria:
            self._stop_criteria[key] = StopStringCriteria(self.tokenizer, list(key))
        tracker = _FinishTracker(eos_ids, self._stop_criteria.get(key), len(sequences))
        out = self.model.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            generation_config=config,
            stopping_criteria=StoppingCriteriaList([tracker]),
        )
        return [Generated(row[: n or len(row)], finished=bool(n)) for row, n in zip(out.tolist(), tracker.lengths)]

    def evaluate(self, images: Sequence[Any], captions: Sequence[str], *, output_all: bool = False) -> list[str]:
        """Score (and maybe recaption) image-caption pairs as inference.py does, in one batch.

        Example:
            >>> model.evaluate([Image.open("test.png").convert("RGB")], ["some random text"])  # doctest: +SKIP
        """
        ids = [self.prompt_ids(evaluation_prompt(caption)) for caption in captions]
        stops = () if output_all else (STOP_STRING,)
        replies = self.generate(ids, self.pixel_values(images), stop_strings=stops)
        return [
            postprocess_output(self.tokenizer.decode(r.ids, skip_special_tokens=True), output_all) for r in replies
        ]


def _checkpoint_folder(name: str, revision: str | None) -> Path:
    """A local folder, else a Hub snapshot of the configs, tokenizer and safetensors (never pickles)."""
    if Path(name).is_dir():
        return Path(name)
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]
    return Path(snapshot_download(name, revision=revision, allow_patterns=patterns))


def _vision_folder(name: str, checkpoint: Path) -> Path:
    """`vision_model_name_or_path`: a folder, a folder inside the checkpoint, else its configs from the Hub."""
    for candidate in (Path(name), checkpoint / name):
        if name and candidate.is_dir():
            return candidate
    if not name:
        raise ValueError(f"{checkpoint}/config.json has no vision_model_name_or_path")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name, allow_patterns=["config.json", "preprocessor_config.json"]))


def _load_weights(model: AITQEModel, folder: Path, device: torch.device, dtype: torch.dtype) -> None:
    """Load every `model*.safetensors` shard; raise on missing or unexpected keys."""
    from safetensors.torch import load_file

    shards = sorted(folder.glob("model*.safetensors"))
    if not shards:
        pickled = sorted(p.name for p in folder.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".ckpt"})
        raise ValueError(f"{folder} has no model*.safetensors ({pickled or 'no weights'}); mmsieve never unpickles")
    expected, unexpected = set(model.state_dict()), []
    for shard in shards:
        tensors = load_file(str(shard), device=str(device))
        unexpected += [key for key in tensors if key not in expected]
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items() if k in expected}
        model.load_state_dict(tensors, strict=False, assign=True)
    if model.config.raw.get("tie_word_embeddings") and model.model.lm_head.weight.is_meta:
        model.model.lm_head.weight = model.model.get_input_embeddings().weight
    missing = sorted(name for name, param in model.named_parameters() if param.is_meta)
    if missing or unexpected:
        raise ValueError(
            f"{folder} does not match the AITQE architecture: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {sorted(unexpected)[:5]}"
        )


def load_aitqe(
    model_id_or_path: str | Path,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    *,
    revision: str | None = None,
) -> AITQEModel:
    """Load an official AITQE checkpoint (Hub id or folder) with its tokenizer and SigLIP image processor.

    Args:
        model_id_or_path: `"HymanH/AITQE"` or a local copy of it.
        device: default `pick_device()`; dtype: default bfloat16 on CUDA (as the original), float32 on CPU.

    Raises:
        ValueError: not an AITQE config, no safetensors, or weights missing / unexpected for the architecture.

    Example:
        >>> model = load_aitqe("HymanH/AITQE", device="cuda:0")  # doctest: +SKIP
    """
    from accelerate import init_empty_weights
    from transformers import AutoTokenizer, GenerationConfig, SiglipVisionConfig

    try:
        from transformers import SiglipImageProcessorPil as ImageProcessor  # PIL resize, like the original's
    except ImportError:  # transformers 4.x: the slow processor is the PIL one
        from transformers import SiglipImageProcessor as ImageProcessor

    folder = _checkpoint_folder(str(model_id_or_path), revision)
    config = AITQEConfig.from_pretrained(folder)
    vision_folder = _vision_folder(config.vision_model_name_or_path, folder)
    vision_config = SiglipVisionConfig.from_pretrained(vision_folder)
    device = torch.device(device) if device is not None else pick_device()
    dtype = dtype or pick_dtype(device)
    with init_empty_weights(include_buffers=False):  # parameters on meta: no 7B random init
        model = AITQEModel(
            config, vision_config, attn_implementation=pick_attn_implementation(device, dtype), dtype=dtype
        )
    _load_weights(model, folder, device, dtype)
    model.tokenizer = AutoTokenizer.from_pretrained(folder, config=config.language_config(), padding_side="left")
    has_processor = (folder / "preprocessor_config.json").is_file()
    model.image_processor = ImageProcessor.from_pretrained(folder if has_processor else vision_folder)
    if (folder / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(folder)
    else:
        model.generation_config = GenerationConfig.from_model_config(config.language_config())
    return model.to(device).eval().requires_grad_(False)
