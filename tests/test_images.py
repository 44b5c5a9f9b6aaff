"""Tests of mmsieve.images on a corpus of real and deliberately broken image bytes, all made at test time."""

from __future__ import annotations

import doctest
import pickle
import struct
import threading
import warnings
import zlib
from io import BytesIO

import numpy as np
import pytest
import skimage.data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from mmsieve import images, reasons
from mmsieve.images import DecodedImage, DecodePool, decode_image, probe_image


RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height RGB pixels, with an empty IDAT (no pixels allocated)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def halves(size: tuple[int, int], left: tuple, right: tuple, mode: str = "RGB") -> Image.Image:
    im = Image.new(mode, size, left)
    im.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return im


def near(pixel, colour, tol: int = 12) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, colour, strict=True))


@pytest.fixture(scope="module")
def photo_jpeg() -> bytes:
    """A real photo upscaled to 2048x2048, JPEG-encoded (exercises libjpeg's 1/8 draft scale)."""
    return encode(Image.fromarray(skimage.data.astronaut()).resize((2048, 2048), Image.Resampling.BICUBIC), "JPEG")


@pytest.fixture(scope="module")
def small_jpeg() -> bytes:
    return encode(Image.fromarray(skimage.data.chelsea()), "JPEG", quality=90)


def assert_fails(result: DecodedImage, reason: str) -> None:
    assert (result.reason, result.image, result.ok) == (reason, None, False), result.detail
    assert result.detail


# ---------------------------------------------------------------- bad input corpus


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, reasons.IMAGE_MISSING),
        (b"", reasons.IMAGE_EMPTY),
        (np.random.default_rng(0).bytes(4096), reasons.IMAGE_UNIDENTIFIED),
        (b"<html><body>404 Not Found</body></html>", reasons.IMAGE_UNIDENTIFIED),
        ("a string, not bytes", reasons.IMAGE_UNIDENTIFIED),
        (png_header_only(0, 5), reasons.IMAGE_CORRUPT),
    ],
    ids=["none", "empty", "random", "text", "str", "zero-width"],
)
def test_bad_input_gets_its_reason(data, reason):
    assert_fails(decode_image(data, 224), reason)
    assert_fails(probe_image(data), reason)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
@pytest.mark.parametrize("keep", [0.02, 0.5, 0.98])
def test_truncated_files(small_jpeg, fmt, keep):
    data = small_jpeg if fmt == "JPEG" else encode(Image.open(BytesIO(small_jpeg)), fmt)
    cut = data[: int(len(data) * keep)]
    assert_fails(decode_image(cut), reasons.IMAGE_TRUNCATED)
    assert_fails(decode_image(cut, 64), reasons.IMAGE_TRUNCATED)  # the draft path reads the whole stream too
    assert_fails(probe_image(cut), reasons.IMAGE_TRUNCATED)


def test_truncated_jpeg_header_only_probe_passes_without_verify(small_jpeg):
    cut = small_jpeg[: len(small_jpeg) // 2]
    probe = probe_image(cut, verify=False)
    assert probe.ok and (probe.width, probe.height, probe.format) == (451, 300, "JPEG")
    failed = decode_image(cut)
    assert (failed.width, failed.height, failed.format) == (451, 300, "JPEG")  # header facts kept on failure


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_corrupt_complete_files(small_jpeg, fmt):
    data = bytearray(encode(Image.open(BytesIO(small_jpeg)), fmt))
    for pos in np.random.default_rng(1).integers(len(data) // 3, 2 * len(data) // 3, 50):
        data[pos] ^= 0xFF
    assert_fails(decode_image(bytes(data)), reasons.IMAGE_CORRUPT)


def test_declared_bomb_is_refused_before_decoding():
    result = decode_image(png_header_only(30000, 30000), 224)  # over Pillow's own hard limit
    assert_fails(result, reasons.IMAGE_TOO_MANY_PIXELS)
    assert "900000000" in result.detail
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not escape as an exception
        result = decode_image(png_header_only(12000, 12000))
        assert_fails(result, reasons.IMAGE_TOO_MANY_PIXELS)
        assert result.detail == "PNG declares 12000x12000 = 144000000 pixels > 89478485"
        assert (result.width, result.height) == (12000, 12000)
        assert_fails(probe_image(png_header_only(12000, 12000), verify=False), reasons.IMAGE_TOO_MANY_PIXELS)
        # above Pillow's warning threshold but allowed here: passes the size check, then fails on the empty IDAT
        assert decode_image(png_header_only(12000, 12000), max_pixels=200_000_000).reason == reasons.IMAGE_TRUNCATED


def test_max_pixels_is_a_parameter_not_a_global():
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    refused = decode_image(data, max_pixels=9_999)
    assert_fails(refused, reasons.IMAGE_TOO_MANY_PIXELS)
    assert refused.detail == "PNG declares 100x100 = 10000 pixels > 9999"
    assert_fails(probe_image(data, max_pixels=9_999), reasons.IMAGE_TOO_MANY_PIXELS)
    assert decode_image(data, max_pixels=10_000).ok
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before


def test_elongated_image_resized_by_shortest_side_cannot_blow_up():
    data = encode(Image.new("RGB", (1, 5000), RED), "PNG")
    assert_fails(decode_image(data, 224, resize="shortest"), reasons.IMAGE_TOO_MANY_PIXELS)
    assert decode_image(data, 224, resize="longest").image.size == (1, 224)


@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=20))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_mutated_bytes_never_raise(small_jpeg, edits):
    data = bytearray(small_jpeg[:4000] if edits[0][0] % 2 else small_jpeg)
    for pos, value in edits:
        data[pos % len(data)] = value
    result = decode_image(bytes(data), 32)
    assert result.reason in reasons.DESCRIPTIONS if not result.ok else result.image.mode == "RGB"


# ---------------------------------------------------------------- modes end as RGB


def test_cmyk_jpeg():
    result = decode_image(encode(Image.new("RGB", (64, 48), RED).convert("CMYK"), "JPEG", quality=95))
    assert result.ok and result.image.mode == "RGB" and result.format == "JPEG"
    assert near(result.image.getpixel((32, 24)), RED)


def test_16bit_png_keeps_its_gradient():
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (8, 1))
    im = Image.fromarray(ramp)
    assert im.mode.startswith("I;16")
    result = decode_image(encode(im, "PNG"))
    assert result.ok and result.image.mode == "RGB"
    row = np.asarray(result.image)[0, :, 0].astype(int)
    assert np.all(np.diff(row) >= 0) and row[0] == 0 and row[-1] == 255
    assert np.abs(row - np.arange(256)).max() <= 1
    keyed = encode(Image.fromarray(np.array([[0, 1000, 65535]], np.uint16)), "PNG", transparency=1000)
    assert np.asarray(decode_image(keyed, background=GREEN).image).tolist() == [[[0, 0, 0], list(GREEN), [255] * 3]]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (np.array([[0, 32768, 65535]], np.int32), [0, 128, 255]),  # "I" holding 16-bit data
        (np.array([[0, 100, 255]], np.int32), [0, 100, 255]),  # "I" holding 8-bit data
        (np.array([[-10, 0, 10]], np.int32), [0, 128, 255]),  # anything else is stretched
        (np.array([[-5, -5, -5]], np.int32), [0, 0, 0]),  # a constant image stays constant
        (np.array([[0.0, 0.5, 1.0]], np.float32), [0, 128, 255]),  # "F" in 0..1
    ],
)
def test_32bit_and_float_tiff(values, expected):
    result = decode_image(encode(Image.fromarray(values), "TIFF"))
    assert result.ok and np.asarray(result.image)[0, :, 0].tolist() == expected


def test_palette_transparency_is_composited_on_background():
    im = Image.new("P", (20, 10), 0)
    im.putpalette([255, 0, 0, 0, 0, 255])
    im.paste(1, (10, 0, 20, 10))
    result = decode_image(encode(im, "PNG", transparency=0), background=GREEN)
    assert result.image.getpixel((2, 5)) == GREEN  # transparent red became the background
    assert result.image.getpixel((15, 5)) == BLUE


def test_colour_key_transparency_is_composited():
    data = encode(halves((20, 10), RED, BLUE), "PNG", transparency=RED)  # a tRNS chunk on an RGB PNG
    result = decode_image(data, background=GREEN)
    assert result.image.getpixel((2, 5)) == GREEN and result.image.getpixel((15, 5)) == BLUE
    grey = encode(Image.new("L", (4, 4), 7), "PNG", transparency=7)
    assert decode_image(grey, background=GREEN).image.getpixel((0, 0)) == GREEN


def test_la_and_rgba_alpha_is_composited():
    la = halves((20, 10), (50, 0), (50, 255), mode="LA")
    result = decode_image(encode(la, "PNG"), background=GREEN)
    assert result.image.getpixel((2, 5)) == GREEN and result.image.getpixel((15, 5)) == (50, 50, 50)
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 128))
    assert near(decode_image(encode(rgba, "PNG")).image.getpixel((4, 4)), (255, 127, 127), tol=2)


def test_premultiplied_la_mode_converts():  # no file format stores "La"; decoders of later steps may produce it
    premultiplied = Image.new("LA", (4, 4), (200, 128)).convert("La")
    assert near(images._to_rgb(premultiplied, RED).getpixel((0, 0)), (228, 100, 100), tol=2)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_first_frame(fmt):
    frames = [Image.new("RGB", (16, 16), colour) for colour in (RED, GREEN, BLUE)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(BytesIO(data)).n_frames == 3
    result = decode_image(data, 8)
    assert result.ok and result.image.size == (8, 8) and near(result.image.getpixel((4, 4)), RED, tol=20)


def test_exif_orientation_is_applied():
    stored = halves((800, 400), RED, BLUE)  # red left, blue right as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: stored left becomes the top
    data = encode(stored, "JPEG", exif=exif, quality=95)
    for kwargs in (
        {},
        {"size": (100, 200)},
        {"size": (100, 200), "draft": False},
        {"size": 100, "resize": "shortest"},
    ):
        result = decode_image(data, **kwargs)
        expected = (400, 800) if "size" not in kwargs else (100, 200)
        assert (result.width, result.height) == (400, 800) and result.image.size == expected, kwargs
        w, h = result.image.size
        assert near(result.image.getpixel((w // 2, h // 8)), RED) and near(
            result.image.getpixel((w // 2, 7 * h // 8)), BLUE
        )
    probe = probe_image(data)
    assert (probe.width, probe.height, probe.image) == (400, 800, None)


@pytest.mark.parametrize("size", [(1, 1), (1, 5000), (5000, 1)])
def test_tiny_and_thin_images(size):
    data = encode(Image.new("RGB", size, BLUE), "PNG")
    full = decode_image(data)
    assert full.ok and full.image.size == size and full.image.getpixel((0, 0)) == BLUE
    assert decode_image(data, 224).image.size == (224, 224)


@pytest.mark.parametrize(("fmt", "kwargs"), [("WEBP", {"quality": 95}), ("TIFF", {}), ("BMP", {})])
def test_other_formats(fmt, kwargs):
    result = decode_image(encode(halves((64, 32), RED, BLUE), fmt, **kwargs), (32, 16))
    assert result.ok and result.format == fmt and result.image.size == (32, 16)
    assert near(result.image.getpixel((4, 8)), RED) and near(result.image.getpixel((28, 8)), BLUE)


# ---------------------------------------------------------------- sizes and the draft path


@pytest.mark.parametrize(
    ("size", "resize", "expected"),
    [
        (None, "exact", (640, 480)),
        (224, "exact", (224, 224)),
        ((300, 200), "exact", (300, 200)),
        (224, "shortest", (299, 224)),
        (224, "longest", (224, 168)),
        (1000, "longest", (1000, 750)),  # upscales too
    ],
)
def test_resize_modes(size, resize, expected):
    for fmt in ("JPEG", "PNG"):
        result = decode_image(encode(Image.new("RGB", (640, 480), RED), fmt), size, resize=resize)
        assert result.ok and result.image.mode == "RGB" and result.image.size == expected
        assert (result.width, result.height) == (640, 480)


@pytest.mark.parametrize(
    ("size", "resize"), [((1, 2), "shortest"), (0, "exact"), ((1, 2, 3), "exact"), (10, "crop"), (2.5, "exact")]
)
def test_invalid_requests_raise(size, resize):
    with pytest.raises(ValueError):
        decode_image(b"", size, resize=resize)


def test_draft_path_is_close_to_full_decode(photo_jpeg):
    baseline = np.asarray(Image.open(BytesIO(photo_jpeg)).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC))
    for size, resize in ((224, "exact"), (300, "shortest"), ((384, 256), "exact")):
        fast = decode_image(photo_jpeg, size, resize=resize)
        slow = decode_image(photo_jpeg, size, resize=resize, draft=False)
        assert fast.image.size == slow.image.size and (fast.width, fast.height) == (2048, 2048)
        assert np.abs(np.asarray(fast.image, np.int16) - np.asarray(slow.image, np.int16)).mean() < 6
    fast = np.asarray(decode_image(photo_jpeg, 224).image, np.int16)
    assert np.abs(fast - baseline).mean() < 6


# ---------------------------------------------------------------- DecodePool


def test_pool_preserves_order_and_pickles(small_jpeg):
    datas = [encode(Image.new("RGB", (10 + i, 20), RED), "PNG") for i in range(12)] + [None, b"", small_jpeg[:500]]
    with DecodePool(3) as pool:
        decoded = pool.decode_many(datas, size=8, resize="longest")
        probed = pool.probe_many(datas)
        assert [d.width for d in decoded[:12]] == list(range(10, 22)) == [p.width for p in probed[:12]]
        assert [d.reason for d in decoded[12:]] == [
            reasons.IMAGE_MISSING,
            reasons.IMAGE_EMPTY,
            reasons.IMAGE_TRUNCATED,
        ]
        clone = pickle.loads(pickle.dumps(pool))
    assert clone.workers == 3 and clone.decode_many([datas[0]])[0].ok
    assert pool.decode_many([datas[0]])[0].ok  # usable again after close
    pool.close()
    assert DecodePool().workers >= 1


def test_prefetch_is_ordered_and_lazy():
    pulled = []

    def batches():
        for i in range(10):
            pulled.append(i)
            yield i

    pool = DecodePool(2)
    seen_by_fn = set()
    lock = threading.Lock()

    def fn(batch):
        with lock:
            seen_by_fn.add(batch)
        return batch * batch

    results = pool.prefetch(batches(), fn, depth=2)
    assert pulled == []  # nothing pulled before the first item is asked for
    assert next(results) == (0, 0)
    assert len(pulled) <= 3
    assert list(results) == [(i, i * i) for i in range(1, 10)]
    assert seen_by_fn == set(range(10))
    assert list(pool.prefetch(iter(range(4)), str, depth=0)) == [(i, str(i)) for i in range(4)]


def test_prefetch_propagates_exceptions_and_nests_decode_many(small_jpeg):
    pool = DecodePool(2)

    def fn(batch):
        if batch == 2:
            raise RuntimeError("boom")
        return pool.decode_many([small_jpeg] * 3, size=16)  # fn may use the pool itself without deadlock

    results = pool.prefetch(range(5), fn, depth=3)
    assert [len(decoded) for _, decoded in (next(results), next(results))] == [3, 3]
    with pytest.raises(RuntimeError, match="boom"):
        next(results)
    with pytest.raises(ValueError):
        pool.prefetch([], fn, depth=-1)
    pool.close()


def test_docstring_examples():
    assert doctest.testmod(images).failed == 0
