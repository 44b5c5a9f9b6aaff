"""Tiny random UniFilter checkpoints in the official format, built offline (tests, benchmarks, the demo).

A checkpoint directory holds `config.json` (`llava_qwen` / `llava_qwen3`), `model.safetensors` with the official key
names, a byte-level BPE tokenizer trained at build time (handles any unicode text; "<s>" is registered as BOS like the
official training, "</s>" is EOS, "<pad>" pads), and a SigLIP tower in `vision_tower/` that `mm_vision_tower` points
to by absolute path, with its `preprocessor_config.json`. The default tower sees a 27x27 patch grid, like
SigLIP-so400m at 384 px, so the 27 -> 12 adaptive pooling behaves as in the real model.

`build_tiny_llava` and `build_tiny_chat_lm` save tiny random chat models (a LLaVA and a text-only Qwen2) for the
generation backends.

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


# A minimal chat template: "role: text" lines, images as "<image>" placeholders, then "assistant: ". It renders both
# string contents (text LMs) and lists of {"type": ...} parts (processors).
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)


def _tiny_qwen2_config(tokenizer: Any) -> Any:
    """A 1-layer, 32-dim Qwen2 config over `tokenizer`'s vocabulary, initialised wide enough (std 0.3) that the
    replies depend on the prompt (at the usual 0.02 a random model writes the same text whatever it is asked)."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.3,
    )


def _readable_head(lm_head: torch.nn.Linear, tokenizer: Any) -> None:
    """Make a random model's greedy replies readable text that sometimes ends: zero the output rows of the special
    tokens (but EOS) and of the tokens that do not decode alone to printable text (partial UTF-8 bytes, controls),
    so their logit 0 never beats the best of the ~130 random others, and double the EOS row, so that some replies
    stop after a few tokens while others run to the limit."""
    keep = torch.zeros(lm_head.out_features, dtype=torch.bool)
    for token in range(len(tokenizer)):
        text = tokenizer.decode([token])
        whole = text.isprintable() and tokenizer(text, add_special_tokens=False).input_ids == [token]
        keep[token] = token == tokenizer.eos_token_id or (whole and token not in tokenizer.all_special_ids)
    with torch.no_grad():
        lm_head.weight[~keep] = 0.0
        lm_head.weight[tokenizer.eos_token_id] *= 2.0


def build_tiny_llava(folder: str | Path, seed: int = 0) -> Path:
    """Save a random LLaVA (tiny SigLIP vision tower + tiny Qwen2) and its `LlavaProcessor` with a chat template.

    A 32x32 image is 16 `<image>` tokens; greedy replies are printable text, some of which end early (see
    `_readable_head`). `AutoModelForImageTextToText` and `AutoProcessor` load the folder
    offline; deterministic in `seed`, and the global torch RNG is left untouched.

    Example:
        >>> path = build_tiny_llava(tmp_path / "llava")  # doctest: +SKIP
        >>> TransformersBackend(path, max_new_tokens=8)  # doctest: +SKIP
    """
    from transformers import (
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        SiglipImageProcessor,
        SiglipVisionConfig,
    )

    folder = Path(folder)
    tokenizer = build_tokenizer(300)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=_tiny_qwen2_config(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    _readable_head(model.lm_head, tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)  # safetensors
    LlavaProcessor(
        image_processor=SiglipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="full",
        image_token="<image>",
        num_additional_image_tokens=0,
        chat_template=CHAT_TEMPLATE,
    ).save_pretrained(folder)
    return folder


def build_tiny_chat_lm(folder: str | Path, seed: int = 0) -> Path:
    """Save a random text-only chat LLM (a tiny `Qwen2ForCausalLM`) and its tokenizer with a chat template.

    No image processor: `AutoModelForCausalLM` and `AutoTokenizer` load the folder offline; deterministic in `seed`,
    and the global torch RNG is left untouched.

    Example:
        >>> path = build_tiny_chat_lm(tmp_path / "lm")  # doctest: +SKIP
        >>> TransformersBackend(path, max_new_tokens=8)  # a text-only judge  # doctest: +SKIP
    """
    from transformers import Qwen2ForCausalLM

    folder = Path(folder)
    tokenizer = build_tokenizer(300)
    tokenizer.chat_template = CHAT_TEMPLATE
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(_tiny_qwen2_config(tokenizer))
    _readable_head(model.lm_head, tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _qwen2_style_tokenizer() -> Any:
    """`build_tokenizer`'s BPE as a `Qwen2Tokenizer` (Qwen's pre-tokenizer), plus Qwen's "\\n\\n" merge; EOS "</s>"."""
    from transformers import Qwen2Tokenizer

    state = json.loads(build_tokenizer(512).backend_tokenizer.to_str())
    vocab, merges = dict(state["model"]["vocab"]), [tuple(m) for m in state["model"]["merges"]]
    vocab["ĊĊ"], merges = len(vocab), [*merges, ("Ċ", "Ċ")]  # "\n\n" is one token in Qwen2's vocabulary too
    return Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="</s>", pad_token="<pad>")


def build_tiny_aitqe(folder: str | Path, seed: int = 0) -> Path:
    """Save a random AITQE checkpoint in the official `HymanH/AITQE` layout; loads offline with `load_aitqe`.

    `config.json` (`model_type="mm"`, the fields `modeling_mm.py` / `data_processor.py` read), two safetensors shards
    with the official key names plus `model.safetensors.index.json`, `generation_config.json`, a `Qwen2Tokenizer`,
    and the SigLIP configs (`config.json`, `preprocessor_config.json`; no weights, as on the Hub) in the folder
    `vision_model_name_or_path` names, `siglip-so400m-patch14-384/`. Qwen2: hidden 32, 1 layer; SigLIP: hidden 32,
    2 layers (hidden_states[-2] is a real layer), 28 px in 4 px patches = 49 image tokens. `language_model_name_or_path`
    stays `"Qwen/Qwen2-7B"`: the loader never reads it. Deterministic in `seed`; the global torch RNG is untouched.

    Example:
        >>> path = build_tiny_aitqe(tmp_path / "aitqe")  # doctest: +SKIP
        >>> load_aitqe(path, device="cpu").evaluate([image], ["a cat"], output_all=True)  # doctest: +SKIP
    """
    from safetensors.torch import save_file
    from transformers import GenerationConfig, SiglipConfig

    from mmsieve.models.aitqe import AITQEConfig, AITQEModel

    folder = Path(folder)
    tokenizer = _qwen2_style_tokenizer()
    vision_dir = folder / "siglip-so400m-patch14-384"
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    siglip = SiglipConfig(
        vision_config={**vision, "image_size": 28, "patch_size": 4},
        text_config={"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": 1,
                     "eos_token_id": 2, "pad_token_id": 0},
    )  # fmt: skip
    siglip.save_pretrained(vision_dir)
    _write_preprocessor_config(vision_dir, 28)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    raw: dict[str, Any] = {
        "architectures": ["MMForCausalLM"],
        "model_type": "mm",
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 1024,
        "initializer_range": 0.2,  # sharper random logits: fewer greedy near-ties
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "use_sliding_window": False,
        "sliding_window": 1024,
        "max_window_layers": 1,
        "tie_word_embeddings": False,
        "bos_token_id": None,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "eos_token_index": eos,
        "pad_token_index": pad,
        "image_token_index": len(tokenizer) + 1,
        "IGNORE_INDEX": -100,
        "language_model_name_or_path": "Qwen/Qwen2-7B",
        "vision_model_name_or_path": vision_dir.name,
        "mm_projector_type": "mlp",
        "image_aspect_ratio": "square",
        "visual_hidden_dim": 32,
        "pesudo_img_size": 28,
        "pesudo_patch_size": 4,
        "image_tile_tokens": 49,
        "pooling_kernel": 1,
        "torch_dtype": "float32",
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AITQEModel(AITQEConfig.from_dict(raw), siglip.vision_config)
        with torch.no_grad():
            model.image_newline.normal_(0.0, 32**-0.5)
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    shards = {
        "model-00001-of-00002.safetensors": {k: v for k, v in state.items() if k.startswith("model.")},
        "model-00002-of-00002.safetensors": {k: v for k, v in state.items() if not k.startswith("model.")},
    }
    weight_map = {}
    for name, tensors in shards.items():
        save_file(tensors, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
    total = sum(v.numel() * v.element_size() for v in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    (folder / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    GenerationConfig(bos_token_id=None, eos_token_id=eos, pad_token_id=pad).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
