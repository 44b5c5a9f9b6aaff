"""Real demo and test data: photos from scikit-image, easy-vqa shapes, and deliberately broken images.

Everything is generated from installed packages at run time (no image bytes in the repository).
The broken images are real files with real defects, the kind a web crawl delivers.

Example:
    >>> photos = demo_photos()  # doctest: +SKIP
    >>> sorted(broken_images())[:3]  # doctest: +SKIP
    ['animated_gif', 'cmyk_jpeg', 'exif_rotated_jpeg']
"""

from __future__ import annotations

import io
import json
import random
import struct
import zlib
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def _encode(image: Image.Image, fmt: str = "JPEG", **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def demo_captions() -> dict[str, dict[str, str]]:
    """The hand-written captions: photo name -> {"good", "brief", "wrong"}."""
    text = resources.files("mmsieve.demo").joinpath("captions.json").read_text(encoding="utf-8")
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def demo_photos() -> dict[str, bytes]:
    """The captioned scikit-image photos as JPEG bytes (quality 90), name -> bytes."""
    import skimage.data

    photos = {}
    for name in demo_captions():
        pixels = getattr(skimage.data, name)()
        photos[name] = _encode(Image.fromarray(pixels).convert("RGB"), "JPEG", quality=90)
    return photos


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares `width` x `height` pixels (a decompression bomb, unallocated)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def broken_images(seed: int = 0) -> dict[str, bytes | None]:
    """Image cells a real crawl delivers: corrupt ones and odd-but-valid ones, name -> bytes.

    Corrupt: truncated_jpeg, zero_bytes, random_bytes, text_bytes, png_bomb_30000. Valid but odd:
    cmyk_jpeg, png_16bit, palette_png_transparent, la_png, animated_gif, exif_rotated_jpeg, webp,
    tiff. Degenerate sizes: one_by_one, one_by_5000. Missing: none.
    """
    rng = random.Random(seed)
    photo = Image.fromarray(np.asarray(Image.linear_gradient("L").resize((320, 240)))).convert("RGB")
    jpeg = _encode(photo, "JPEG", quality=90)
    palette = Image.new("P", (64, 64), 1)
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.paste(0, (0, 0, 32, 64))
    frames = [Image.new("RGB", (48, 48), c) for c in ((255, 0, 0), (0, 0, 255))]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    gradient16 = np.tile(np.linspace(0, 65535, 96, dtype=np.uint16), (64, 1))
    return {
        "truncated_jpeg": jpeg[: len(jpeg) // 2],
        "zero_bytes": b"",
        "random_bytes": bytes(rng.getrandbits(8) for _ in range(2048)),
        "text_bytes": b"<html><body>404 Not Found</body></html>",
        "png_bomb_30000": _png_declaring(30_000, 30_000),
        "cmyk_jpeg": _encode(photo.convert("CMYK"), "JPEG", quality=90),
        "png_16bit": _encode(Image.fromarray(gradient16), "PNG"),
        "palette_png_transparent": _encode(palette, "PNG", transparency=0),
        "la_png": _encode(Image.new("LA", (64, 64), (128, 200)), "PNG"),
        "animated_gif": gif.getvalue(),
        "exif_rotated_jpeg": _encode(photo, "JPEG", quality=90, exif=exif.tobytes()),
        "webp": _encode(photo, "WEBP", quality=80),
        "tiff": _encode(photo, "TIFF"),
        "one_by_one": _encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"),
        "one_by_5000": _encode(Image.new("RGB", (1, 5000), (9, 9, 9)), "PNG"),
        "none": None,
    }


# The reason the hygiene filter (default thresholds) gives each broken image; None = kept.
BROKEN_IMAGE_REASONS: dict[str, str | None] = {
    "truncated_jpeg": "image_truncated",
    "zero_bytes": "image_empty",
    "random_bytes": "image_unidentified",
    "text_bytes": "image_unidentified",
    "png_bomb_30000": "image_too_many_pixels",
    "cmyk_jpeg": None,
    "png_16bit": None,
    "palette_png_transparent": None,
    "la_png": None,
    "animated_gif": None,
    "exif_rotated_jpeg": None,
    "webp": None,
    "tiff": None,
    "one_by_one": "image_too_small",
    "one_by_5000": "image_too_small",
    "none": "image_missing",
}


def image_cell(data: bytes | None, name: str) -> dict[str, Any] | None:
    """An HF `Image` cell of encoded bytes (None stays None)."""
    return None if data is None else {"bytes": data, "path": f"{name}"}


def save_shards(rows: dict[str, list[Any]], features: Any, folder: Path, shards: int = 2) -> Path:
    """Write `rows` as `shards` parquet files under `folder` (typed by `features`); returns the folder."""
    from datasets import Dataset

    folder.mkdir(parents=True, exist_ok=True)
    dataset = Dataset.from_dict(rows, features=features)
    for k in range(shards):
        dataset.shard(shards, k, contiguous=True).to_parquet(str(folder / f"part-{k:05d}.parquet"))
    return folder


def build_captions(folder: Path) -> Path:
    """Caption pairs (COCO style): every photo with its good caption, then broken rows. Returns the folder."""
    from datasets import Features, Image, Value

    photos, captions = demo_photos(), demo_captions()
    rows: dict[str, list[Any]] = {"image": [], "caption": [], "source": []}

    def add(image: dict[str, Any] | None, caption: str | None, source: str) -> None:
        rows["image"].append(image)
        rows["caption"].append(caption)
        rows["source"].append(source)

    for name, data in photos.items():
        add(image_cell(data, f"{name}.jpg"), captions[name]["good"], "skimage")
    for name, data in broken_images().items():
        add(image_cell(data, f"{name}.bin"), f"A planted test image: {name.replace('_', ' ')}.", f"broken/{name}")
    add(image_cell(_encode(_banner(), "JPEG"), "banner.jpg"), "A wide blue web banner.", "broken/aspect_ratio")
    add(image_cell(photos["chelsea"], "chelsea.jpg"), "", "broken/empty_caption")
    add(image_cell(photos["coffee"], "coffee.jpg"), "   ", "broken/blank_caption")
    add(image_cell(photos["rocket"], "rocket.jpg"), "spam " * 200_000, "broken/1mb_caption")
    features = Features({"image": Image(), "caption": Value("string"), "source": Value("string")})
    return save_shards(rows, features, folder)


def _banner() -> Image.Image:
    return Image.fromarray(np.full((300, 2000, 3), (40, 90, 160), dtype=np.uint8))


def build_interleaved(folder: Path) -> Path:
    """Interleaved documents (OBELICS style `images`/`texts` with None gaps), with broken documents."""
    from datasets import Features, Image, List, Value

    photos, captions = demo_photos(), demo_captions()
    names = list(photos)
    rows: dict[str, list[Any]] = {"images": [], "texts": [], "url": []}

    def add(images: list[Any], texts: list[Any], url: str) -> None:
        rows["images"].append(images)
        rows["texts"].append(texts)
        rows["url"].append(url)

    for start in range(0, len(names), 3):
        images, texts = [], []
        for name in names[start : start + 3]:
            images += [None, image_cell(photos[name], f"{name}.jpg")]
            texts += [f"Section on {name.replace('_', ' ')}. {captions[name]['good']}", None]
        add(images, texts, f"https://example.org/article/{start // 3}")
    add([None], ["A page with text only and no pictures at all."], "https://example.org/text-only")
    many = [image_cell(photos[names[k % len(names)]], f"{k}.jpg") for k in range(40)]
    add([None, *many], ["A gallery page with forty photos.", *[None] * 40], "https://example.org/gallery")
    add(
        [image_cell(photos["moon"], "moon.jpg"), None],
        ["The Moon.", "A missing caption slot.", "Extra"],
        "https://example.org/bad-lists",
    )
    add(
        [None, image_cell(broken_images()["truncated_jpeg"], "t.jpg")],
        ["An article whose photo was cut off.", None],
        "https://example.org/truncated",
    )
    features = Features({"images": List(Image()), "texts": List(Value("string")), "url": Value("string")})
    return save_shards(rows, features, folder)


def build_conversations(folder: Path, n_images: int = 40) -> Path:
    """Visual conversations (FineVision schema) from easy-vqa: each image with its questions as turns."""
    from datasets import Features, Image, List, Value
    from easy_vqa import get_train_image_paths, get_train_questions

    questions, answers, image_ids = get_train_questions()
    paths = get_train_image_paths()
    turns: dict[int, list[dict[str, str]]] = {}
    for question, answer, image_id in zip(questions, answers, image_ids):
        if image_id < n_images:
            turns.setdefault(image_id, []).append({"user": question, "assistant": answer})
    rows: dict[str, list[Any]] = {"images": [], "texts": [], "source": []}
    for image_id in sorted(turns):
        data = Path(paths[image_id]).read_bytes()
        rows["images"].append([image_cell(data, f"{image_id}.png")])
        rows["texts"].append(turns[image_id])
        rows["source"].append("easy_vqa")
    rows["images"].append([image_cell(broken_images()["random_bytes"], "noise.png")])
    rows["texts"].append([{"user": "what shape is in the image?", "assistant": "circle"}])
    rows["source"].append("broken/random_bytes")
    rows["images"].append([image_cell(Path(paths[0]).read_bytes(), "0.png")])
    rows["texts"].append([])
    rows["source"].append("broken/no_turns")
    rows["images"].append([image_cell(Path(paths[1]).read_bytes(), "1.png")])
    rows["texts"].append([{"user": " ", "assistant": ""}])
    rows["source"].append("broken/empty_turn")
    features = Features(
        {
            "images": List(Image()),
            "texts": List({"user": Value("string"), "assistant": Value("string")}),
            "source": Value("string"),
        }
    )
    return save_shards(rows, features, folder)
