"""Image embedders for dedup: a tiny random SSCD (safetensors, TorchScript, URL), perceptual hashes on real photos,
CLIP / SigLIP image towers, specs and pickling."""

from __future__ import annotations

import functools
import io
import itertools
import pickle
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mmsieve.dedup.embedders import (
    ClipEmbedder,
    PerceptualHashEmbedder,
    SSCDEmbedder,
    parse_embedder,
)
from mmsieve.dedup.perceptual import dhash, hamming, hamming_to_cosine, hash_to_vector, phash
from mmsieve.images import DecodePool
from mmsieve.models.dual_encoder import DualEncoder
from mmsieve.models.sscd import IMAGENET_MEAN, IMAGENET_STD, SSCDConfig, SSCDModel, load_sscd
from mmsieve.models.tiny import build_tiny_sscd
from mmsieve.models.tiny_dual_encoder import build_tiny_clip, build_tiny_siglip, build_tiny_siglip2


PHOTOS = ("astronaut", "coffee", "chelsea")  # 512x512, 600x400, 451x300: three real photos of different shapes


def _encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Any:
    """Tiny models: one thread beats several contending for a busy 2-core machine (0.03 s vs 0.7 s a forward)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    import skimage.data

    return {name: Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in PHOTOS}


@pytest.fixture(scope="module")
def pngs(photos: dict[str, Image.Image]) -> dict[str, bytes]:
    """Lossless bytes: decoding them is exact, so the embedder and a hand-written pipeline see the same pixels."""
    return {name: _encode(image, "PNG", compress_level=1) for name, image in photos.items()}


@pytest.fixture(scope="module")
def tiny_sscd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sscd(tmp_path_factory.mktemp("sscd") / "tiny", torchscript=True)


@pytest.fixture(scope="module")
def tiny_dual(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dual")
    builders = {"clip": build_tiny_clip, "siglip": build_tiny_siglip, "siglip2": build_tiny_siglip2}
    return {family: build(root / family) for family, build in builders.items()}


def _pixels(n: int = 3, height: int = 64, width: int = 80) -> torch.Tensor:
    return torch.randn(n, 3, height, width, generator=torch.Generator().manual_seed(0))


def _unit_rows(vectors: np.ndarray) -> None:
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# --- the SSCD model -------------------------------------------------------------------------------------------------


def test_safetensors_and_torchscript_give_the_same_vectors(tiny_sscd: Path) -> None:
    scripted = load_sscd(tiny_sscd / "model.torchscript.pt", device="cpu")
    eager = load_sscd(tiny_sscd, device="cpu")
    converted = SSCDModel.from_torchscript(tiny_sscd / "model.torchscript.pt")
    assert isinstance(scripted, torch.jit.ScriptModule)  # the official format is run as is
    assert isinstance(eager, SSCDModel) and converted.config == eager.config
    with torch.inference_mode():
        a, b, c = scripted(_pixels()), eager(_pixels()), converted(_pixels())
    assert a.shape == (3, 32)
    torch.testing.assert_close(b, a)
    torch.testing.assert_close(c, a)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(3))


def test_save_load_round_trip_keeps_the_official_key_names(tiny_sscd: Path, tmp_path: Path) -> None:
    model = SSCDModel.from_pretrained(tiny_sscd)
    out = model.save_pretrained(tmp_path / "copy")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    again = SSCDModel.from_pretrained(out)
    assert again.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name
    keys = set(load_file(out / "model.safetensors"))
    # torchvision's resnet names under `backbone.`, fc = the 2048 -> 512 projection, GeM without parameters:
    # the layout of SSCD's `Model("TV_RESNET50", 512, 3.0)`.
    expected = {
        "backbone.conv1.weight",
        "backbone.bn1.running_var",
        "backbone.layer1.0.conv3.weight",
        "backbone.layer1.0.bn3.num_batches_tracked",
        "backbone.layer2.0.downsample.0.weight",
        "backbone.layer4.0.downsample.1.bias",
        "backbone.fc.weight",
        "backbone.fc.bias",
    }
    assert expected <= keys
    assert all(key.startswith("backbone.") for key in keys)


def test_full_size_config_is_torchvision_resnet50_plus_the_projection() -> None:
    model = SSCDModel(SSCDConfig())
    # torchvision resnet50: 25,557,032 parameters with its 1000-way fc (2,049,000) and 320 state entries.
    assert sum(p.numel() for p in model.parameters()) == 25_557_032 - 2_049_000 + 2048 * 512 + 512
    assert len(model.state_dict()) == 320


_TO_CLASSY = {
    "conv1": "convolutional_block.0",
    "bn1": "convolutional_block.1",
    "conv2": "convolutional_block.3",
    "bn2": "convolutional_block.4",
    "conv3": "convolutional_block.6",
    "bn3": "bn",
}


def _classy_name(name: str) -> str:
    """SSCD's Classy Vision key for a torchvision one (ClassyVision resnext.py: blocks wrapped in ClassyBlock)."""
    if match := re.match(r"backbone\.layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.\d)\.(\w+)$", name):
        stage, block, part, leaf = match.groups()
        return f"backbone.blocks.{int(stage) - 1}.{block}._module.{_TO_CLASSY.get(part, part)}.{leaf}"
    name = re.sub(r"^backbone\.conv1\.", "backbone.initial_block._module.0.", name)
    name = re.sub(r"^backbone\.bn1\.", "backbone.initial_block._module.1.", name)
    return re.sub(r"^backbone\.fc\.", "embeddings.1.", name)


def test_classy_vision_key_names_load_to_the_same_model(tiny_sscd: Path) -> None:
    model = SSCDModel.from_pretrained(tiny_sscd)
    classy = {_classy_name(name): tensor for name, tensor in model.state_dict().items()}
    assert "backbone.blocks.1.0._module.downsample.0.weight" in classy and "embeddings.1.weight" in classy
    loaded = SSCDModel.from_state_dict(classy)
    assert loaded.config == model.config
    with torch.inference_mode():
        torch.testing.assert_close(loaded(_pixels()), model(_pixels()))


def test_pickles_are_refused_with_a_clear_error(tiny_sscd: Path, tmp_path: Path) -> None:
    torch.save(SSCDModel.from_pretrained(tiny_sscd).state_dict(), tmp_path / "sscd_disc_mixup.classy.pt")
    with pytest.raises(ValueError, match="never unpickles"):
        load_sscd(tmp_path / "sscd_disc_mixup.classy.pt", device="cpu")
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_text("{}")
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"\x80\x04.")
    with pytest.raises(ValueError, match="safetensors"):
        load_sscd(tmp_path / "pickled", device="cpu")
    with pytest.raises(FileNotFoundError):
        load_sscd(tmp_path / "missing.torchscript.pt", device="cpu")


def test_build_is_deterministic_and_leaves_the_global_rng_alone(tmp_path: Path) -> None:
    before = torch.random.get_rng_state()
    a, b, c = (build_tiny_sscd(tmp_path / name, seed=seed) for name, seed in (("a", 1), ("b", 1), ("c", 2)))
    assert torch.equal(torch.random.get_rng_state(), before)
    weights = [(path / "model.safetensors").read_bytes() for path in (a, b, c)]
    assert weights[0] == weights[1] != weights[2]


def test_a_url_is_downloaded_once_into_the_cache(tiny_sscd: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("no_proxy", "*")  # urllib must never route loopback calls through a proxy
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("MMSIEVE_CACHE", str(tmp_path / "cache"))
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(tiny_sscd)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/model.torchscript.pt"
        first = load_sscd(url, device="cpu")
        cached = tmp_path / "cache" / "sscd" / "model.torchscript.pt"
        assert cached.read_bytes() == (tiny_sscd / "model.torchscript.pt").read_bytes()
        assert sorted(p.name for p in cached.parent.iterdir()) == ["model.torchscript.pt"]  # no partial file left
        vectors = parse_embedder(f"sscd:{url}", device="cpu").embed([Image.new("RGB", (40, 30), "red")])
    finally:
        server.shutdown()
        server.server_close()
    assert requests == ["/model.torchscript.pt"]  # the embedder's second load read the cache
    with torch.inference_mode():
        torch.testing.assert_close(first(_pixels()), load_sscd(tiny_sscd, device="cpu")(_pixels()))
    assert vectors.shape == (1, 32)


# --- SSCD embedder --------------------------------------------------------------------------------------------------


def test_sscd_embedder_applies_finevisions_preprocessing(tiny_sscd: Path, pngs: dict[str, bytes]) -> None:
    embedder = SSCDEmbedder(str(tiny_sscd), device="cpu")
    assert embedder.decode_options() == {"size": (320, 320), "resize": "exact", "resample": Image.Resampling.BILINEAR}
    vectors, reasons = embedder.embed_bytes(list(pngs.values()))
    assert reasons == [None] * 3 and vectors.shape == (3, 32) and embedder.dim == 32
    _unit_rows(vectors)
    # By hand, as FineVision's torchvision transforms: Resize([320, 320]) (bilinear), ToTensor, Normalize.
    model = load_sscd(tiny_sscd, device="cpu")
    for vector, data in zip(vectors, pngs.values()):
        image = Image.open(io.BytesIO(data)).convert("RGB").resize((320, 320), Image.Resampling.BILINEAR)
        pixels = (np.asarray(image, np.float32) / 255 - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
        with torch.inference_mode():
            expected = model(torch.from_numpy(pixels.transpose(2, 0, 1).copy())[None])[0].numpy()
        np.testing.assert_allclose(vector, expected, atol=1e-5)


def test_sscd288_keeps_the_aspect_ratio_and_batches_by_size(tiny_sscd: Path, photos: dict[str, Image.Image]) -> None:
    embedder = parse_embedder(f"sscd288:{tiny_sscd}", device="cpu", batch_size=2)
    assert embedder.decode_options() == {"size": 288, "resize": "shortest", "resample": Image.Resampling.BILINEAR}
    images = [
        photos["coffee"],
        photos["astronaut"],
        photos["chelsea"],
        photos["coffee"].transpose(Image.Transpose.TRANSPOSE),
        photos["coffee"],
    ]
    model, shapes = embedder._load(), []
    embedder._model = lambda pixels: shapes.append(tuple(pixels.shape)) or model(pixels)
    batched = embedder.embed(images)
    # 600x400 -> 432x288 (twice, one batch), 512x512 -> 288x288, 451x300 -> 433x288, 400x600 -> 288x432.
    assert sorted(shapes) == [(1, 3, 288, 288), (1, 3, 288, 433), (1, 3, 432, 288), (2, 3, 288, 432)]
    one_by_one = np.concatenate([embedder.embed([image]) for image in images])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    _unit_rows(batched)
    assert embedder.embed([]).shape == (0, 32)


@pytest.mark.parametrize("spec", ["sscd", "phash"])
def test_embed_bytes_reports_bad_images_and_embeds_the_rest(spec: str, tiny_sscd: Path, pngs) -> None:
    embedder = parse_embedder(f"sscd:{tiny_sscd}" if spec == "sscd" else spec, device="cpu")
    jpeg = _encode(Image.open(io.BytesIO(pngs["coffee"])), "JPEG", quality=90)
    datas = [pngs["astronaut"], jpeg[: len(jpeg) // 2], pngs["chelsea"], b"not an image", None]
    with DecodePool(2) as pool:
        vectors, reasons = embedder.embed_bytes(datas, pool)
        good, _ = embedder.embed_bytes([pngs["astronaut"], pngs["chelsea"]], pool)
    assert reasons == [None, "image_truncated", None, "image_unidentified", "image_missing"]
    assert vectors.shape == (2, embedder.dim)
    np.testing.assert_allclose(vectors, good, atol=1e-6)
    empty, none = embedder.embed_bytes([])
    assert empty.shape == (0, embedder.dim) and none == []


# --- perceptual hashes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hash_function", [phash, dhash])
def test_hashes_survive_reencoding_and_resizing_of_real_photos(hash_function, photos) -> None:
    originals = {}
    for name, image in photos.items():
        original = hash_function(image)
        recoded = hash_function(Image.open(io.BytesIO(_encode(image, "JPEG", quality=60))))
        halved = hash_function(image.resize((image.width // 2, image.height // 2), Image.Resampling.BILINEAR))
        assert hamming(original, recoded) <= 6 and hamming(original, halved) <= 6, name
        originals[name] = original
    for a, b in itertools.combinations(PHOTOS, 2):
        assert hamming(originals[a], originals[b]) > 16, (a, b)


@pytest.mark.parametrize("kind", ["phash", "dhash"])
def test_hash_embedder_scores_copies_above_and_other_photos_below(kind: str, photos, pngs) -> None:
    embedder = PerceptualHashEmbedder(kind)
    datas = []
    for name, image in photos.items():
        half = image.resize((image.width // 2, image.height // 2), Image.Resampling.BILINEAR)
        datas += [pngs[name], _encode(image, "JPEG", quality=60), _encode(half, "PNG")]
    vectors, _ = embedder.embed_bytes(datas)
    similarity = vectors @ vectors.T
    same = np.kron(np.eye(3, dtype=bool), np.ones((3, 3), dtype=bool))
    assert similarity[same].min() >= hamming_to_cosine(6)
    assert similarity[~same].max() < hamming_to_cosine(16)


def test_hash_vectors_reproduce_the_hamming_distance() -> None:
    rng = np.random.default_rng(0)
    hashes = [int(x) for x in rng.integers(0, 2**63, size=50, dtype=np.uint64)] + [0, 2**64 - 1, 2**63]
    vectors = np.stack([hash_to_vector(h) for h in hashes])
    _unit_rows(vectors)
    for i, j in itertools.combinations(range(len(hashes)), 2):
        assert float(vectors[i] @ vectors[j]) == hamming_to_cosine(hamming(hashes[i], hashes[j]))  # exact: +-1/64 sums
    assert float(hash_to_vector(0) @ hash_to_vector(2**64 - 1)) == -1.0
    assert hash_to_vector(2**63)[0] > 0 > hash_to_vector(2**63)[1]  # most significant bit first
    with pytest.raises(ValueError):
        hash_to_vector(2**64)


# --- CLIP / SigLIP --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["clip", "siglip", "siglip2"])
def test_clip_embedder_gives_the_dual_encoders_image_embeddings(family: str, tiny_dual, pngs) -> None:
    prefix = "clip" if family == "clip" else "siglip"
    embedder = parse_embedder(f"{prefix}:{tiny_dual[family]}", device="cpu")
    assert isinstance(embedder, ClipEmbedder) and embedder._model is None  # lazy
    datas = [*pngs.values(), b"not an image"]
    vectors, reasons = embedder.embed_bytes(datas)
    assert reasons == [None, None, None, "image_unidentified"]
    encoder = DualEncoder.from_pretrained(tiny_dual[family], device="cpu")
    decoded = encoder.decode(datas[:3])
    expected = encoder.embed_images(**encoder.pixel_inputs([d.image for d in decoded])).numpy()
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    _unit_rows(vectors)
    assert embedder.dim == expected.shape[1]
    # The pipeline's path: decode with decode_options() in a shared pool, then embed() (exact unless NaFlex).
    with DecodePool(2) as pool:
        images = [d.image for d in pool.decode_many(datas[:3], **embedder.decode_options())]
    cosines = np.sum(embedder.embed(images) * vectors, axis=1)
    assert cosines.min() > (0.99 if family == "siglip2" else 1 - 1e-5)


# --- specs and pickling ---------------------------------------------------------------------------------------------


def test_parse_embedder_accepts_the_documented_specs() -> None:
    cases = {
        "sscd:/models/sscd_disc_mixup.torchscript.pt": (SSCDEmbedder, 0.95),
        "sscd:https://dl.fbaipublicfiles.com/sscd-copy-detection/sscd_disc_mixup.torchscript.pt": (SSCDEmbedder, 0.95),
        "sscd288:my-org/sscd": (SSCDEmbedder, 0.95),
        "clip:openai/clip-vit-base-patch32": (ClipEmbedder, 0.95),
        "siglip:google/siglip-base-patch16-224": (ClipEmbedder, 0.95),
        "phash": (PerceptualHashEmbedder, 0.875),
        "dhash": (PerceptualHashEmbedder, 0.875),
    }
    for spec, (cls, threshold) in cases.items():
        embedder = parse_embedder(spec, batch_size=7)
        assert type(embedder) is cls and embedder.name == spec and embedder.default_threshold == threshold
        assert embedder._model is None  # nothing loaded
    assert parse_embedder("sscd288:x").preprocessing == "short288"
    assert parse_embedder("sscd:https://h/a.pt").checkpoint == "https://h/a.pt"
    assert parse_embedder("clip:x", batch_size=7).batch_size == 7


@pytest.mark.parametrize("spec", ["", "sscd", "sscd:", "clip:", "phash:x", "resnet:x", "PHASH", "siglip2"])
def test_parse_embedder_rejects_bad_specs_in_one_line(spec: str) -> None:
    with pytest.raises(ValueError, match=r"expected one of sscd:PATH_OR_URL_OR_HUB_ID") as error:
        parse_embedder(spec)
    assert "\n" not in str(error.value)


def test_embedders_pickle_without_their_model_after_use(tiny_sscd: Path, tiny_dual, photos) -> None:
    images = [photos["chelsea"], photos["coffee"]]
    embedders = [
        SSCDEmbedder(str(tiny_sscd / "model.torchscript.pt"), "short288", device="cpu"),
        ClipEmbedder(str(tiny_dual["clip"]), device="cpu"),
        PerceptualHashEmbedder("dhash"),
    ]
    for embedder in embedders:
        before = embedder.embed(images)
        blob = pickle.dumps(embedder)
        assert len(blob) < 4000, embedder  # no weights inside
        restored = pickle.loads(blob)
        assert restored._model is None and restored.name == embedder.name
        np.testing.assert_allclose(restored.embed(images), before, atol=1e-6)
