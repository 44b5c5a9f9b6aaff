"""AITQE: official checkpoint layout, prompt layout, vision features, batched greedy generation, stop strings, errors."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mmsieve.generation import AITQEBackend, ChatRequest
from mmsieve.images import decode_image
from mmsieve.models.aitqe import (
    IMAGE_SLOT,
    STOP_STRING,
    AITQEConfig,
    _FinishTracker,
    evaluation_prompt,
    load_aitqe,
    postprocess_output,
)
from mmsieve.models.tiny import build_tiny_aitqe


TILE = 49  # image tokens of the tiny checkpoint: 28 px / 4 px patches = 7 x 7
OFFICIAL_KEYS = [  # modeling_mm.py: MMForCausalLM.{model: Qwen2ForCausalLM, vision_model: SiglipVisionModel, ...}
    r"model\.model\.embed_tokens\.weight",
    r"model\.model\.layers\.\d+\.(self_attn\.[qkv]_proj\.(weight|bias)|self_attn\.o_proj\.weight)",
    r"model\.model\.layers\.\d+\.(mlp\.(gate|up|down)_proj|input_layernorm|post_attention_layernorm)\.weight",
    r"model\.model\.norm\.weight",
    r"model\.lm_head\.weight",
    r"vision_model\.vision_model\.embeddings\.(patch_embedding\.(weight|bias)|position_embedding\.weight)",
    r"vision_model\.vision_model\.encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|layer_norm[12]|mlp\.fc[12])\.(weight|bias)",
    r"vision_model\.vision_model\.post_layernorm\.(weight|bias)",
    r"vision_model\.vision_model\.head\.(probe|attention\.in_proj_(weight|bias)|attention\.out_proj\.(weight|bias))",
    r"vision_model\.vision_model\.head\.(layernorm|mlp\.fc[12])\.(weight|bias)",
    r"mm_projector\.0\.(weight|bias)",
    r"mm_projector\.2\.weight",
    r"image_newline",
]
CAPTIONS = [
    "a cat",
    "a cup of coffee on a wooden table next to a laptop",
    "IMG_2041.JPG",
    "The museum opened in 1902. Its collection includes paintings, coins and old maps, and a rocket.",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_aitqe(tmp_path_factory.mktemp("aitqe") / "AITQE", seed=0)


@pytest.fixture(scope="module")
def model(tiny: Path):
    return load_aitqe(tiny, device="cpu")


def _keys(folder: Path) -> set[str]:
    keys: set[str] = set()
    for shard in folder.glob("model*.safetensors"):
        with safe_open(str(shard), "pt") as handle:
            keys |= set(handle.keys())
    return keys


def _png(jpeg: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).save(buffer, "PNG")
    return buffer.getvalue()


def _requests(photos: dict[str, bytes], **options) -> list[ChatRequest]:
    names = ["chelsea", "coffee", "camera", "rocket"]
    images = [photos[names[0]], _png(photos[names[1]]), photos[names[2]], _png(photos[names[3]])]
    return [
        ChatRequest(f"r{i}", "ignored system prompt", evaluation_prompt(caption), [image], **options)
        for i, (caption, image) in enumerate(zip(CAPTIONS, images, strict=True))
    ]


def _first_cut(tokenizer, ids: list[int], stop: str) -> int | None:
    """The shortest prefix whose text holds `stop` (where a stop-string criterion ends the row), else None."""
    return next((k for k in range(1, len(ids) + 1) if stop in tokenizer.decode(ids[:k])), None)


# ---------------------------------------------------------------------------------------------------- checkpoint
def test_checkpoint_has_exactly_the_official_keys(tiny: Path, model) -> None:
    keys = _keys(tiny)
    assert keys == set(model.state_dict())
    assert all(any(re.fullmatch(p, key) for p in OFFICIAL_KEYS) for key in keys), sorted(keys)
    assert all(any(re.fullmatch(p, key) for key in keys) for p in OFFICIAL_KEYS)
    assert "mm_projector.2.bias" not in keys  # the second projector layer has no bias
    index = json.loads((tiny / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == keys
    config = json.loads((tiny / "config.json").read_text())
    assert config["model_type"] == "mm" and config["architectures"] == ["MMForCausalLM"]
    assert type(model.tokenizer).__name__ == "Qwen2Tokenizer" and model.tokenizer.padding_side == "left"
    assert type(model.image_processor).__name__.startswith("SiglipImageProcessor")
    for name, tensor in load_file(str(tiny / "model-00002-of-00002.safetensors")).items():
        assert torch.equal(model.state_dict()[name], tensor)


def _rewrite(folder: Path, drop: str | None = None, add: str | None = None) -> None:
    shard = folder / "model-00002-of-00002.safetensors"
    tensors = load_file(str(shard))
    if drop:
        del tensors[drop]
    if add:
        tensors[add] = torch.zeros(32)
    save_file(tensors, str(shard))


def test_missing_unexpected_or_pickled_weights_fail_clearly(tiny: Path, tmp_path: Path) -> None:
    missing = shutil.copytree(tiny, tmp_path / "missing")
    _rewrite(missing, drop="mm_projector.2.weight")
    with pytest.raises(ValueError, match=r"1 missing keys \['mm_projector\.2\.weight'\]"):
        load_aitqe(missing, device="cpu")
    extra = shutil.copytree(tiny, tmp_path / "extra")
    _rewrite(extra, add="mm_projector.2.bias")
    with pytest.raises(ValueError, match=r"1 unexpected keys \['mm_projector\.2\.bias'\]"):
        load_aitqe(extra, device="cpu")
    pickled = shutil.copytree(tiny, tmp_path / "pickled")
    for shard in pickled.glob("*.safetensors"):
        shard.rename(shard.with_suffix(".bin"))
    with pytest.raises(ValueError, match="never unpickles"):
        load_aitqe(pickled, device="cpu")
    other = shutil.copytree(tiny, tmp_path / "other")
    (other / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(ValueError, match="not an AITQE checkpoint"):
        load_aitqe(other, device="cpu")


def test_config_reads_fields_like_mmconfig() -> None:
    config = AITQEConfig.from_dict({"hidden_size": 64, "visual_hidden_dim": 32, "pesudo_img_size": 384})
    llm = config.language_config()
    assert (llm.hidden_size, llm.vocab_size, llm.rms_norm_eps, llm.eos_token_id) == (64, 32000, 1e-5, 2)
    assert not hasattr(llm, "pesudo_img_size") and not hasattr(llm, "visual_hidden_dim")
    with pytest.raises(ValueError, match="image_pattern"):
        AITQEConfig.from_dict({"image_pattern": "no image here"})
    with pytest.raises(ValueError, match="mlp"):
        AITQEConfig.from_dict({"mm_projector_type": "aapool_mlp"})


# -------------------------------------------------------------------------------------------------------- inputs
def test_prompt_layout_matches_the_data_processor(model) -> None:
    tok, prompt = model.tokenizer, evaluation_prompt("a cat on a sofa")
    ids = model.prompt_ids(prompt)
    # <img_start>{json}<img_end> -> slots; the forced "\n" after <img_end> and "\n{question}" are tokenized apart
    assert ids == [IMAGE_SLOT] * TILE + tok("\n").input_ids + tok("\n" + prompt).input_ids
    newline = tok.convert_tokens_to_ids("Ċ")
    assert ids[TILE - 1 : TILE + 3] == [IMAGE_SLOT, newline, newline, tok.convert_tokens_to_ids("E")]
    assert tok("\n\n").input_ids == [tok.convert_tokens_to_ids("ĊĊ")]  # so the two newlines are not merged
    assert tok.decode(ids[TILE:]) == "\n\n" + prompt and not set(ids) & set(tok.all_special_ids)
    patterned = copy.copy(model)  # a config.image_pattern with text around the image and an index
    patterned.config, patterned._prefix = dataclasses.replace(model.config, image_pattern="Picture {}: <image>"), None
    expected = tok("Picture 0: ").input_ids + [IMAGE_SLOT] * TILE + tok("\n").input_ids + tok("\n" + prompt).input_ids
    assert patterned.prompt_ids(prompt) == expected


def test_pixels_are_siglip_preprocessed(model, photos: dict[str, bytes]) -> None:
    image = decode_image(photos["chelsea"]).image
    pixels = model.pixel_values([image])
    resized = torch.tensor(list(image.resize((28, 28), Image.Resampling.BICUBIC).getdata()), dtype=torch.float32)
    expected = (resized / 255 - 0.5) / 0.5
    assert pixels.shape == (1, 3, 28, 28)
    assert torch.allclose(pixels[0].permute(1, 2, 0).reshape(-1, 3), expected, atol=1e-5)


def test_penultimate_features_fill_the_image_slots(model, photos: dict[str, bytes]) -> None:
    pixels = model.pixel_values([decode_image(photos[n]).image for n in ("chelsea", "coins")])
    features = model.encode_images(pixels)
    with torch.inference_mode():
        hidden = model.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states
        assert len(hidden) == 3 and torch.allclose(features, model.mm_projector(hidden[-2]))
        assert not torch.allclose(features, model.mm_projector(hidden[-1]))
    short, long = (model.prompt_ids(evaluation_prompt(c)) for c in ("a cat", CAPTIONS[3]))
    embeds, mask = model.embed([short, long], features)
    pad = len(long) - len(short)
    assert mask[0].tolist() == [0] * pad + [1] * len(short) and mask[1].tolist() == [1] * len(long)
    table = model.model.get_input_embeddings().weight
    assert torch.equal(embeds[0, pad : pad + TILE], features[0]) and torch.equal(embeds[1, :TILE], features[1])
    assert torch.equal(embeds[0, pad + TILE :], table[short[TILE:]])
    assert torch.equal(embeds[1, TILE:], table[long[TILE:]])


# ---------------------------------------------------------------------------------------------------- generation
def _naive_greedy(model, ids: list[int], pixels: torch.Tensor, steps: int) -> list[int]:
    """The original's single-sample path, without cache or padding: full forward each step, argmax."""
    embeds, _ = model.embed([ids], model.encode_images(pixels))
    out: list[int] = []
    with torch.inference_mode():
        for _ in range(steps):
            token = int(model.model(inputs_embeds=embeds).logits[0, -1].argmax())
            out.append(token)
            if token == model.generation_config.eos_token_id:
                break
            embeds = torch.cat([embeds, model.model.get_input_embeddings()(torch.tensor([[token]]))], dim=1)
    return out


def test_generation_matches_a_naive_greedy_loop(model, photos: dict[str, bytes]) -> None:
    ids = [model.prompt_ids(evaluation_prompt(c)) for c in CAPTIONS[:2]]
    pixels = model.pixel_values([decode_image(photos[n]).image for n in ("chelsea", "coffee")])
    batched = model.generate(ids, pixels, max_new_tokens=12, stop_strings=())
    for row in range(2):
        assert batched[row].ids == _naive_greedy(model, ids[row], pixels[row : row + 1], 12)


def test_left_padded_scores_equal_unpadded_scores(model, photos: dict[str, bytes]) -> None:
    ids = [model.prompt_ids(evaluation_prompt(c)) for c in CAPTIONS]
    pixels = model.pixel_values([decode_image(photos[n]).image for n in ("chelsea", "coffee", "camera", "rocket")])
    features = model.encode_images(pixels)
    options = {"max_new_tokens": 6, "do_sample": False, "output_scores": True, "return_dict_in_generate": True}
    options["pad_token_id"] = model.tokenizer.pad_token_id

    def scores(embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # [steps, B, vocab]
        with torch.inference_mode():
            return torch.stack(model.model.generate(inputs_embeds=embeds, attention_mask=mask, **options).scores)

    embeds, mask = model.embed(ids, features)
    batched, ignored_padding = scores(embeds, mask), scores(embeds, torch.ones_like(mask))
    for row in range(4):
        single = scores(*model.embed([ids[row]], features[row : row + 1]))[:, 0]
        assert torch.allclose(batched[:, row], single, atol=1e-4)
        if row != 3:  # the longest row has no padding; the others would differ if padding were attended
            assert (ignored_padding[:, row] - single).abs().max() > 1e-2


def test_batched_generation_equals_one_at_a_time(tiny: Path, photos: dict[str, bytes]) -> None:
    for output_all in (True, False):
        requests = _requests(photos, max_tokens=16)
        options = {"device": "cpu", "max_new_tokens": 384, "output_all": output_all}
        batched = {
            r.key: (text, error) for r, text, error in AITQEBackend(tiny, batch_size=4, **options).generate(requests)
        }
        single = {
            r.key: (text, error) for r, text, error in AITQEBackend(tiny, batch_size=1, **options).generate(requests)
        }
        assert batched == single and len(batched) == 4
        assert all(text and error is None for text, error in batched.values())
        assert all(text.endswith("}") for text, _ in batched.values()) or output_all
        assert len({text for text, _ in batched.values()}) == 4  # the image and caption do reach the model


def test_stop_string_postprocessing_is_inference_py() -> None:
    # `outputs[:-1] + "}"` on the stripped reply, whatever its last character is
    assert postprocess_output('{"Recaption": "A cat.", "Overall Score": "2<Overall>') == (
        '{"Recaption": "A cat.", "Overall Score": "2<Overall}'
    )
    assert postprocess_output(' {"Overall Score": "2<Overall>"\n') == '{"Overall Score": "2<Overall>}'  # overhang
    assert postprocess_output('{"Overall Score": "4"}') == '{"Overall Score": "4"}'  # ended at EOS
    assert postprocess_output("") == "}"
    assert postprocess_output('  {"Overall Score": "2<Overall>", "x": 1} ', output_all=True) == (
        '{"Overall Score": "2<Overall>", "x": 1}'
    )


def test_stop_string_ends_a_row_at_the_token_that_completes_it(model) -> None:
    from transformers import StopStringCriteria

    tok = model.tokenizer
    ids = tok('{"Recaption": "a cat", "Overall Score": "2<Overall>", "Overall Explanation": "vague"}').input_ids
    tracker = _FinishTracker({tok.eos_token_id}, StopStringCriteria(tok, [STOP_STRING]), batch=1)
    stopped = [k for k in range(1, len(ids) + 1) if tracker(torch.tensor([ids[:k]]))[0]]
    assert stopped[0] == _first_cut(tok, ids, STOP_STRING) == tracker.lengths[0]
    assert tok.decode(ids[: stopped[0]]).endswith(STOP_STRING) or STOP_STRING in tok.decode(ids[: stopped[0]])


def test_a_stop_string_cuts_only_its_own_row(model, photos: dict[str, bytes]) -> None:
    tok = model.tokenizer
    ids = [model.prompt_ids(evaluation_prompt(c)) for c in CAPTIONS[:3]]
    pixels = model.pixel_values([decode_image(photos[n]).image for n in ("chelsea", "coffee", "camera")])
    full = model.generate(ids, pixels, max_new_tokens=24, stop_strings=())
    texts = [tok.decode([t]) for t in full[0].ids]
    stop = next(t.strip() for t in texts[3:] if t.strip().isascii() and t.strip().isalpha() and len(t.strip()) > 2)
    cut = model.generate(ids, pixels, max_new_tokens=24, stop_strings=(stop,))
    for whole, part in zip(full, cut, strict=True):
        end = _first_cut(tok, whole.ids, stop)
        assert part.ids == (whole.ids[:end] if end else whole.ids)
        assert part.finished == bool(end)
    assert cut[0].finished and len(cut[0].ids) < len(full[0].ids)


# -------------------------------------------------------------------------------------------------------- errors
def test_bad_rows_get_error_replies(tiny: Path, photos: dict[str, bytes], broken: dict) -> None:
    good = _requests(photos, max_tokens=4)[1]  # a PNG
    bad = [
        ChatRequest("none", "", evaluation_prompt("a cat"), []),
        ChatRequest("two", "", evaluation_prompt("a cat"), [photos["chelsea"], photos["coins"]]),
        ChatRequest("random", "", evaluation_prompt("a cat"), [broken["random_bytes"]]),
        ChatRequest("empty", "", evaluation_prompt("a cat"), [broken["zero_bytes"]]),
    ]
    backend = AITQEBackend(tiny, device="cpu", batch_size=2)
    replies = {r.key: (text, error) for r, text, error in backend.generate([*bad, good])}
    assert set(replies) == {"none", "two", "random", "empty", "r1"}
    assert replies["none"] == (None, "AITQE takes exactly one image per request, got 0")
    assert replies["two"] == (None, "AITQE takes exactly one image per request, got 2")
    assert replies["random"][0] is None and replies["random"][1].startswith("image_")
    assert replies["empty"][0] is None and replies["empty"][1].startswith("image_")
    assert replies["r1"][0] and replies["r1"][1] is None


def test_must_finish_truncation_is_an_error(tiny: Path, photos: dict[str, bytes]) -> None:
    backend = AITQEBackend(tiny, device="cpu", output_all=True)
    strict, loose = _requests(photos, max_tokens=3, must_finish=True)[0], _requests(photos, max_tokens=3)[0]
    loose.key = "loose"
    replies = {r.key: (text, error) for r, text, error in backend.generate([strict, loose])}
    assert replies["r0"] == (None, "truncated at 3 tokens")
    assert replies["loose"][0] and replies["loose"][1] is None


def test_backend_is_lazy_and_named(tiny: Path) -> None:
    backend = AITQEBackend(tiny, device="cpu")
    assert backend.name == f"aitqe:{tiny}" and backend._model is None
    assert list(backend.generate([])) == [] and backend._model is not None


def test_rewrite_cli_runs_the_aitqe_checkpoint(
    tiny: Path, photos: dict[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mmsieve rewrite --aitqe` end to end on real JPEGs: every row is sent to the checkpoint (no threshold: the
    model decides), and every row leaves with an AITQE outcome (random weights: what it says is not checked)."""
    import datasets

    from mmsieve.cli import main

    names = sorted(photos)[:3]
    rows = {"image": [{"bytes": photos[n], "path": f"{n}.jpg"} for n in names], "caption": [f"a {n}" for n in names]}
    ds = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image(decode=False))
    ds.to_parquet(str(tmp_path / "in" / "data.parquet"))
    args = ["rewrite", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--aitqe", "--model", str(tiny)]
    assert main(args) == 0
    out = datasets.load_dataset("parquet", data_dir=str(tmp_path / "out" / "kept"), split="train")
    assert len(out) == 3 and set(out.column_names) >= {"aitqe_score", "original_text", "rewrite_reason"}
    for row in out:
        assert row["rewrite_reason"] and row["rewrite_model"] in (None, f"aitqe:{tiny}")
        assert row["rewritten"] == (row["original_text"] is not None)
        if not row["rewritten"]:  # a random model rarely writes a readable dict: the reason says what happened
            assert row["caption"].startswith("a ")
            assert row["rewrite_reason"].startswith(("unreadable AITQE output", "AITQE kept", "generation failed"))
    args[4] = str(tmp_path / "out2")  # a fresh folder: the refusal below is about --endpoint
    assert main([*args, "--endpoint", "http://127.0.0.1:9"]) == 2  # AITQE runs in process only
    assert "drop --endpoint" in capsys.readouterr().err
