"""Tiny random UniFilter checkpoints in the official format, built offline (tests, benchmarks, the demo).

A checkpoint directory holds `config.json` (`llava_qwen` / `llava_qwen3`), `model.safetensors` with the official key
names, a byte-level BPE tokenizer trained at build time (handles any unicode text; "<s>" is registered as BOS like the
official training, "</s>" is EOS, "<pad>" pads), and a SigLIP tower in `vision_tower/` that `mm_vision_tower` points
to by absolute path, with its `preprocessor_config.json`. The default tower sees a 27x27 patch grid, like
SigLIP-so400m at 384 px, so the 27 -> 12 adaptive pooling behaves as in the real model.

Example:
    >>> path = build_tiny_unifilter(tmp_path / "unifilter")  # doctest: +SKIP
    >>> model = UniFilterModel.from_pretrained(path)  # doctest: +SKIP
    >>> small = build_tiny_unifilter(tmp_path / "small", **SMALL_SIZES)  # benchmark-sized  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch


CORPUS = (
    "a photo of a cat sleeping on a sofa",
    "a cup of coffee on a wooden table next to a laptop",
    "a rocket launching into a clear blue sky",
    "an astronaut in a white suit floating above the earth",
    "a red flower in a green garden after the rain",
    "a city street with old buildings and people walking",
    "the quick brown fox jumps over the lazy dog",
    "two children playing football in a park",
    "a plate of pasta with tomato sauce and basil",
    "a black and white picture of a man reading a newspaper",
    "Click here to buy cheap watches!!! www.example.com",
    "IMG_2041.JPG",
    "The museum opened in 1902. Its collection includes paintings, coins and old maps.",
    "Step 1: mix the flour and the eggs. Step 2: bake for 20 minutes.",
)

# Benchmark-sized model: 14x14 patches pooled to 7x7, about 13M parameters (the real ones are 0.6B-1.5B + 0.4B).
SMALL_SIZES: dict[str, int] = {
    "vision_layers": 4,
    "vision_hidden": 256,
    "vision_heads": 4,
    "image_size": 224,
    "patch_size": 16,
    "num_image_tokens": 49,
    "llm_layers": 4,
    "llm_hidden": 512,
    "llm_heads": 8,
    "llm_kv_heads": 4,
}


def build_tokenizer(vocab_size: int = 512, *, wrap: bool = False, max_length: int | None = None) -> Any:
    """A byte-level BPE tokenizer trained on `CORPUS`: BOS "<s>" (an added special token), EOS "</s>", PAD "<pad>".

    Like Qwen's, it adds no special tokens by itself; the scorer prepends BOS and appends EOS. With
    `wrap=True` it wraps every text in `<s> ... </s>`, as CLIP's tokenizer does (CLIP pools at EOS).

    Example:
        >>> tok = build_tokenizer()
        >>> tok.decode(tok("naïve café 🙂").input_ids)
        'naïve café 🙂'
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))  # byte-level: never used, but processors ask for one
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_special_tokens(["<s>"])  # as the official HEAD training does
    if wrap:
        special = [("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))]
        tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=special)
    options = {"model_max_length": max_length} if max_length else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="right",
        **options,
    )


def _write_preprocessor_config(path: Path, image_size: int) -> None:
    """The `preprocessor_config.json` of google/siglip-so400m-patch14-384, at `image_size`."""
    config = {
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "SiglipImageProcessor",
        "image_std": [0.5, 0.5, 0.5],
        "processor_class": "SiglipProcessor",
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"height": image_size, "width": image_size},
    }
    (path / "preprocessor_config.json").write_text(json.dumps(config, indent=2) + "\n")


def build_tiny_siglip_tower(
    path: str | Path,
    *,
    layers: int = 2,
    hidden: int = 32,
    heads: int = 2,
    image_size: int = 54,
    patch_size: int = 2,
    dual: bool = False,
) -> Path:
    """Save a random SigLIP vision tower (or, with `dual=True`, a full image+text SigLIP like Google's repos).

    Example:
        >>> tower = build_tiny_siglip_tower(tmp_path / "siglip")  # 27x27 patches of 32 dims  # doctest: +SKIP
    """
    from transformers import SiglipConfig, SiglipModel, SiglipVisionConfig, SiglipVisionModel

    path = Path(path)
    vision = {
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "image_size": image_size,
        "patch_size": patch_size,
    }
    if dual:
        text = {
            "vocab_size": 64,
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": 1,
            "num_attention_heads": heads,
            "max_position_embeddings": 16,
            "projection_size": hidden,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
        }
        SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).save_pretrained(path)
    else:
        SiglipVisionModel(SiglipVisionConfig(**vision)).save_pretrained(path)
    _write_preprocessor_config(path, image_size)
    return path


def build_tiny_unifilter(
    path: str | Path,
    *,
    llm: Literal["qwen2", "qwen3"] = "qwen2",
    seed: int = 0,
    num_labels: int = 1,
    vision_layers: int = 2,
    vision_hidden: int = 32,
    vision_heads: int = 2,
    image_size: int = 54,
    patch_size: int = 2,
    num_image_tokens: int = 144,
    llm_layers: int = 2,
    llm_hidden: int = 64,
    llm_heads: int = 4,
    llm_kv_heads: int = 2,
    max_length: int = 1024,
    vocab_size: int = 512,
    dual_tower: bool = False,
) -> Path:
    """Write a complete random UniFilter checkpoint (official format) and its SigLIP tower; deterministic in `seed`.

    Returns the checkpoint directory; the tower is `path / "vision_tower"`. The global torch RNG is left untouched.

    Example:
        >>> path = build_tiny_unifilter(tmp_path / "uf-qwen3", llm="qwen3", num_labels=4)  # doctest: +SKIP
    """
    from mmsieve.models.unifilter import LlavaQwen3Classifier, LlavaQwen3Config, LlavaQwenClassifier, LlavaQwenConfig

    if llm not in ("qwen2", "qwen3"):
        raise ValueError(f"llm must be 'qwen2' or 'qwen3', got {llm!r}")
    path = Path(path).absolute()
    tokenizer = build_tokenizer(vocab_size)
    llm_config: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": llm_hidden,
        "intermediate_size": 3 * llm_hidden,
        "num_hidden_layers": llm_layers,
        "num_attention_heads": llm_heads,
        "num_key_value_heads": llm_kv_heads,
        "max_position_embeddings": max(2048, max_length),
        "tie_word_embeddings": False,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "num_labels": num_labels,
        "mm_hidden_size": vision_hidden,
        "mm_num_image_tokens": num_image_tokens,
        "mm_vision_tower": str(path / "vision_tower"),
        "tokenizer_model_max_length": max_length,
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        build_tiny_siglip_tower(
            path / "vision_tower",
            layers=vision_layers,
            hidden=vision_hidden,
            heads=vision_heads,
            image_size=image_size,
            patch_size=patch_size,
            dual=dual_tower,
        )
        if llm == "qwen2":
            classifier = LlavaQwenClassifier(LlavaQwenConfig(**llm_config))
        else:
            classifier = LlavaQwen3Classifier(LlavaQwen3Config(head_dim=llm_hidden // llm_heads, **llm_config))
    classifier.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_sscd(
    path: str | Path,
    *,
    seed: int = 0,
    layers: tuple[int, ...] = (1, 1, 1, 1),
    width: int = 8,
    embedding_dim: int = 32,
    torchscript: bool = False,
) -> Path:
    """Write a random SSCD-architecture checkpoint (`config.json` + `model.safetensors`); deterministic in `seed`.

    BatchNorm statistics and affine parameters are random too, so eval-mode BatchNorm is not an identity and a
    loader that drops buffers is caught. With `torchscript=True` the same model is also scripted to
    `path / "model.torchscript.pt"`, like the official `.torchscript.pt` files. The global torch RNG is left untouched.

    Example:
        >>> path = build_tiny_sscd(tmp_path / "sscd", torchscript=True)  # doctest: +SKIP
        >>> load_sscd(path / "model.torchscript.pt")(pixels).shape  # [B, 32]  # doctest: +SKIP
    """
    from mmsieve.models.sscd import SSCDConfig, SSCDModel

    path = Path(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SSCDModel(SSCDConfig(layers=tuple(layers), width=width, embedding_dim=embedding_dim)).eval()
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.normal_(0.0, 0.1)
                    module.running_mean.normal_(0.0, 0.1)
                    module.running_var.uniform_(0.5, 1.5)
    model.save_pretrained(path)
    if torchscript:
        torch.jit.script(model).save(str(path / "model.torchscript.pt"))
    return path
