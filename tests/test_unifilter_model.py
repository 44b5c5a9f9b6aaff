"""UniFilter model layer: official checkpoint format, Auto registration, projector, readout, vision features, safety."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    Qwen2Config,
    Qwen2ForSequenceClassification,
    Qwen3Config,
    Qwen3ForSequenceClassification,
)

from mmsieve.models import (
    AvgPoolProjector,
    LlavaQwen3Classifier,
    LlavaQwenClassifier,
    LlavaQwenConfig,
    UniFilterModel,
    pick_attn_implementation,
    pick_device,
    pick_dtype,
)
from mmsieve.models.tiny import build_tiny_siglip_tower, build_tiny_unifilter, build_tokenizer


PROJECTOR_KEYS = {f"model.mm_projector.mlp_projector.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("unifilter")
    return {llm: build_tiny_unifilter(root / llm, llm=llm) for llm in ("qwen2", "qwen3")}


def _pixels(n: int, size: int = 54, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _sequence(model: UniFilterModel, image: torch.Tensor, text: str) -> torch.Tensor:
    """`[BOS, image tokens, "\\n" + text, EOS]` embeddings, the official caption layout."""
    ids = [model.bos_token_id, *model.tokenizer("\n" + text).input_ids, model.eos_token_id]
    embeds = model.embed_tokens(torch.tensor(ids))
    return torch.cat([embeds[:1], image, embeds[1:]])  # [L, H]


def _right_pad(model: UniFilterModel, sequences: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(s) for s in sequences)
    pad = model.embed_tokens(torch.tensor([model.pad_token_id]))
    embeds = torch.stack([torch.cat([s, pad.expand(length - len(s), -1)]) for s in sequences])
    mask = torch.tensor([[1] * len(s) + [0] * (length - len(s)) for s in sequences])
    return embeds, mask


def _logits(model: UniFilterModel, seed: int = 0) -> torch.Tensor:
    images = model.encode_images(_pixels(2, seed=seed))
    captions = ["a photo of a cat", "Click here to buy cheap watches!!!"]
    return model.classify(*_right_pad(model, [_sequence(model, img, c) for img, c in zip(images, captions)]))


@pytest.mark.parametrize("llm", ["qwen2", "qwen3"])
def test_save_reload_keeps_official_format_and_logits(tiny: dict[str, Path], tmp_path: Path, llm: str) -> None:
    model = UniFilterModel.from_pretrained(tiny[llm])
    expected = _logits(model)
    assert expected.shape == (2, 1) and expected.dtype == torch.float32
    saved = model.save_pretrained(tmp_path / "saved")

    config = json.loads((saved / "config.json").read_text())
    assert config["model_type"] == {"qwen2": "llava_qwen", "qwen3": "llava_qwen3"}[llm]
    assert config["architectures"] == [{"qwen2": "LlavaQwenClassifier", "qwen3": "LlavaQwen3Classifier"}[llm]]
    assert config["mm_vision_tower"] == str(tiny[llm] / "vision_tower")
    assert config["mm_projector_type"] == "aapool_mlp" and config["mm_num_image_tokens"] == 144
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"]  # for transformers 4.x readers
    assert not list(saved.glob("*.bin")) and (saved / "tokenizer_config.json").exists()

    with safe_open(saved / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    dims = {k: config[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers")}
    dims |= {k: config[k] for k in ("num_attention_heads", "num_key_value_heads")}
    if llm == "qwen2":
        plain = Qwen2ForSequenceClassification(Qwen2Config(**dims, num_labels=1))
    else:
        plain = Qwen3ForSequenceClassification(Qwen3Config(**dims, head_dim=config["head_dim"], num_labels=1))
    assert keys == set(plain.state_dict()) | PROJECTOR_KEYS
    assert {"model.embed_tokens.weight", "model.norm.weight", "score.weight"} <= keys
    assert not any("vision" in k for k in keys)

    assert torch.equal(_logits(UniFilterModel.from_pretrained(saved)), expected)
    auto = AutoModelForSequenceClassification.from_pretrained(saved)
    assert type(auto) is {"qwen2": LlavaQwenClassifier, "qwen3": LlavaQwen3Classifier}[llm]
    assert type(AutoConfig.from_pretrained(saved)) is type(model.config)
    model.classifier = auto.eval()
    assert torch.equal(_logits(model), expected)


def test_registration_is_idempotent_in_a_fresh_process(tiny: dict[str, Path]) -> None:
    code = (
        "import mmsieve.models, mmsieve.models.unifilter as u\n"
        "u.register_auto_classes(); u.register_auto_classes()\n"
        "from transformers import AutoModelForSequenceClassification as A\n"
        f"print(type(A.from_pretrained({str(tiny['qwen3'])!r})).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "LlavaQwen3Classifier"


def test_projector_is_adaptive_pooling_27_to_12_with_overlapping_windows() -> None:
    projector = AvgPoolProjector(vision_hidden=2, hidden=4, num_tokens=144)
    features = torch.arange(2 * 729 * 2, dtype=torch.float32).reshape(2, 729, 2) ** 1.5  # [N, 27*27, Dv]
    grid = features.reshape(2, 27, 27, 2)  # row-major patches, as rearrange "b (h w) d -> b h w d"
    windows = [(i * 27 // 12, -(-(i + 1) * 27 // 12)) for i in range(12)]  # floor start, ceil end
    assert windows[:2] == [(0, 3), (2, 5)]  # size-3 windows that overlap: not AvgPool2d(2)
    manual = torch.stack(
        [grid[:, r0:r1, c0:c1].mean(dim=(1, 2)) for r0, r1 in windows for c0, c1 in windows], dim=1
    )  # [N, 144, Dv]
    assert torch.allclose(projector(features), projector.mlp_projector(manual), atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="square"):
        projector(features[:, :700])


def test_readout_at_last_attended_position_ignores_right_padding(tiny: dict[str, Path]) -> None:
    model = UniFilterModel.from_pretrained(tiny["qwen2"])
    images = model.encode_images(_pixels(3, seed=1))
    texts = ["a cup of coffee", "two children playing football in a park on a sunny day", "naïve café 🙂"]
    sequences = [_sequence(model, img, t) for img, t in zip(images, texts)]
    assert len({len(s) for s in sequences}) == 3
    batched = model.classify(*_right_pad(model, sequences))
    alone = torch.cat([model.classify(s[None], torch.ones(1, len(s), dtype=torch.long)) for s in sequences])
    assert (batched - alone).abs().max() <= 1e-5
    assert batched.std() > 0


def test_encode_images_uses_selected_layer_before_post_layernorm(tiny: dict[str, Path]) -> None:
    model = UniFilterModel.from_pretrained(tiny["qwen2"])
    pixels = _pixels(2, seed=2)
    out = model.vision_tower(pixel_values=pixels, output_hidden_states=True)
    assert out.hidden_states[-1].shape == (2, 729, 32)
    encoded = model.encode_images(pixels)
    assert encoded.shape == (2, 144, model.hidden_size)
    assert torch.allclose(encoded, model.classifier.project_image_features(out.hidden_states[-1]), atol=1e-6)
    assert not torch.allclose(encoded, model.classifier.project_image_features(out.last_hidden_state), atol=1e-3)
    model.config.mm_vision_select_layer = -2
    expected = model.classifier.project_image_features(out.hidden_states[-2])
    assert torch.allclose(model.encode_images(pixels), expected, atol=1e-6)


def test_vision_tower_override(tiny: dict[str, Path], tmp_path: Path) -> None:
    copy = shutil.copytree(tiny["qwen2"] / "vision_tower", tmp_path / "elsewhere")
    reference = UniFilterModel.from_pretrained(tiny["qwen2"])
    model = UniFilterModel.from_pretrained(tiny["qwen2"], vision_tower=copy)
    assert model.config.mm_vision_tower == str(copy)
    assert (model.image_size, model.image_mean, model.image_std) == (54, (0.5,) * 3, (0.5,) * 3)
    assert torch.equal(model.encode_images(_pixels(1)), reference.encode_images(_pixels(1)))

    dual = build_tiny_siglip_tower(tmp_path / "dual", dual=True)  # image+text SigLIP, as Google publishes
    assert UniFilterModel.from_pretrained(tiny["qwen2"], vision_tower=dual).encode_images(_pixels(1)).shape[1] == 144
    wrong = build_tiny_siglip_tower(tmp_path / "wide", hidden=48)
    with pytest.raises(ValueError, match="mm_hidden_size=32"):
        UniFilterModel.from_pretrained(tiny["qwen2"], vision_tower=wrong)


def _copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("vision_tower"))
    return dst


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps({k: v for k, v in data.items() if v != "<delete>"}))


def test_unsupported_checkpoints_fail_clearly(tiny: dict[str, Path], tmp_path: Path) -> None:
    for name, model_type in (("plain", "qwen2"), ("untyped", "<delete>")):
        ckpt = _copy_checkpoint(tiny["qwen2"], tmp_path / name)
        _edit_json(ckpt / "config.json", model_type=model_type)
        with pytest.raises(ValueError, match="not a UniFilter checkpoint"):
            UniFilterModel.from_pretrained(ckpt)
    ckpt = _copy_checkpoint(tiny["qwen2"], tmp_path / "no-tower")
    _edit_json(ckpt / "config.json", mm_vision_tower=None)
    with pytest.raises(ValueError, match="pass vision_tower="):
        UniFilterModel.from_pretrained(ckpt)


class _Bomb:
    def __reduce__(self) -> tuple:
        return (Path.touch, (Path(__file__).parent / "UNPICKLED",))


def test_pickle_only_checkpoint_is_refused_not_unpickled(tiny: dict[str, Path], tmp_path: Path) -> None:
    ckpt = _copy_checkpoint(tiny["qwen2"], tmp_path / "pickled")
    (ckpt / "model.safetensors").unlink()
    (ckpt / "pytorch_model.bin").write_bytes(pickle.dumps(_Bomb()))
    with pytest.raises(ValueError, match=r"only pickled weights \(pytorch_model.bin\).*safetensors only"):
        UniFilterModel.from_pretrained(ckpt)
    assert not (Path(__file__).parent / "UNPICKLED").exists()


def test_special_tokens_come_from_the_checkpoint(tiny: dict[str, Path], tmp_path: Path) -> None:
    model = UniFilterModel.from_pretrained(tiny["qwen2"])
    tokens = model.tokenizer.convert_ids_to_tokens([model.bos_token_id, model.eos_token_id, model.pad_token_id])
    assert tokens == ["<s>", "</s>", "<pad>"] and model.tokenizer.padding_side == "right"
    assert model.tokenizer("a cat").input_ids[0] != model.bos_token_id  # like Qwen: no automatic BOS

    ckpt = _copy_checkpoint(tiny["qwen2"], tmp_path / "no-bos")
    _edit_json(ckpt / "tokenizer_config.json", bos_token="<delete>", extra_special_tokens=[])
    assert UniFilterModel.from_pretrained(ckpt, vision_tower=model.config.mm_vision_tower).bos_token_id == 512
    _edit_json(ckpt / "config.json", bos_token_id=None, pad_token_id=None)
    fallback = UniFilterModel.from_pretrained(ckpt, vision_tower=model.config.mm_vision_tower)
    assert fallback.bos_token_id is None and fallback.pad_token_id == model.tokenizer.pad_token_id


def test_bundle_attributes(tiny: dict[str, Path]) -> None:
    model = UniFilterModel.from_pretrained(tiny["qwen3"], device="cpu", dtype=torch.float32)
    assert (model.num_image_tokens, model.num_labels, model.hidden_size, model.max_length) == (144, 1, 64, 1024)
    assert model.device == torch.device("cpu") and model.dtype == torch.float32
    assert not any(p.requires_grad for p in model.vision_tower.parameters())
    assert not model.vision_tower.training and not model.classifier.training


def test_losses_mse_for_one_label_cross_entropy_for_four() -> None:
    dims = {
        "vocab_size": 64,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
    }
    dims |= {"num_key_value_heads": 2}
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    regressor = LlavaQwenClassifier(LlavaQwenConfig(**dims, mm_hidden_size=8, pad_token_id=0))
    out = regressor(input_ids=ids, attention_mask=mask, labels=torch.tensor([3, 0]))
    assert out.logits.shape == (2, 1)
    assert torch.allclose(out.loss, ((out.logits[:, 0] - torch.tensor([3.0, 0.0])) ** 2).mean())
    classifier = LlavaQwenClassifier(LlavaQwenConfig(**dims, mm_hidden_size=8, pad_token_id=0, num_labels=4))
    out = classifier(input_ids=ids, attention_mask=mask, labels=torch.tensor([3, 1]))
    assert out.logits.shape == (2, 4)
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.logits, torch.tensor([3, 1])))


def test_tiny_builder_is_deterministic_and_tokenizer_is_byte_level(tmp_path: Path) -> None:
    def weights(seed: int, name: str) -> bytes:
        return (build_tiny_unifilter(tmp_path / name, seed=seed) / "model.safetensors").read_bytes()

    before = torch.random.get_rng_state()
    assert weights(0, "a") == weights(0, "b") != weights(1, "c")
    assert torch.equal(torch.random.get_rng_state(), before)
    tokenizer = build_tokenizer()
    text = "Ünïcödé ✓ 東京 🙂 <image>"
    assert tokenizer.decode(tokenizer(text).input_ids) == text


def test_device_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device(rank=3) == torch.device("cpu")
    assert pick_dtype("cpu") == torch.float32 and pick_attn_implementation("cpu") == "sdpa"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert pick_device() == torch.device("cuda", 1) and pick_device(rank=2) == torch.device("cuda", 0)
    assert pick_dtype("cuda:1") == torch.bfloat16
    assert pick_attn_implementation("cuda:0", torch.float32) == "sdpa"


def test_tower_weights_in_checkpoint_are_ignored_and_missing_weights_refused(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    model = UniFilterModel.from_pretrained(tiny["qwen2"])
    weights = load_file(tiny["qwen2"] / "model.safetensors")
    ckpt = _copy_checkpoint(tiny["qwen2"], tmp_path / "with-tower")
    tower_key = "model.vision_tower.vision_tower.vision_model.post_layernorm.weight"  # LLaVA-style full save
    save_file(weights | {tower_key: torch.ones(32)}, ckpt / "model.safetensors", metadata={"format": "pt"})
    tower = model.config.mm_vision_tower
    assert torch.equal(_logits(UniFilterModel.from_pretrained(ckpt, vision_tower=tower)), _logits(model))

    del weights["model.mm_projector.mlp_projector.2.weight"]
    save_file(weights, ckpt / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"lacks 1 classifier weights.*mlp_projector\.2\.weight"):
        UniFilterModel.from_pretrained(ckpt, vision_tower=tower)
